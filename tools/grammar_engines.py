#!/usr/bin/env python
"""Constrained-decoding engines side by side: llguidance vs xgrammar.

For each model's vocabulary (SmolLM2: 49k byte-level BPE; Qwen2.5: 152k
byte-level BPE) and each constraint (a JSON schema, llama.cpp's json.gbnf and
arithmetic.gbnf), both engines walk the same token sequence (a valid document,
tokenized by lamina's tokenizer): at every step they compute the allowed-token
bitmask, then accept the token. Reported: the grammar's compile time (per
request: a server compiles every request's schema) and the mask time per token
(mean and p99), which is what each decode step pays. A measurement, not a test.

    pip install xgrammar                                 # the peer (not a lamina dependency)
    python tools/grammar_engines.py                      # both models
    python tools/grammar_engines.py -m smollm2-135m-instruct --repeat 5
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from lamina.gguf.reader import GGUFFile
from lamina.grammar import Grammar, vocabulary
from lamina.model_cache import fetch_model
from lamina.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "grammars"
DEFAULT_MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b"]

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.com$"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "email", "role", "tags", "address"],
    "additionalProperties": False,
}
SCHEMA_DOC = (
    '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.com", "role": "admin", '
    '"tags": ["math", "engines", "poetry"], "address": {"city": "London", "zip": "12345"}}'
)
JSON_DOC = (
    '{"model": "lamina", "sizes": [135, 270, 500], "fast": true, "notes": {"quant": "Q4_K", '
    '"ratio": 1.25, "empty": null}, "words": ["alpha", "beta", "gamma delta"]}'
)
ARITH_DOC = "1+2*y=x\n(a+b)/c=42\nfoo_1-bar*(3+4)=z\n"


def vocab_bytes(tok: Tokenizer) -> tuple[list[bytes], list[int]]:  # xgrammar's input
    """Every token's bytes; control tokens marked with 0xff (never grammar text), and the eog ids."""
    pieces = []
    for i in range(tok.n_vocab):
        b = tok.token_to_piece(i, special=True)
        pieces.append(b"\xff" + b if tok.is_special(i) else b)
    return pieces, sorted(tok.eot_ids)


# --------------------------------------------------------------- llguidance
class LLG:
    """llguidance as lamina.grammar drives it (GBNF rules kept parser rules)."""

    name = "llguidance"

    def __init__(self, tok: Tokenizer) -> None:
        import llguidance

        self.llg = llguidance
        self.tokenizer = vocabulary(tok).ll
        self.n_vocab = tok.n_vocab

    def compile(self, kind: str, text: str) -> str:
        return (Grammar.from_json_schema(text) if kind == "schema" else Grammar.from_gbnf(text)).compiled

    def matcher(self, compiled: str):
        m = self.llg.LLMatcher(self.tokenizer, compiled)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def mask(self, m, buf: np.ndarray) -> None:
        m.unsafe_compute_mask_ptr(buf.ctypes.data, buf.nbytes)

    def accept(self, m, token: int) -> None:
        assert m.consume_token(token), m.get_error()


class LLGLexemes(LLG):
    """llguidance with its own GBNF conversion (terminal-only rules become greedy lexemes)."""

    name = "llg-lexeme"

    def compile(self, kind: str, text: str) -> str:
        return self.llg.grammar_from("json_schema" if kind == "schema" else "gbnf", text)


# ----------------------------------------------------------------- xgrammar
class XGR:
    name = "xgrammar"

    def __init__(self, tok: Tokenizer) -> None:
        import xgrammar

        pieces, eog = vocab_bytes(tok)
        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo(pieces, xgrammar.VocabType.RAW, vocab_size=tok.n_vocab, stop_token_ids=eog)
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.torch = __import__("torch")
        self.n_vocab = tok.n_vocab

    def compile(self, kind: str, text: str):
        if kind == "schema":
            return self.compiler.compile_json_schema(text, any_whitespace=False)
        # xgrammar refuses GBNF's empty alternative (json.gbnf's `ws ::= | " " | ...`): spell it ""
        return self.compiler.compile_grammar(re.sub(r"::=(\s*)\|", r'::=\1"" |', text))

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def mask(self, m, buf: np.ndarray) -> None:
        m.fill_next_token_bitmask(self.torch.from_numpy(buf.reshape(1, -1)))

    def accept(self, m, token: int) -> None:
        assert m.accept_token(token), token


def run(engine, tok: Tokenizer, kind: str, text: str, doc: str, repeat: int) -> tuple[float, float, float, int]:
    """(compile ms, mask us/token mean, p99, tokens) over `repeat` walks of doc's tokens."""
    tokens = tok.encode(doc, add_bos=False)
    buf = np.zeros((tok.n_vocab + 31) // 32, dtype=np.int32)
    compile_ms, times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = engine.matcher(engine.compile(kind, text))
        compile_ms.append((time.perf_counter() - t0) * 1e3)
        for t in tokens:
            t0 = time.perf_counter()
            engine.mask(m, buf)
            times.append(time.perf_counter() - t0)
            if not (buf[t >> 5] >> (t & 31)) & 1:
                raise AssertionError(f"{engine.name}: token {t} {tok.token_to_piece(t)!r} masked out in {kind}")
            engine.accept(m, t)
    us = np.asarray(times) * 1e6
    return float(np.median(compile_ms)), float(us.mean()), float(np.percentile(us, 99)), len(tokens)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=["llguidance", "llg-lexeme", "xgrammar"])
    args = ap.parse_args(argv)
    cases = [
        ("json schema", "schema", json.dumps(SCHEMA), SCHEMA_DOC),
        ("json.gbnf", "gbnf", (DATA / "json.gbnf").read_text(), JSON_DOC),
        ("arithmetic.gbnf", "gbnf", (DATA / "arithmetic.gbnf").read_text(), ARITH_DOC),
    ]
    print(
        f"{'model':<30} {'engine':<11} {'constraint':<16} {'setup s':>8} {'compile ms':>10} {'mask us/tok':>11} "
        f"{'p99 us':>8} {'tokens':>6}"
    )
    for name in args.model:
        with GGUFFile(fetch_model(name)) as f:
            tok = Tokenizer.from_metadata(f.metadata)
        for cls in (LLG, LLGLexemes, XGR):
            if cls.name not in args.engines:
                continue
            t0 = time.perf_counter()
            try:
                engine = cls(tok)
            except ImportError as e:  # xgrammar is not a lamina dependency: pip install xgrammar
                print(f"{cls.name}: not installed ({e})", flush=True)
                continue
            setup = time.perf_counter() - t0
            for label, kind, text, doc in cases:
                head = f"{name + f' ({tok.n_vocab})':<30} {cls.name:<11} {label:<16} {setup:8.2f}"
                try:
                    c, mean, p99, n = run(engine, tok, kind, text, doc, args.repeat)
                except Exception as e:  # an engine that cannot compile the grammar or rejects the valid text
                    print(f"{head}  FAILED: {str(e).splitlines()[0][:90]}", flush=True)
                    continue
                print(f"{head} {c:10.1f} {mean:11.1f} {p99:8.1f} {n:6d}", flush=True)


if __name__ == "__main__":
    main()
