"""llama.cpp's GBNF as an llguidance Lark grammar of the same language.

llguidance parses the GBNF (its gbnf_to_lark module); what is decided here is
which rules become lexemes. llguidance lexes greedily: a lexeme that could
still grow never ends early to let the next one start. Its own conversion
makes every rule built only of terminals a lexeme, which changes the
language when such a rule can grow by a character that could also start what
follows it: llama.cpp's arithmetic.gbnf ends a term with `ws ::= [ \\t\\n]*`
and then needs "\\n"; a greedy ws eats the newline and no line ever ends.

So a terminal-only rule becomes a lexeme only when the characters that can
extend one of its complete matches (`_ext`) and the first characters of
anything that may follow it anywhere in the grammar (FOLLOW) are disjoint;
then greedy and non-greedy lexing agree. Every other rule stays a parser
rule, where only literals and single character classes are lexemes (exact,
but the parser steps per character: masks cost ~30x more). json.gbnf keeps
its string, number and ws lexemes; arithmetic.gbnf keeps none. Character
sets are over-approximated (unknown escapes count as "any character"), so
doubt always falls on the exact side."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lamina.errors import LaminaError


class GBNFError(LaminaError, ValueError):
    """An invalid GBNF grammar."""


# ---------------------------------------------------------- character sets
@dataclass(frozen=True)
class Chars:
    """A set of characters: `chars`, or (negated) every character but them."""

    chars: frozenset[str] = frozenset()
    negated: bool = False

    def __or__(self, other: Chars) -> Chars:
        if not self.negated and not other.negated:
            return Chars(self.chars | other.chars)
        if self.negated and other.negated:
            return Chars(self.chars & other.chars, True)
        pos, neg = (self, other) if other.negated else (other, self)
        return Chars(neg.chars - pos.chars, True)

    def meets(self, other: Chars) -> bool:
        if self.negated and other.negated:
            return True
        if not self.negated and not other.negated:
            return bool(self.chars & other.chars)
        pos, neg = (self, other) if other.negated else (other, self)
        return bool(pos.chars - neg.chars)


NONE = Chars()
ANY = Chars(negated=True)
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t"}
_MAX_RANGE = 4096  # wider ranges count as any character


def _decode(text: str) -> list[str] | None:
    """The characters of a literal or class body as llguidance prints them,
    or None where an escape is not understood (\\u, \\U: treated as unknown)."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = text[i + 1 : i + 2]
        if e in _SIMPLE:
            out.append(_SIMPLE[e])
            i += 2
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            i += 4
        elif e and e not in "uU" and not e.isalnum():
            out.append(e)
            i += 2
        else:
            return None
    return out


def _class_chars(rx: str) -> Chars:
    """A character class "[...]" / "[^...]" or "." as a Chars."""
    if rx == "." or not (rx.startswith("[") and rx.endswith("]")):
        return ANY
    body = rx[1:-1]
    negated = body.startswith("^")
    chars = _decode(body[1:] if negated else body)
    if chars is None:
        return ANY
    found: set[str] = set()
    i = 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            lo, hi = ord(chars[i]), ord(chars[i + 2])
            if hi - lo > _MAX_RANGE:
                return ANY
            found.update(chr(c) for c in range(lo, hi + 1))
            i += 3
        else:
            found.add(chars[i])
            i += 1
    return Chars(frozenset(found), negated)


# --------------------------------------------------------------- analysis
class _Analysis:
    """nullable / first / ext / all characters of nodes, FOLLOW of rules."""

    def __init__(self, g2l: Any, rules: dict[str, Any]) -> None:
        self.g2l, self.rules = g2l, rules
        self.nullable_rule = {n: False for n in rules}
        self.first_rule = {n: NONE for n in rules}
        changed = True
        while changed:  # the usual fixpoint: rules refer to one another
            changed = False
            for n, r in rules.items():
                nul, fst = self.nullable(r.alternatives), self.first(r.alternatives)
                if nul != self.nullable_rule[n] or fst != self.first_rule[n]:
                    self.nullable_rule[n], self.first_rule[n] = nul, fst
                    changed = True
        self.follow = {n: NONE for n in rules}
        changed = True
        while changed:
            before = dict(self.follow)
            for n, r in rules.items():
                self._walk(r.alternatives, self.follow[n])
            changed = before != self.follow

    def _kind(self, node: Any) -> str:
        return type(node).__name__

    def nullable(self, node: Any) -> bool:
        k = self._kind(node)
        if k == "LiteralNode":
            return node.value == ""
        if k == "RegexNode":
            return False
        if k == "RuleRefNode":
            return self.nullable_rule[node.name]
        if k == "RepetitionNode":
            return node.min_times == 0 or self.nullable(node.node)
        if k == "SequenceNode":
            return all(self.nullable(c) for c in node.nodes)
        return any(self.nullable(c) for c in node.alternatives)  # AlternativeNode

    def first(self, node: Any) -> Chars:
        k = self._kind(node)
        if k == "LiteralNode":
            chars = _decode(node.value)
            return ANY if chars is None else Chars(frozenset(chars[:1]))
        if k == "RegexNode":
            return _class_chars(node.rx)
        if k == "RuleRefNode":
            return self.first_rule[node.name]
        if k == "RepetitionNode":
            return self.first(node.node) if node.max_times != 0 else NONE
        if k == "SequenceNode":
            out = NONE
            for c in node.nodes:
                out = out | self.first(c)
                if not self.nullable(c):
                    break
            return out
        out = NONE
        for c in node.alternatives:
            out = out | self.first(c)
        return out

    def chars(self, node: Any, seen: frozenset[str] = frozenset()) -> Chars:
        """Every character a match of node may contain."""
        k = self._kind(node)
        if k == "LiteralNode":
            chars = _decode(node.value)
            return ANY if chars is None else Chars(frozenset(chars))
        if k == "RegexNode":
            return _class_chars(node.rx)
        if k == "RuleRefNode":
            if node.name in seen:
                return ANY
            return self.chars(self.rules[node.name].alternatives, seen | {node.name})
        out = NONE
        for c in node.children():
            out = out | self.chars(c, seen)
        return out

    def ext(self, node: Any, seen: frozenset[str] = frozenset()) -> Chars:
        """Characters that may continue a complete match of node within node
        (an over-approximation)."""
        k = self._kind(node)
        if k in ("LiteralNode", "RegexNode"):
            return NONE
        if k == "RuleRefNode":
            if node.name in seen:
                return ANY
            return self.ext(self.rules[node.name].alternatives, seen | {node.name})
        if k == "RepetitionNode":
            more = node.max_times is None or node.max_times > node.min_times
            return self.ext(node.node, seen) | (self.first(node.node) if more else NONE)
        if k == "SequenceNode":
            out = NONE
            for c in reversed(node.nodes):
                out = out | self.ext(c, seen)
                if not self.nullable(c):
                    break
                out = out | self.first(c)
            return out
        alts = node.alternatives
        out = NONE
        for c in alts:
            out = out | self.ext(c, seen)
        if all(self._kind(a) == "LiteralNode" for a in alts):
            decoded = [_decode(a.value) for a in alts]
            values = [v for v in decoded if v is not None]
            if len(values) < len(decoded):
                return ANY
            for a in values:  # one alternative a proper prefix of another: the next character
                for b in values:
                    if len(b) > len(a) and b[: len(a)] == a:
                        out = out | Chars(frozenset(b[len(a)]))
            return out
        # otherwise a complete match of a continues as a longer match of b only if
        # a matched nothing (next: b's first character) or both start alike
        # (next: any of b's characters)
        for a in alts:
            for b in alts:
                if a is b:
                    continue
                if self.nullable(a):
                    out = out | self.first(b)
                if self.first(a).meets(self.first(b)):
                    out = out | self.chars(b, seen)
        return out

    def _walk(self, node: Any, after: Chars) -> None:
        """Add `after` (what may follow node) to the FOLLOW of every rule reference inside."""
        k = self._kind(node)
        if k == "RuleRefNode":
            self.follow[node.name] = self.follow[node.name] | after
        elif k == "RepetitionNode":
            again = node.max_times is None or node.max_times > 1
            self._walk(node.node, after | (self.first(node.node) if again else NONE))
        elif k == "SequenceNode":
            for c in reversed(node.nodes):
                self._walk(c, after)
                after = self.first(c) | (after if self.nullable(c) else NONE)
        elif k == "AlternativeNode":
            for c in node.alternatives:
                self._walk(c, after)


def _nodes(node: Any) -> Iterator[Any]:
    for child in node.children():
        yield child
        yield from _nodes(child)


def _refs(rule: Any) -> set[str]:
    return {n.name for n in _nodes(rule) if type(n).__name__ == "RuleRefNode"}


def lexeme_rules(g2l: Any, rules: dict[str, Any]) -> set[str]:
    """The rules that may become greedy lexemes without changing the language."""
    refs = {n: _refs(r) for n, r in rules.items()}
    terminal = {n for n in rules if n != "root" and not refs[n]}
    changed = True
    while changed:  # llguidance's own criterion: made only of terminals
        grown = {n for n in rules if n != "root" and refs[n] <= terminal}
        changed, terminal = grown != terminal, grown

    def reaches(start: str) -> set[str]:
        out, todo = set(), list(refs[start])
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo += refs[n]
        return out

    terminal = {n for n in terminal if n not in reaches(n)}  # a lexeme cannot refer to itself
    a = _Analysis(g2l, rules)
    safe = {n for n in terminal if not a.ext(rules[n].alternatives).meets(a.follow[n])}
    changed = True
    while changed:  # a lexeme's references are lexemes too
        kept = {n for n in safe if refs[n] <= safe}
        changed, safe = kept != safe, kept
    return safe


# ------------------------------------------------------------- conversion
def gbnf_to_lark(text: str, lexemes: bool = True) -> str:
    """llama.cpp's GBNF as an llguidance Lark grammar of the same language.
    lexemes=False: no rule becomes a lexeme (the slow, plainly exact reference)."""
    from llguidance import gbnf_to_lark as g2l

    try:
        rules = g2l.GrammarParser().parse(text)
    except Exception as e:  # its parse errors carry the line and the text around the error
        raise GBNFError(f"invalid GBNF grammar: {e}") from None
    if "root" not in rules:
        raise GBNFError("invalid GBNF grammar: no 'root' rule (the rule generation starts from)")
    for i, rule in enumerate(rules.values()):
        rule.order = i
        rule.alternatives = rule.alternatives.simplify()
    for rule in rules.values():
        for node in _nodes(rule):
            if isinstance(node, g2l.RuleRefNode):
                if node.name not in rules:
                    raise GBNFError(f"invalid GBNF grammar: rule {node.name!r} is used but never defined")
                node.target = rules[node.name]
    lexeme_names = lexeme_rules(g2l, rules) if lexemes else set()
    names: dict[str, str] = {}
    for name in rules:
        new = "start" if name == "root" else "r_" + re.sub(r"[^a-z0-9_]", "_", name.lower())
        new = new.upper() if name in lexeme_names else new
        if new in names.values():
            raise GBNFError(f"invalid GBNF grammar: rule names {name!r} and another one collide as {new!r}")
        names[name] = new
    for name, rule in rules.items():
        rule.name = names[name]
    body = "\n".join(str(r) for r in sorted(rules.values(), key=lambda r: r.order))
    return "%llguidance {}\n\n" + body + "\n"
