"""logprobs / top_logprobs in Llama, against an independent computation:
log_softmax of the logits Llama.eval leaves in `scores` for the same tokens
(teacher forcing, one position at a time), in llama-cpp-python's and
OpenAI's shapes."""

import math

import numpy as np
import pytest

from lamina import Llama
from lamina.logprobs import MAX_TOP_LOGPROBS, LogprobsError

TOL = 2e-3  # the engine's batched decode and eval's may differ in the last bits of a logit
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm():
    with Llama("smollm2-135m-instruct", n_ctx=256, n_threads=2, seed=5, logits_all=True, verbose=False) as llm:
        yield llm


def _log_softmax(row):
    x = row.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def _greedy_reference(llm, prompt_tokens, n):
    """Greedy continuation by eval(): ([token], [log_softmax row]) per step."""
    llm.reset()
    llm.eval(prompt_tokens)
    tokens, rows = [], []
    for _ in range(n):
        lp = _log_softmax(llm.scores[llm.n_tokens - 1])
        t = int(np.argmax(lp))
        tokens.append(t)
        rows.append(lp)
        llm.eval([t])
    return tokens, rows


def _piece(llm, t):
    return llm.detokenize([t], special=True).decode("utf-8", "replace")


def test_completion_logprobs_equal_log_softmax_of_eval_scores(llm):
    n, k = 6, 3
    out = llm.create_completion(PROMPT, max_tokens=n, temperature=0, logprobs=k)
    lp = out["choices"][0]["logprobs"]
    tokens, rows = _greedy_reference(llm, llm.tokenize(PROMPT.encode()), n)
    assert lp["tokens"] == [_piece(llm, t) for t in tokens]
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]
    for i, (t, row) in enumerate(zip(tokens, rows)):
        assert lp["token_logprobs"][i] == pytest.approx(row[t], abs=TOL)
        top = lp["top_logprobs"][i]
        best = np.argsort(-row)[:k]
        assert set(top) == {_piece(llm, b) for b in best}  # greedy: the chosen token is among the top k
        for b in best:
            assert top[_piece(llm, b)] == pytest.approx(row[b], abs=TOL)
    # offsets count characters from the start of prompt + text
    offsets = lp["text_offset"]
    assert offsets[0] == len(PROMPT)
    assert offsets == [len(PROMPT) + len("".join(lp["tokens"][:i])) for i in range(n)]


def test_echo_lists_the_prompt_tokens_with_their_logprobs(llm):
    prompt_tokens = llm.tokenize(PROMPT.encode())
    out = llm.create_completion(PROMPT, max_tokens=2, temperature=0, logprobs=1, echo=True)
    choice = out["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"].startswith(PROMPT)
    n_prompt = len(prompt_tokens)
    assert len(lp["tokens"]) == n_prompt + 2
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    llm.reset()
    llm.eval(prompt_tokens)
    for i in range(1, n_prompt):
        row = _log_softmax(llm.scores[i - 1])
        assert lp["token_logprobs"][i] == pytest.approx(row[prompt_tokens[i]], abs=TOL)
        assert lp["tokens"][i] == _piece(llm, prompt_tokens[i])
    text = choice["text"]
    for tok, off in zip(lp["tokens"], lp["text_offset"]):
        assert text[off : off + len(tok)] == tok


def test_logprobs_are_the_models_distribution_whatever_the_sampler_does(llm):
    """A token forced by logit_bias at a high temperature keeps the raw logprob the model gave it."""
    forced = llm.tokenize(b" zebra", add_bos=False)[0]
    out = llm.create_completion(PROMPT, max_tokens=1, temperature=1.5, logit_bias={forced: 100.0}, logprobs=0, seed=1)
    lp = out["choices"][0]["logprobs"]
    llm.reset()
    llm.eval(llm.tokenize(PROMPT.encode()))
    row = _log_softmax(llm.scores[llm.n_tokens - 1])
    assert lp["tokens"] == [_piece(llm, forced)]
    assert lp["token_logprobs"][0] == pytest.approx(row[forced], abs=TOL) and row[forced] < -5
    assert lp["top_logprobs"][0] == {_piece(llm, forced): lp["token_logprobs"][0]}  # N=0: only the chosen one


def test_model_names_the_response(llm):
    assert llm.create_completion("Hi", max_tokens=1, model="my-model")["model"] == "my-model"
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=1, model="m", stream=True))
    assert {c["model"] for c in chunks} == {"m"}
    assert llm.create_completion("Hi", max_tokens=1)["model"] == llm.model_path


def test_chat_logprobs_in_openai_shape(llm):
    messages = [{"role": "user", "content": "Name a colour."}]
    out = llm.create_chat_completion(messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    choice = out["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    tokens, rows = _greedy_reference(llm, llm._session.chat_tokens(messages), len(content))
    for c, t, row in zip(content, tokens, rows):
        assert bytes(c["bytes"]) == llm.detokenize([t], special=True)
        assert c["logprob"] == pytest.approx(row[t], abs=TOL)
        assert [a["token"] for a in c["top_logprobs"]] == [_piece(llm, b) for b in np.argsort(-row)[:2]]
        assert c["top_logprobs"][0]["logprob"] == pytest.approx(c["logprob"], abs=1e-9)  # greedy
    # without top_logprobs: the chosen token only
    plain = llm.create_chat_completion(messages, max_tokens=2, temperature=0, logprobs=True)
    assert all(c["top_logprobs"] == [] for c in plain["choices"][0]["logprobs"]["content"])
    assert llm.create_chat_completion(messages, max_tokens=1)["choices"][0]["logprobs"] is None


def test_streamed_logprobs_equal_the_whole_ones(llm):
    whole = llm.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=2)["choices"][0]["logprobs"]
    stream = llm.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=2, stream=True)
    parts = [c["choices"][0]["logprobs"] for c in stream]
    merged = {k: sum((p[k] for p in parts if p), []) for k in whole}
    assert merged["tokens"] == whole["tokens"]
    assert merged["text_offset"] == whole["text_offset"]
    assert np.allclose(merged["token_logprobs"], whole["token_logprobs"])
    messages = [{"role": "user", "content": "Hi"}]
    chat = llm.create_chat_completion(messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=1)
    streamed = [
        e
        for c in llm.create_chat_completion(
            messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=1, stream=True
        )
        if c["choices"][0]["logprobs"]
        for e in c["choices"][0]["logprobs"]["content"]
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in chat["choices"][0]["logprobs"]["content"]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"logprobs": MAX_TOP_LOGPROBS + 1}, r"logprobs must be in \[0, 20\]"),
        ({"logprobs": -1}, r"logprobs must be in \[0, 20\]"),
        ({"logprobs": 1.5}, "logprobs must be an integer"),
    ],
)
def test_completion_logprobs_are_capped(llm, kwargs, match):
    with pytest.raises(LogprobsError, match=match):
        llm.create_completion(PROMPT, max_tokens=1, **kwargs)


def test_chat_top_logprobs_are_capped_and_need_logprobs(llm):
    m = [{"role": "user", "content": "Hi"}]
    with pytest.raises(LogprobsError, match=r"top_logprobs must be in \[0, 20\], got 21"):
        llm.create_chat_completion(m, max_tokens=1, logprobs=True, top_logprobs=21)
    with pytest.raises(LogprobsError, match="top_logprobs needs logprobs=True"):
        llm.create_chat_completion(m, max_tokens=1, top_logprobs=2)
    assert math.isfinite(
        llm.create_chat_completion(m, max_tokens=1, logprobs=True, top_logprobs=20)["choices"][0]["logprobs"][
            "content"
        ][0]["top_logprobs"][19]["logprob"]
    )


def test_prompt_logprobs_are_the_same_across_chunks(llm, monkeypatch):
    """a prompt longer than a chunk of positions gives the logprobs of one evaluation"""
    import lamina.logprobs

    text = "One two three four five six seven eight nine ten eleven twelve"
    whole = llm.create_completion(text, max_tokens=1, temperature=0, logprobs=1, echo=True)["choices"][0]
    monkeypatch.setattr(lamina.logprobs, "PROMPT_CHUNK", 3)
    chunked = llm.create_completion(text, max_tokens=1, temperature=0, logprobs=1, echo=True)["choices"][0]
    assert chunked["logprobs"]["tokens"] == whole["logprobs"]["tokens"]
    assert np.allclose(chunked["logprobs"]["token_logprobs"][1:], whole["logprobs"]["token_logprobs"][1:], atol=TOL)
