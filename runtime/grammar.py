"""Constrained output: a grammar (GBNF), a JSON schema or a regex, turned
into a per-step mask of the tokens that may come next.

    g = Grammar.from_json_schema({"type": "object", ...})   # checked here: GrammarError names the problem
    m = g.matcher(tokenizer)                                 # one per sequence (it holds the parse state)
    logits = m.mask(logits)                                  # disallowed tokens -> -inf, before any sampling
    m.accept(token)                                          # advance; m.done: nothing more may follow

The engine is llguidance (Microsoft's, also behind llama.cpp's
LLAMA_LLGUIDANCE): a Rust matcher with no Python dependencies, ~20 us of mask
a token at 49k and 152k vocabularies (tools/grammar_engines.py has the
comparison with xgrammar). Its tokenizer view is built once per vocabulary
from lamina's token pieces; control tokens are marked with a 0xff byte, the
way llguidance's llama.cpp binding does, so grammar text never produces them,
and every end-of-generation id is an EOS the grammar allows once it accepts.

GBNF is llama.cpp's grammar language; lamina.gbnf converts it to llguidance's
Lark so that it means what llama.cpp makes of it (llguidance's own
conversion does not always: see there)."""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import LaminaError
from lamina.gbnf import GBNFError, gbnf_to_lark
from lamina.tokenizer import Tokenizer


class GrammarError(LaminaError, ValueError):
    """An invalid grammar, JSON schema or regex; the message says which and what is wrong."""


def _llg() -> Any:
    try:
        import llguidance
    except ImportError as e:  # a dependency of lamina: only a broken install lacks it
        raise GrammarError(f"constrained output needs the llguidance package ({e}); pip install llguidance") from None
    return llguidance


# --------------------------------------------------------------- grammars
# JSON between tokens: llama.cpp's json-schema-to-grammar `space` rule. Bounded,
# so a small model cannot stall in whitespace forever (the unbounded default can).
JSON_OPTIONS = {"whitespace_pattern": r"( |\n{1,2}[ \t]{0,20})?"}


@dataclass(frozen=True)
class Grammar:
    """A checked constraint, independent of any model: kind ("gbnf",
    "json_schema", "regex", "lark"), the text the user gave, and the
    llguidance grammar it compiles to."""

    kind: str
    source: str
    compiled: str

    @classmethod
    def _make(cls, kind: str, source: str, compiled: str) -> Grammar:
        error = _llg().LLMatcher.validate_grammar(compiled)
        if error:
            raise GrammarError(f"invalid {_LABEL[kind]}: {error}")
        return cls(kind, source, compiled)

    @classmethod
    def from_gbnf(cls, text: str) -> Grammar:
        if not isinstance(text, str) or not text.strip():
            raise GrammarError(f"invalid GBNF grammar: expected the grammar's text, got {text!r}")
        try:
            lark = gbnf_to_lark(text)
        except GBNFError as e:
            raise GrammarError(str(e)) from None
        return cls._make("gbnf", text, _llg().LLMatcher.grammar_from_lark(lark))

    @classmethod
    def from_lark(cls, text: str) -> Grammar:
        return cls._make("lark", text, _llg().LLMatcher.grammar_from_lark(text))

    @classmethod
    def from_json_schema(cls, schema: Mapping[str, Any] | str | bool) -> Grammar:
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GrammarError(f"invalid JSON schema: not valid JSON ({e})") from None
        if isinstance(schema, bool):  # JSON Schema's true (anything) / false (nothing)
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, Mapping):
            raise GrammarError(f"invalid JSON schema: expected an object, got {type(schema).__name__}")
        text = json.dumps(schema)
        try:
            compiled = _llg().LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)
        except ValueError as e:
            raise GrammarError(f"invalid JSON schema: {e}") from None
        return cls._make("json_schema", text, compiled)

    @classmethod
    def json_object(cls) -> Grammar:
        """Any JSON object (OpenAI's response_format {"type": "json_object"})."""
        return cls.from_json_schema({"type": "object"})

    @classmethod
    def from_regex(cls, pattern: str) -> Grammar:
        return cls._make("regex", pattern, _llg().LLMatcher.grammar_from_regex(pattern))

    def matcher(self, tokenizer: Tokenizer) -> Matcher:
        return Matcher(self, vocabulary(tokenizer))


_LABEL = {"gbnf": "GBNF grammar", "json_schema": "JSON schema", "regex": "regex", "lark": "Lark grammar"}


# -------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocabulary:
    """llguidance's view of one tokenizer, built once (0.2 s at 49k tokens)."""

    ll: Any  # llguidance.LLTokenizer
    n_vocab: int
    eog: frozenset[int]


_vocab_lock = threading.Lock()
_vocabularies: weakref.WeakKeyDictionary[Tokenizer, Vocabulary] = weakref.WeakKeyDictionary()


def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    """The tokenizer's Vocabulary, built on first use and kept as long as the tokenizer lives."""
    with _vocab_lock:
        vocab = _vocabularies.get(tokenizer)
        if vocab is None:
            vocab = _vocabularies[tokenizer] = _build_vocabulary(tokenizer)
        return vocab


def _build_vocabulary(tok: Tokenizer) -> Vocabulary:
    llg = _llg()
    eog = sorted(tok.eot_ids)
    if not eog:
        raise GrammarError("constrained output needs an end-of-generation token; this vocabulary has none")
    special = [i for i in range(tok.n_vocab) if tok.is_special(i)]
    pieces = [tok.token_to_piece(i, special=True) for i in range(tok.n_vocab)]
    for i in special:  # llguidance's mark of a special token: never produced by grammar text
        pieces[i] = b"\xff" + pieces[i]

    class View:  # what llguidance.TokenizerWrapper reads
        eos_token_id = eog[0]
        bos_token_id = tok.bos_id
        tokens = pieces
        special_token_ids = special

        def __call__(self, text: bytes) -> list[int]:
            return tok.encode(text, add_bos=False)

    ll = llg.LLTokenizer(llg.TokenizerWrapper(View()), eos_token=eog)
    return Vocabulary(ll, tok.n_vocab, frozenset(eog))


# ----------------------------------------------------------------- matcher
class Matcher:
    """The parse state of one sequence: the mask of what may come next,
    advanced by each sampled token. Not shared between sequences."""

    def __init__(self, grammar: Grammar, vocab: Vocabulary) -> None:
        self.grammar, self.vocab = grammar, vocab
        self._m = _llg().LLMatcher(vocab.ll, grammar.compiled, log_level=0)
        self._check()
        self._bits = np.zeros((vocab.n_vocab + 31) // 32, dtype=np.int32)

    def _check(self) -> None:
        if self._m.is_error():
            raise GrammarError(f"{_LABEL[self.grammar.kind]}: {self._m.get_error()}")

    def allowed(self) -> np.ndarray:
        """bool [n_vocab]: the tokens the grammar allows next (EOS only once it accepts)."""
        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._check()
        return np.unpackbits(self._bits.view(np.uint8), count=self.vocab.n_vocab, bitorder="little").view(np.bool_)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """logits f32 [n_vocab] with every disallowed token at -inf (a new array)."""
        ids = np.flatnonzero(self.allowed())
        if not ids.size:  # a matcher gone wrong must not hand the sampler all -inf
            raise GrammarError(f"{_LABEL[self.grammar.kind]}: no token can continue the output")
        # (a gather and a scatter of the allowed ids: 3-5x faster than np.where over the vocabulary)
        logits = np.asarray(logits, dtype=np.float32)
        out = np.full(logits.shape, -np.inf, dtype=np.float32)  # rows past the vocabulary (padding) stay out
        out[ids] = logits[ids]
        return out

    def accept(self, token: int) -> None:
        """Advance by a sampled token (one the mask allowed)."""
        if not self._m.consume_token(int(token)):
            raise GrammarError(f"{_LABEL[self.grammar.kind]}: token {token} does not continue the output")

    @property
    def done(self) -> bool:
        """The output is complete and nothing may follow it (stop here)."""
        return bool(self._m.is_stopped())

    @property
    def accepting(self) -> bool:
        """The output so far is complete (it may still go on)."""
        return bool(self._m.is_accepting())

    def matches(self, tokens: list[int], complete: bool = True) -> bool:
        """Whether these tokens, from the start, form a complete output (or,
        complete=False, the start of one): a check independent of sampling,
        from a fresh start state (this matcher's own state is untouched)."""
        m = _llg().LLMatcher(self.vocab.ll, self.grammar.compiled, log_level=0)
        return bool(m.consume_tokens([int(t) for t in tokens]) and (m.is_accepting() or not complete))


def load_grammar_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GrammarError(f"{path}: cannot read the grammar file ({e})") from None


# ------------------------------------------------------- the API's shapes
class LlamaGrammar:
    """llama-cpp-python's LlamaGrammar: a checked grammar to pass as
    `grammar=` to Llama's completions. `_grammar` is the text given (GBNF, or
    the JSON schema)."""

    def __init__(self, *, _grammar: str, _root: str = "root", _constraint: Grammar | None = None) -> None:
        if _root != "root":
            raise GrammarError(f"LlamaGrammar(_root={_root!r}): generation starts at the rule 'root'")
        self._grammar = _grammar
        self._root = _root
        self.constraint = _constraint if _constraint is not None else Grammar.from_gbnf(_grammar)

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> LlamaGrammar:
        """GBNF text (llama.cpp's grammar language)."""
        return cls(_grammar=grammar)

    @classmethod
    def from_file(cls, file: str | Path, verbose: bool = True) -> LlamaGrammar:
        """A GBNF file."""
        text = load_grammar_file(file)
        try:
            return cls(_grammar=text)
        except GrammarError as e:
            raise GrammarError(f"{file}: {e}") from None

    @classmethod
    def from_json_schema(cls, json_schema: str | Mapping[str, Any], verbose: bool = True) -> LlamaGrammar:
        """A JSON schema (text or dict): the output is a JSON value it validates."""
        constraint = Grammar.from_json_schema(json_schema)
        return cls(_grammar=constraint.source, _constraint=constraint)

    def __repr__(self) -> str:
        return f"LlamaGrammar({self.constraint.kind}, {len(self._grammar)} chars)"


def response_format_grammar(response_format: Any) -> Grammar | None:
    """OpenAI's response_format as a Grammar (None for plain text):
    {"type": "json_object"} any JSON object, with llama-cpp-python's
    "schema" key one that validates; {"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}, "strict": ...}} one that validates the schema."""
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise GrammarError(f"response_format: expected an object with a 'type', got {response_format!r}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        return Grammar.json_object() if schema is None else _schema(schema, "response_format.schema")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise GrammarError("response_format.json_schema: expected {'name': ..., 'schema': {...}}")
        if spec.get("schema") is None:
            # OpenAI: the schema is optional; without one any JSON object answers
            return Grammar.json_object()
        return _schema(spec["schema"], "response_format.json_schema.schema")
    raise GrammarError(f"response_format.type: expected 'text', 'json_object' or 'json_schema', got {kind!r}")


def _schema(schema: Any, where: str) -> Grammar:
    try:
        return Grammar.from_json_schema(schema)
    except GrammarError as e:
        raise GrammarError(f"{where}: {e}") from None


def request_grammar(
    grammar: LlamaGrammar | Grammar | str | None = None,
    response_format: Any = None,
    json_schema: Any = None,
) -> Grammar | None:
    """The one constraint of a request from whichever way it was given:
    grammar (a LlamaGrammar, a Grammar or GBNF text), response_format
    (OpenAI's), json_schema (llama-server's field). More than one is an error."""
    given = [
        n
        for n, v in (("grammar", grammar), ("response_format", response_format), ("json_schema", json_schema))
        if v is not None and not (n == "response_format" and isinstance(v, Mapping) and v.get("type") == "text")
    ]
    if len(given) > 1:
        raise GrammarError(f"{' and '.join(given)} both constrain the output: give one of them")
    if isinstance(grammar, LlamaGrammar):
        return grammar.constraint
    if isinstance(grammar, Grammar):
        return grammar
    if grammar is not None:
        text = getattr(grammar, "_grammar", grammar)  # llama_cpp.LlamaGrammar keeps its GBNF text there
        if not isinstance(text, str):
            raise GrammarError(f"grammar: expected GBNF text or a LlamaGrammar, got {type(grammar).__name__}")
        return Grammar.from_gbnf(text)
    if json_schema is not None:
        return _schema(json_schema, "json_schema")
    return response_format_grammar(response_format)
