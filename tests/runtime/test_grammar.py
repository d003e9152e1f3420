"""Constrained output (lamina.grammar) on the real models: what comes out
parses and validates against independent oracles (json + the jsonschema
package, a regex reduction of llama.cpp's arithmetic.gbnf), at temperature
0.8 over several seeds, for the Llama API (plain, streamed, concurrent)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lamina import Llama, LlamaGrammar
from lamina.gguf.reader import GGUFFile
from lamina.grammar import Grammar, GrammarError, gbnf_to_lark, request_grammar
from lamina.model_cache import fetch_model
from lamina.tokenizer import Tokenizer
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_schema_gbnf

jsonschema = pytest.importorskip("jsonschema")

GRAMMARS = Path(__file__).resolve().parent.parent / "data" / "grammars"
MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m"]
SEEDS = [1, 2, 3]
MAX_TOKENS = 160  # every schema below fits well within it (strings are bounded)

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 24},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "address"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L"]},
            "in_stock": {"type": "boolean"},
        },
        "required": ["color", "size", "in_stock"],
        "additionalProperties": False,
    },
    "array": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 2,
                "maxItems": 4,
            },
            "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "maxItems": 3},
        },
        "required": ["tags", "scores"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {
            "email": {"type": "string", "pattern": "^[a-z]{1,10}@[a-z]{1,10}\\.(com|org)$"},
            "date": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
        },
        "required": ["email", "date", "code"],
        "additionalProperties": False,
    },
}


# ------------------------------------------------------------ oracles
_WS = r"[ \t\n]*"
_TERM = rf"(?:[a-z][a-z0-9_]*{_WS}|[0-9]+{_WS}|v)"  # ident | num | a reduced "( expr )"
_EXPR = rf"{_TERM}(?:[-+*/]{_TERM})*"
_PARENS = re.compile(rf"\({_WS}{_EXPR}\){_WS}")
_ARITH = re.compile(rf"(?:{_EXPR}={_WS}{_TERM}\n)+")


def arithmetic_ok(text: str, complete: bool = True) -> bool:
    """Whether text is in arithmetic.gbnf's language: innermost "( expr )"
    groups reduce to a term until none is left, then one regex checks the
    lines. complete=False: whether it is a prefix of such a text (cut by
    max_tokens), i.e. one of a few completions (a term for a dangling
    operator, the missing ")", "=x" and the newline) makes it one."""
    if not complete:
        depth = text.count("(") - text.count(")")
        return depth >= 0 and any(
            arithmetic_ok(text + a + ")" * depth + end) for a in ("", "x") for end in ("\n", "=x\n")
        )
    while True:
        reduced = _PARENS.sub("v", text)
        if reduced == text:
            break
        text = reduced
    return _ARITH.fullmatch(text) is not None


def validate(text: str, schema: dict) -> None:
    jsonschema.validate(json.loads(text), schema)


# ------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", params=MODELS)
def model(request):
    with Llama(request.param, n_ctx=2048, n_threads=2, n_seq_max=4, seed=1, verbose=False) as llm:
        yield llm


@pytest.fixture(scope="module")
def small():
    with Llama("smollm2-135m-instruct", n_ctx=1024, n_threads=2, n_seq_max=4, seed=1, verbose=False) as llm:
        yield llm


@pytest.fixture(scope="module")
def smol_tokenizer():
    with GGUFFile(fetch_model("smollm2-135m-instruct")) as f:
        return Tokenizer.from_metadata(f.metadata)


def _chat(llm: Llama, schema: dict, seed: int, name: str = "thing") -> dict:
    prompt = f"Reply with one {name} as a JSON object with the keys {', '.join(schema['properties'])}."
    return llm.create_chat_completion(
        [{"role": "user", "content": prompt}],
        max_tokens=MAX_TOKENS,
        temperature=0.8,
        seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
    )["choices"][0]


# --------------------------------------------------------- JSON schemas
def test_outputs_validate_against_their_schemas(model):
    """Every schema x seed on each model, four at a time (the batched engine,
    each sequence with its own matcher)."""
    jobs = [(name, seed) for name in SCHEMAS for seed in SEEDS]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: _chat(model, SCHEMAS[job[0]], job[1], job[0]), jobs, timeout=900))
    for (name, seed), choice in zip(jobs, results):
        text = choice["message"]["content"]
        assert choice["finish_reason"] == "stop", (name, seed, text)
        validate(text, SCHEMAS[name])


def test_two_concurrent_requests_with_different_schemas_both_validate(small):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(_chat, small, SCHEMAS["enum"], 7)
        b = pool.submit(_chat, small, SCHEMAS["pattern"], 7)
        a_text, b_text = a.result(timeout=300)["message"]["content"], b.result(timeout=300)["message"]["content"]
    validate(a_text, SCHEMAS["enum"])
    validate(b_text, SCHEMAS["pattern"])


def test_json_object_and_llama_cpp_python_schema_key(small):
    msgs = [{"role": "user", "content": "Describe a cat as JSON."}]
    for seed in SEEDS:
        out = small.create_chat_completion(
            msgs, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed, response_format={"type": "json_object"}
        )["choices"][0]
        if out["finish_reason"] == "stop":  # any object: it may run past max_tokens
            assert isinstance(json.loads(out["message"]["content"]), dict)
        schema = SCHEMAS["enum"]
        fmt = {"type": "json_object", "schema": schema}
        out = small.create_chat_completion(
            msgs, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed, response_format=fmt
        )["choices"][0]
        assert out["finish_reason"] == "stop"
        validate(out["message"]["content"], schema)


def test_streamed_output_is_the_same_valid_json(small):
    schema = SCHEMAS["nested"]
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    msgs = [{"role": "user", "content": "A person with an address, as JSON."}]
    whole = small.create_chat_completion(msgs, max_tokens=MAX_TOKENS, seed=4, temperature=0.8, response_format=fmt)
    chunks = list(
        small.create_chat_completion(
            msgs, max_tokens=MAX_TOKENS, seed=4, temperature=0.8, response_format=fmt, stream=True
        )
    )
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    validate(text, schema)


def test_max_tokens_before_the_grammar_completes_is_length(small):
    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMAS["nested"]))
    out = small.create_completion("JSON:", max_tokens=3, grammar=grammar, temperature=0.8, seed=1)["choices"][0]
    assert out["finish_reason"] == "length"
    assert out["text"].startswith("{")


# --------------------------------------------------------------- GBNF
def test_yes_or_no(small):
    grammar = 'root ::= " yes" | " no"'
    for seed in range(6):
        out = small.create_completion("Q: Is water wet? A:", max_tokens=8, grammar=grammar, temperature=0.8, seed=seed)[
            "choices"
        ][0]
        assert out["text"] in (" yes", " no")
        assert out["finish_reason"] == "stop"
    streamed = list(small.create_completion("Q: Is fire cold? A:", max_tokens=8, grammar=grammar, stream=True, seed=1))
    assert "".join(c["choices"][0]["text"] for c in streamed) in (" yes", " no")


def test_a_llama_cpp_python_grammar_object_is_taken_for_its_gbnf():
    class Theirs:  # llama_cpp.LlamaGrammar keeps the GBNF text in _grammar
        _grammar = 'root ::= " yes" | " no"'

    assert request_grammar(Theirs()) == Grammar.from_gbnf(Theirs._grammar)
    with pytest.raises(GrammarError, match="expected GBNF text or a LlamaGrammar, got int"):
        request_grammar(5)


def test_llama_cpp_json_gbnf(small):
    grammar = LlamaGrammar.from_file(GRAMMARS / "json.gbnf")
    msgs = [{"role": "user", "content": "Give me a small JSON object about a book."}]
    done = 0
    for seed in SEEDS:
        out = small.create_chat_completion(msgs, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed, grammar=grammar)
        choice = out["choices"][0]
        text = choice["message"]["content"]
        assert text.lstrip().startswith("{")
        if choice["finish_reason"] == "stop":
            assert isinstance(json.loads(text), dict)
            done += 1
    assert done, "no json.gbnf output completed within max_tokens"


def test_llama_cpp_arithmetic_gbnf(small, smol_tokenizer):
    text = (GRAMMARS / "arithmetic.gbnf").read_text()
    grammar = LlamaGrammar.from_string(text)
    matcher = grammar.constraint.matcher(smol_tokenizer)
    for seed in SEEDS:
        choice = small.create_completion(
            "Simple equations, one a line:\n1+1=2\n", max_tokens=48, grammar=grammar, temperature=0.8, seed=seed
        )["choices"][0]
        out = choice["text"]
        complete = choice["finish_reason"] == "stop"
        assert arithmetic_ok(out, complete), out
        # and by the engine's own matcher, independent of sampling
        assert matcher.matches(smol_tokenizer.encode(out, add_bos=False), complete), out


def test_arithmetic_accepts_what_llama_cpp_accepts(smol_tokenizer):
    """A term's trailing whitespace may not swallow the newline that ends a
    line (llguidance's own GBNF conversion makes such rules greedy lexemes
    and rejects this text)."""
    m = Grammar.from_gbnf((GRAMMARS / "arithmetic.gbnf").read_text()).matcher(smol_tokenizer)
    for good in ["1+2*y=x\n(a+b)/c=42\nfoo_1-bar*(3+4)=z\n", "x = 1\n"]:
        assert arithmetic_ok(good, complete=True)
        assert m.matches(smol_tokenizer.encode(good, add_bos=False)), good
    assert arithmetic_ok("2+1=3\n\n(2+1) +(2", complete=False)
    assert m.matches(smol_tokenizer.encode("2+1=3\n\n(2+1) +(2", add_bos=False), complete=False)
    assert not m.matches(smol_tokenizer.encode("2+1=3\n\n(2+1) +(2", add_bos=False))
    for bad in ["1+2=\n", "(a+b=c\n", "x=1"]:
        assert not arithmetic_ok(bad, complete=True)
        assert not m.matches(smol_tokenizer.encode(bad, add_bos=False)), bad


# ------------------------------------------------- GBNF lexemes (lamina.gbnf)
def _lexemes(text: str) -> set[str]:
    return set(re.findall(r"^(R_[A-Z0-9_]+):", gbnf_to_lark(text), re.M))


def test_gbnf_rules_become_lexemes_only_where_greedy_lexing_is_exact():
    assert _lexemes((GRAMMARS / "json.gbnf").read_text()) == {"R_STRING", "R_NUMBER", "R_WS"}
    assert _lexemes((GRAMMARS / "arithmetic.gbnf").read_text()) == set()  # ws may eat the "\n" that follows
    assert _lexemes('root ::= word "1"\nword ::= [a-z]+') == {"R_WORD"}
    assert _lexemes('root ::= word "s"\nword ::= [a-z]+') == set()  # "cats": the word is "cat"
    assert _lexemes("root ::= word [^0-9]\nword ::= [a-z]+") == set()
    assert _lexemes('root ::= kw "x"\nkw ::= "a" | "ab"') == {"R_KW"}  # nothing that follows starts with "b"
    assert _lexemes('root ::= kw "b"\nkw ::= "a" | "ab"') == set()  # "ab" + "b": greedy takes "ab", then "b"
    assert _lexemes('root ::= (word " ")+\nword ::= [a-z]+') == {"R_WORD"}
    assert _lexemes('root ::= word\nword ::= "a" word | "b"') == set()  # recursive: stays a parser rule
    assert _lexemes('root ::= "<" s ">"\ns ::= (c)*\nc ::= [^>\\\\] | "\\\\" [a-z]') == {"R_S", "R_C"}
    assert _lexemes('root ::= "<" c ">"\nc ::= [a-z] | [a-z] "x"') == {"R_C"}
    assert _lexemes('root ::= c "x"\nc ::= [a-z] | [a-z] "x"') == set()  # "ax" + "x"


DIFF_TEXTS = [
    '{"a": 1}',
    '{"a": [1, 2.5e3, -0, "x\\n"], "b": {"c": null}}',
    '{ "k" : true }',
    '{"a":1}\n',
    '{"a": 01}',
    '{"a": "unterminated}',
    '{"a" 1}',
    '{"s": "tab\there"}',
    '{"u": "\\u00e9"}',
    "[1]",
    "{}",
    '{"a": 1e5}',
    '{"n": -12.0E-3 }',
]


def test_json_gbnf_lexemes_accept_exactly_what_the_exact_conversion_accepts(smol_tokenizer):
    """json.gbnf with lexemes vs with every rule a parser rule (plainly
    llama.cpp's meaning): the same verdict on every text and every prefix."""
    import llguidance

    text = (GRAMMARS / "json.gbnf").read_text()
    fast = Grammar.from_gbnf(text).matcher(smol_tokenizer)
    exact = Grammar.from_lark(gbnf_to_lark(text, lexemes=False)).matcher(smol_tokenizer)
    assert fast.grammar.compiled != exact.grammar.compiled
    assert llguidance  # the engine both run on
    for doc in DIFF_TEXTS:
        for cut in range(1, len(doc) + 1):
            tokens = smol_tokenizer.encode(doc[:cut], add_bos=False)
            for complete in (True, False):
                assert fast.matches(tokens, complete) == exact.matches(tokens, complete), (doc[:cut], complete)


SCHEMA_DOCS = {
    "nested": '{"name": "Ada", "address": {"city": "Paris", "zip": "75001"}}',
    "enum": '{"color": "red", "size": "M", "in_stock": true}',
    "array": '{"tags": ["a", "b\\"c"], "scores": [1, 100]}',
    "pattern": '{"email": "ada@lovelace.org", "date": "2024-12-31", "code": "ABC-123"}',
}


# llama-cpp-python's converter (a Python port) drops integer bounds ("array")
# and writes the escape "\." for a pattern's dot ("pattern"), which llama.cpp's
# own GBNF parser refuses as lamina's does
@pytest.mark.parametrize("name", ["nested", "enum"])
def test_llama_cpp_schema_grammars_through_gbnf(small, smol_tokenizer, name):
    """llama.cpp's own JSON-schema-to-GBNF converter (llama-cpp-python's
    LlamaGrammar.from_json_schema) as the grammar: its lexemes agree with the
    exact conversion on every prefix of a valid document, and what the model
    writes under it validates against the schema."""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama.cpp schema converter")
    gbnf = llama_cpp_schema_gbnf(SCHEMAS[name])  # in a child process, as every llama.cpp call of the tests
    fast = request_grammar(gbnf).matcher(smol_tokenizer)
    exact = Grammar.from_lark(gbnf_to_lark(gbnf, lexemes=False)).matcher(smol_tokenizer)
    doc = SCHEMA_DOCS[name]
    validate(doc, SCHEMAS[name])
    for cut in range(1, len(doc) + 1):
        tokens = smol_tokenizer.encode(doc[:cut], add_bos=False)
        for complete in (True, False):
            assert fast.matches(tokens, complete) == exact.matches(tokens, complete), (doc[:cut], complete)
    assert fast.matches(smol_tokenizer.encode(doc, add_bos=False))
    prompt = f"Reply with one {name} as a JSON object with the keys {', '.join(SCHEMAS[name]['properties'])}."
    out = small.create_chat_completion(
        [{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS, temperature=0.8, seed=1, grammar=gbnf
    )["choices"][0]
    assert out["finish_reason"] == "stop"
    validate(out["message"]["content"], SCHEMAS[name])


# -------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Grammar.from_gbnf("root ::= foo"), "rule 'foo' is used but never defined"),
        (lambda: Grammar.from_gbnf('rot ::= "a"'), "no 'root' rule"),
        (lambda: Grammar.from_gbnf("root ::= [a-"), "invalid GBNF grammar"),
        (lambda: LlamaGrammar.from_string("root ::= ( "), "invalid GBNF grammar"),
        (lambda: Grammar.from_json_schema({"type": "objekt"}), "invalid JSON schema: .*objekt"),
        (lambda: Grammar.from_json_schema('{"type": '), "invalid JSON schema: not valid JSON"),
        (lambda: Grammar.from_json_schema({"type": "array", "minItems": 3, "maxItems": 1}), "minItems"),
        (lambda: Grammar.from_json_schema({"type": "string", "pattern": "(("}), "invalid JSON schema: regex"),
        (lambda: LlamaGrammar.from_json_schema({"$ref": "#/nowhere"}), "invalid JSON schema"),
        (lambda: request_grammar(response_format={"type": "yaml"}), "response_format.type"),
        (lambda: request_grammar(response_format={"type": "json_schema"}), "response_format.json_schema"),
        (lambda: request_grammar('root ::= "a"', {"type": "json_object"}), "grammar and response_format"),
        (lambda: LlamaGrammar.from_file("/nonexistent.gbnf"), "cannot read the grammar file"),
    ],
)
def test_invalid_grammars_are_clear_errors(make, match):
    with pytest.raises(GrammarError, match=match):
        make()


def test_invalid_grammar_in_llama_is_an_error_before_anything_runs(small):
    with pytest.raises(GrammarError, match="rule 'value' is used but never defined"):
        small.create_completion("Hi", grammar="root ::= value")
    with pytest.raises(GrammarError, match="invalid JSON schema"):
        small.create_chat_completion(
            [{"role": "user", "content": "Hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
            stream=True,
        )
    assert small.create_completion("Hi", max_tokens=2)["choices"]  # and the instance still serves


# --------------------------------------------------------------- bench
def test_bench_times_tg_with_and_without_a_schema(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMAS["enum"]))
    cmd = [sys.executable, "-m", "lamina", "bench", "-m", "smollm2-135m-instruct", "-p", "0", "-n", "8", "-r", "1"]
    out = subprocess.run([*cmd, "-t", "2", "--json", "--json-schema", str(schema)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = [r.get("test_name") for r in json.loads(out.stdout)]
    assert names == [None, "sampled", "json-schema"]
    schema.write_text('{"type": "objekt"}')
    bad = subprocess.run([*cmd, "--json-schema", str(schema)], capture_output=True, text=True)
    assert bad.returncode == 1 and "invalid JSON schema" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------- run
def test_lamina_run_grammar_and_json_schema_flags(tmp_path):
    run = [sys.executable, "-m", "lamina", "run", "smollm2-135m-instruct", "-t", "2", "--seed", "1"]
    out = subprocess.run([*run, "-p", "Is it?", "--grammar", 'root ::= " yes" | " no"'], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout in (" yes\n", " no\n"), out.stderr
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMAS["enum"]))
    out = subprocess.run([*run, "-p", "A shirt:", "-jf", str(schema), "-n", "100"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    validate(out.stdout, SCHEMAS["enum"])
    grammar = tmp_path / "g.gbnf"
    grammar.write_text("root ::= missing")
    bad = subprocess.run([*run, "-p", "x", "--grammar-file", str(grammar)], capture_output=True, text=True)
    assert bad.returncode == 1 and "rule 'missing' is used but never defined" in bad.stderr
    assert "Traceback" not in bad.stderr
