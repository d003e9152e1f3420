"""`lamina serve`'s logprobs, typical_p / mirostat and suffix (fill-in-the-
middle), through the openai client and raw HTTP, against `Llama` for the same
request (whose logprobs tests/runtime/test_logprobs.py checks against eval)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from lamina.model_cache import fetch_model  # noqa: E402
from support.llama_fixture import llama_fixture  # noqa: E402
from support.serve_process import client_fixture, server_fixture, serving  # noqa: E402

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "Name a colour."}]
TOL = 2e-3
ALIAS = "smollm2"


server = server_fixture("smollm2-135m-instruct", "-np", "2", "-c", "1024", "-t", "2", "--alias", ALIAS)
client = client_fixture()
llm = llama_fixture("smollm2-135m-instruct", n_ctx=512)


def test_chat_logprobs_equal_llamas(client, llm):
    got = client.chat.completions.create(
        model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3
    ).choices[0]
    want = llm.create_chat_completion(MESSAGES, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
    want = want["choices"][0]["logprobs"]["content"]
    assert [c.token for c in got.logprobs.content] == [w["token"] for w in want]
    assert [c.bytes for c in got.logprobs.content] == [w["bytes"] for w in want]
    assert np.allclose([c.logprob for c in got.logprobs.content], [w["logprob"] for w in want], atol=TOL)
    for c, w in zip(got.logprobs.content, want):
        assert [a.token for a in c.top_logprobs] == [a["token"] for a in w["top_logprobs"]]
    # streamed: the chunks' entries, in order, are the whole reply's
    stream = client.chat.completions.create(
        model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3, stream=True
    )
    chunks = [ch.choices[0].logprobs for ch in stream if ch.choices and ch.choices[0].logprobs]
    streamed = [e.token for lp in chunks for e in lp.content]
    assert streamed == [w["token"] for w in want]
    plain = client.chat.completions.create(model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=2)
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_with_echo_equal_llamas(client, llm):
    got = client.completions.create(model=ALIAS, prompt=PROMPT, temperature=0, max_tokens=4, logprobs=2, echo=True)
    want = llm.create_completion(PROMPT, temperature=0, max_tokens=4, logprobs=2, echo=True)["choices"][0]
    lp, wlp = got.choices[0].logprobs, want["logprobs"]
    assert got.choices[0].text == want["text"]
    assert lp.tokens == wlp["tokens"] and lp.text_offset == wlp["text_offset"]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert np.allclose(lp.token_logprobs[1:], wlp["token_logprobs"][1:], atol=TOL)
    assert [sorted(t) for t in lp.top_logprobs[1:]] == [sorted(t) for t in wlp["top_logprobs"][1:]]
    stream = client.completions.create(
        model=ALIAS, prompt=PROMPT, temperature=0, max_tokens=4, logprobs=2, echo=True, stream=True
    )
    tokens = [t for ch in stream if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    assert tokens == wlp["tokens"]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
        ("/v1/completions", {"logprobs": 21}, "logprobs"),
        ("/v1/completions", {"logprobs": -1}, "logprobs"),
        ("/v1/completions", {"suffix": "\nf()\n"}, "suffix"),  # SmolLM2 has no FIM tokens
        ("/v1/chat/completions", {"mirostat": 3}, "mirostat"),
        ("/v1/chat/completions", {"typical_p": 0}, "typical_p"),
        ("/v1/completions", {"mirostat_eta": 5}, "mirostat_eta"),
        # llama-server's samplers lamina has not got: refused unless off, never ignored
        ("/v1/chat/completions", {"xtc_probability": 0.5}, "xtc_probability"),
        ("/v1/chat/completions", {"dry_multiplier": 0.8}, "dry_multiplier"),
        ("/v1/completions", {"n_probs": 3}, "n_probs"),
        ("/v1/completions", {"ignore_eos": True}, "ignore_eos"),
        ("/v1/completions", {"samplers": ["top_k"]}, "samplers"),
    ],
)
def test_out_of_range_values_are_400s_naming_the_field(server, path, body, param):
    base = {"messages": MESSAGES} if "chat" in path else {"prompt": PROMPT}
    r = httpx.post(f"{server}{path}", json={**base, "max_tokens": 2, **body}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize(
    "fields, kwargs",
    [
        ({"mirostat": 2, "mirostat_tau": 3.0}, {"mirostat_mode": 2, "mirostat_tau": 3.0}),
        ({"mirostat": 1, "mirostat_eta": 0.2}, {"mirostat_mode": 1, "mirostat_eta": 0.2}),
        ({"typical_p": 0.5}, {"typical_p": 0.5}),
    ],
)
def test_llama_server_sampler_fields_equal_llamas(server, llm, fields, kwargs):
    body = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 9, **fields}
    got = httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    want = llm.create_completion("Once upon a time", max_tokens=12, temperature=1.0, seed=9, **kwargs)
    assert got == want["choices"][0]["text"]


def test_off_values_of_unimplemented_fields_and_v1_health_are_fine(server):
    chat = {"messages": MESSAGES, "max_tokens": 1, "logprobs": None, "top_logprobs": None}
    r = httpx.post(f"{server}/v1/chat/completions", json=chat, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] is None, r.text
    body = {
        "prompt": PROMPT,
        "max_tokens": 1,
        "xtc_probability": 0,
        "dry_multiplier": 0.0,
        "n_probs": 0,
        "ignore_eos": False,
        "top_n_sigma": -1,
    }
    assert httpx.post(f"{server}/v1/completions", json=body, timeout=60).status_code == 200
    assert httpx.get(f"{server}/v1/health", timeout=10).json() == {"status": "ok"}


def test_suffix_fills_the_middle_on_a_fim_model():
    with serving(str(fetch_model("qwen2.5-coder-0.5b")), "-np", "1", "-c", "256", "-t", "2") as base:
        body = {
            "prompt": "def add(a, b):\n    return",
            "suffix": "\n\nprint(add(2, 3))\n",
            "max_tokens": 16,
            "temperature": 0,
        }
        r = httpx.post(f"{base}/v1/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"].strip().startswith("a + b")
