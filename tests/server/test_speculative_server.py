"""`lamina serve --lookup`: every request speculates and gets at temperature
0 what `Llama` without speculation gives; llama-server's per-request
speculative.n_max / n_min bound it, and asking for it where it cannot run
(with a grammar, or n_min > n_max) is a 400 naming the field, while a
grammar request that did not ask simply runs without it."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")

from lamina import Llama
from lamina.model_cache import fetch_model
from support.serve_process import serving

PROMPT = "Here is a list:\n- apples\n- pears\n- plums\n\nThe same list again:\n-"


@pytest.fixture(scope="module")
def model():
    return str(fetch_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def server(model):
    with serving(model, "--lookup", "-np", "2", "-c", "2048", "-t", "2") as base:
        yield base


def _complete(base, **body):
    return httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 24, **body}, timeout=120)


def test_lookup_server_gives_llamas_tokens(server, model):
    with Llama(model, n_ctx=1024, n_threads=2, verbose=False) as llm:
        want = llm(PROMPT, max_tokens=24, temperature=0)["choices"][0]["text"]
    for extra in ({}, {"speculative.n_max": 2, "speculative.n_min": 1}, {"speculative.n_max": 0}):
        r = _complete(server, temperature=0, **extra)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == want


def test_what_cannot_speculate_is_refused_or_runs_plain(server):
    r = _complete(server, temperature=0, grammar='root ::= " x"', **{"speculative.n_max": 4})
    assert r.status_code == 400 and "grammar" in r.text and "speculative.n_max" in r.text
    r = _complete(server, temperature=0, **{"speculative.n_max": 2, "speculative.n_min": 3})
    assert r.status_code == 400 and "draft min" in r.text
    r = _complete(server, temperature=0, **{"speculative.n_max": 999})
    assert r.status_code == 400 and "speculative.n_max" in r.text
    r = _complete(server, temperature=0, grammar='root ::= " x"')  # did not ask: runs without drafts
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == " x"
