"""`lamina serve` as apps meet it: the official openai client against a real
server process on 127.0.0.1 (a free port), its outputs at temperature 0
against `Llama`'s for the same request, many concurrent streams, disconnects,
and a suite of bad requests after which the server still serves."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from lamina import Llama  # noqa: E402
from support.llama_fixture import llama_fixture  # noqa: E402
from support.serve_process import client_fixture, server_fixture  # noqa: E402

KEY = "test-key-123"
ALIAS = "smollm2"
N_CTX, N_PARALLEL = 2048, 4  # 512 positions per slot


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


FLAGS = ["-np", str(N_PARALLEL), "-c", str(N_CTX), "-t", "2", "--api-key", KEY, "--alias", ALIAS, "--queue", "64"]
server = server_fixture("smollm2-135m-instruct", *FLAGS)
client = client_fixture(api_key=KEY)
llm = llama_fixture("smollm2-135m-instruct", n_ctx=N_CTX // N_PARALLEL)


MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def test_chat_completion_equals_llama(client, llm):
    got = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=24)
    want = llm.create_chat_completion(MESSAGES, temperature=0, max_tokens=24)
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert got.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert got.model == ALIAS and got.object == "chat.completion"


def test_streamed_chat_equals_the_whole_reply_and_reports_usage(client):
    whole = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=24)
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_equals_llama(client, llm):
    got = client.completions.create(model=ALIAS, prompt="The capital of France is", temperature=0, max_tokens=12)
    want = llm.create_completion("The capital of France is", temperature=0, max_tokens=12)
    assert got.choices[0].text == want["choices"][0]["text"]
    stream = client.completions.create(
        model=ALIAS, prompt="The capital of France is", temperature=0, max_tokens=12, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == got.choices[0].text


def test_logit_bias_forces_and_bans_tokens_as_llama_does(client, llm):
    """OpenAI's logit_bias (token ids as strings): +100 makes a token the
    greedy pick, -100 removes the one it would have been; the same as Llama's."""
    prompt = "The capital of France is"
    forced = llm.tokenize(b" zebra", add_bos=False)[0]
    got = client.completions.create(
        model=ALIAS, prompt=prompt, temperature=0, max_tokens=1, logit_bias={str(forced): 100}
    )
    assert got.choices[0].text == llm.detokenize([forced]).decode()
    plain = llm.create_completion(prompt, temperature=0, max_tokens=1)["choices"][0]["text"]
    greedy = llm.tokenize(plain.encode(), add_bos=False)[0]
    banned = client.completions.create(
        model=ALIAS, prompt=prompt, temperature=0, max_tokens=4, logit_bias={str(greedy): -100}
    )
    want = llm.create_completion(prompt, temperature=0, max_tokens=4, logit_bias={greedy: -100})
    assert banned.choices[0].text == want["choices"][0]["text"]
    assert not banned.choices[0].text.startswith(plain)


def test_n_choices_and_seeds(client):
    out = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=1.0, max_tokens=12, n=3, seed=5)
    again = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=1.0, max_tokens=12, n=3, seed=5)
    texts = [c.message.content for c in out.choices]
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # same seed, same choices
    assert len(set(texts)) > 1  # seed + i per choice


def test_models_and_tokenize(server, client):
    assert [m.id for m in client.models.list().data] == [ALIAS]
    h = {"Authorization": f"Bearer {KEY}"}
    toks = httpx.post(f"{server}/tokenize", json={"content": "Hello world"}, headers=h).json()["tokens"]
    assert httpx.post(f"{server}/detokenize", json={"tokens": toks}, headers=h).json()["content"] == "Hello world"


def test_sixteen_concurrent_streams_on_four_slots_get_what_they_get_alone(client):
    prompts = [f"Count from {i} to {i + 5}, separated by commas." for i in range(16)]

    def ask(prompt: str) -> str:
        stream = client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=20, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [ask(p) for p in prompts[:4]]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, prompts, timeout=600))
    assert together[:4] == alone
    assert all(together)


def test_a_client_that_disconnects_frees_its_slot(server):
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert _metric(server, "lamina_busy_slots") == 1
    deadline = time.monotonic() + 30
    while _metric(server, "lamina_busy_slots") != 0:
        assert time.monotonic() < deadline, "the slot of a disconnected client was not freed"
        time.sleep(0.1)


def test_embeddings_equal_llama_embed(server, client):
    """The openai client asks for base64 by default and decodes it; float
    format over plain HTTP gives the same vectors; both are Llama.embed's,
    L2-normalized (llama-server's default)."""
    texts = ["The cat sat on the mat.", "Paris is the capital of France."]
    got = client.embeddings.create(model=ALIAS, input=texts)
    with Llama("smollm2-135m-instruct", n_ctx=N_CTX, n_threads=2, embedding=True, verbose=False) as emb:
        want, n = emb.embed(texts, normalize=True, return_count=True)
    assert [d.index for d in got.data] == [0, 1] and got.usage.prompt_tokens == n
    for d, w in zip(got.data, want):
        assert np.allclose(d.embedding, w, atol=1e-5)
    plain = _post(server, "/v1/embeddings", {"input": texts[0], "encoding_format": "float"}).json()
    assert np.allclose(plain["data"][0]["embedding"], want[0], atol=1e-5)
    for body, param in [({"input": []}, "input"), ({"input": "x", "dimensions": 8}, "dimensions")]:
        r = _post(server, "/v1/embeddings", body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def _post(server: str, path: str, body, key: str | None = KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(f"{server}{path}", content=raw, headers=headers, timeout=60)
    return httpx.post(f"{server}{path}", json=body, headers=headers, timeout=60)


CHAT = "/v1/chat/completions"
OK = {"model": ALIAS, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


@pytest.mark.parametrize(
    "case, status, param",
    [
        ("malformed json", 400, None),
        ({"messages": "hello"}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({**OK, "max_tokens": -1}, 400, "max_tokens"),
        ({**OK, "max_tokens": 10**9}, 400, "max_tokens"),
        ({**OK, "temperature": 1e9}, 400, "temperature"),
        ({**OK, "top_p": -1}, 400, "top_p"),
        ({**OK, "top_k": "many"}, 400, "top_k"),
        ({**OK, "n": 1000}, 400, "n"),
        ({**OK, "seed": 2**40}, 400, "seed"),
        ({**OK, "stop": ["x"] * 100}, 400, "stop"),
        ({**OK, "messages": [{"role": "user", "content": "word " * 100_000}]}, 400, None),
        ({**OK, "model": "gpt-4"}, 404, "model"),
        ({**OK, "logit_bias": {"five": 10}}, 400, "logit_bias"),
        ({**OK, "logit_bias": {"99999999": 10}}, 400, "logit_bias"),
        ({**OK, "tools": [{"type": "function", "function": {"nam": "f"}}]}, 400, "tools[0].function.name"),
        ({**OK, "functions": [{"name": "f"}]}, 400, "functions"),
        ({**OK, "grammar": "root ::= missing"}, 400, "grammar"),
        ({**OK, "json_schema": {"type": "objekt"}}, 400, "json_schema"),
        ({**OK, "response_format": {"type": "yaml"}}, 400, "response_format"),
        ({**OK, "response_format": "json"}, 400, "response_format"),
        (
            {
                **OK,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"minimum": "a"}}},
            },
            400,
            "response_format",
        ),
        ({**OK, "stream": True, "grammar": "root ::= [a-"}, 400, "grammar"),
        ({**OK, "grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, 400, "grammar"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests_get_the_right_status(server, case, status, param):
    r = (
        _post(server, CHAT, None, raw=b'{"model": "x", "messages": [')
        if case == "malformed json"
        else _post(server, CHAT, case)
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param, err


def test_a_huge_body_is_refused_before_it_is_read(server):
    r = _post(server, CHAT, None, raw=b'{"messages": "' + b"x" * (20 << 20) + b'"}')
    assert r.status_code == 413, r.text


def test_the_api_key_guards_every_endpoint_but_health(server):
    assert httpx.get(f"{server}/health").status_code == 200
    for key in (None, "wrong"):
        assert _post(server, CHAT, OK, key=key).status_code == 401
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        assert httpx.get(f"{server}/v1/models", headers=headers).status_code == 401
        assert httpx.get(f"{server}/metrics", headers=headers).status_code == 401


def test_after_the_bad_requests_the_server_still_serves(server, client):
    out = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=8)
    assert out.choices[0].message.content
    assert _metric(server, "lamina_busy_slots") == 0
    assert _metric(server, "lamina_queue_depth") == 0
    assert _metric(server, "lamina_completion_tokens_total") > 0
    assert _metric(server, 'lamina_requests_total{endpoint="chat",status="200"}') > 0


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "label": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}$"}},
    "required": ["x", "label"],
    "additionalProperties": False,
}


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def test_response_format_json_schema(client):
    jsonschema = pytest.importorskip("jsonschema")
    msgs = [{"role": "user", "content": "Describe a person and their pets as JSON."}]
    for seed in (1, 2):
        out = client.chat.completions.create(
            model=ALIAS,
            messages=msgs,
            temperature=0.8,
            seed=seed,
            max_tokens=120,
            response_format=_schema_format(PERSON),
        )
        assert out.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.choices[0].message.content), PERSON)
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=msgs,
        temperature=0.8,
        seed=1,
        max_tokens=120,
        stream=True,
        response_format=_schema_format(PERSON),
    )
    chunks = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), PERSON)


def test_llama_server_grammar_and_json_schema_fields(client):
    jsonschema = pytest.importorskip("jsonschema")
    out = client.completions.create(
        model=ALIAS,
        prompt="Q: Is the sea salty? A:",
        max_tokens=8,
        temperature=0.8,
        seed=3,
        extra_body={"grammar": 'root ::= " yes" | " no"'},
    )
    assert out.choices[0].text in (" yes", " no") and out.choices[0].finish_reason == "stop"
    out = client.completions.create(
        model=ALIAS,
        prompt="A point as JSON:",
        max_tokens=60,
        temperature=0.8,
        seed=3,
        extra_body={"json_schema": POINT},
    )
    jsonschema.validate(json.loads(out.choices[0].text), POINT)
    out = client.chat.completions.create(
        model=ALIAS, messages=MESSAGES, max_tokens=60, temperature=0.8, seed=3, response_format={"type": "json_object"}
    )
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_concurrent_requests_with_different_schemas_both_validate(client):
    jsonschema = pytest.importorskip("jsonschema")
    jobs = [(PERSON, "a person"), (POINT, "a labelled point")] * 2

    def ask(job):
        schema, what = job
        out = client.chat.completions.create(
            model=ALIAS,
            messages=[{"role": "user", "content": f"Give {what} as JSON."}],
            temperature=0.8,
            seed=11,
            max_tokens=120,
            response_format=_schema_format(schema),
        )
        return out.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(ask, jobs, timeout=300))
    for (schema, _), text in zip(jobs, texts):
        jsonschema.validate(json.loads(text), schema)


def test_an_invalid_grammar_is_a_400_for_the_openai_client(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=ALIAS, messages=MESSAGES, max_tokens=4, extra_body={"grammar": "root ::= value"}
        )
    assert "rule 'value' is used but never defined" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="invalid JSON schema"):
        client.chat.completions.create(
            model=ALIAS,
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            response_format=_schema_format({"type": "array", "minItems": 3, "maxItems": 1}),
        )


def test_serve_refuses_bad_flags():
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "serve", "-np", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert r.returncode == 1 and "-np must be in [1, 256]" in r.stderr and "Traceback" not in r.stderr
