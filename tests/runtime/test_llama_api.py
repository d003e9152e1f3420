"""The Llama class as an app developer uses it, with llama-cpp-python's shapes."""

import threading

import numpy as np
import pytest

from lamina import Llama
from lamina.llama import LlamaBusyError
from lamina.model_cache import fetch_model


@pytest.fixture(scope="module")
def llm():
    return Llama(
        str(fetch_model("smollm2-135m-instruct")), n_ctx=1024, n_threads=2, seed=1, logits_all=True, verbose=False
    )


def test_tokenize_detokenize_round_trip(llm):
    text = "Hello, world! ¿Qué tal? 你好 🙂"
    ids = llm.tokenize(text.encode())
    assert all(isinstance(i, int) for i in ids)
    assert llm.detokenize(ids).decode() == text
    # ChatML markers are one token each only with special=True
    assert len(llm.tokenize(b"<|im_start|>", special=True)) == 1
    assert len(llm.tokenize(b"<|im_start|>", special=False)) > 1


def test_eval_fills_scores_for_every_position(llm):
    llm.reset()
    ids = llm.tokenize(b"The quick brown fox jumps over the lazy dog")
    llm.eval(ids[:4])
    llm.eval(ids[4:])
    assert llm.n_tokens == len(ids)
    scores = llm.scores[: llm.n_tokens]
    assert scores.shape == (len(ids), llm.n_vocab())
    assert np.all(np.isfinite(scores)) and np.all(scores.std(axis=1) > 0)
    # teacher forcing: the model predicts "dog" after "the lazy" better than chance
    pos = len(ids) - 2
    assert np.argsort(-scores[pos])[:50].tolist().count(ids[pos + 1]) == 1


def test_create_completion_shape_and_greedy_determinism(llm):
    out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    choice = out["choices"][0]
    assert "Paris" in choice["text"]
    assert choice["finish_reason"] in ("stop", "length")
    assert out["usage"]["completion_tokens"] <= 8
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    assert llm("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"] == choice["text"]


def test_stop_strings_cut_the_text(llm):
    out = llm.create_completion("1, 2, 3, 4, 5,", max_tokens=32, temperature=0, stop=["8"])
    text = out["choices"][0]["text"]
    assert "8" not in text and "7" in text
    assert out["choices"][0]["finish_reason"] == "stop"


def test_streaming_equals_non_streaming(llm):
    full = llm.create_completion("Once upon a time", max_tokens=24, temperature=0.9, seed=5)
    chunks = list(llm.create_completion("Once upon a time", max_tokens=24, temperature=0.9, seed=5, stream=True))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]


def test_chat_completion_and_stream(llm):
    msgs = [{"role": "user", "content": "What is the capital of France? One word."}]
    out = llm.create_chat_completion(msgs, max_tokens=16, temperature=0)
    assert out["object"] == "chat.completion"
    msg = out["choices"][0]["message"]
    assert msg["role"] == "assistant" and "Paris" in msg["content"]
    chunks = list(llm.create_chat_completion(msgs, max_tokens=16, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == msg["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]


def test_prompt_longer_than_context_raises(llm):
    with pytest.raises(ValueError, match="context window"):
        llm.create_completion("word " * 2000, max_tokens=1)


def test_two_threads_get_consistent_results(llm):
    expected = llm.create_completion("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
    results, errors = [], []

    def worker():
        try:
            for _ in range(3):
                results.append(
                    llm.create_completion("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
                )
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [expected] * 6


def test_reentry_from_the_streaming_thread_raises(llm):
    stream = llm.create_completion("Hello", max_tokens=8, stream=True)
    next(stream)
    with pytest.raises(LlamaBusyError):
        llm.create_completion("Hello", max_tokens=2)
    stream.close()
    assert llm.create_completion("Hello", max_tokens=2, temperature=0)["choices"]
