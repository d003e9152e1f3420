"""The Llama class as an app developer uses it, with llama-cpp-python's shapes."""

import math
import threading

import numpy as np
import pytest

from lamina import Llama
from lamina.engine.context import ContextError, ContextSizeWarning
from lamina.errors import LaminaError
from lamina.llama import LlamaClosedError
from lamina.llama_params import UnsupportedParameterError
from lamina.model_cache import fetch_model
from lamina.options import OptionError


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


def test_a_call_from_the_streaming_thread_runs_beside_its_open_stream(llm):
    """a stream left open no longer holds the instance: the same thread's next
    call is decoded alongside it (it used to raise LlamaBusyError)"""
    stream = llm.create_completion("Hello", max_tokens=8, stream=True)
    next(stream)
    assert llm.create_completion("Hello", max_tokens=2, temperature=0)["choices"][0]["text"]
    stream.close()


# -- what a new user hit (issue 13) ---------------------------------------------


@pytest.fixture(scope="module")
def small():
    """n_ctx 256, one scores row: the plain constructor users call"""
    with Llama("smollm2-135m-instruct", n_ctx=256, n_threads=2, seed=3, verbose=False) as llm:
        yield llm


def test_known_model_names_work_in_the_library(small):
    assert small.model_path == str(fetch_model("smollm2-135m-instruct"))
    with Llama.from_pretrained("smollm2-135m-instruct", n_ctx=64, verbose=False) as again:
        assert again.model_path == small.model_path
    with pytest.raises(ValueError, match="not a known model.*smollm2-135m-instruct"):
        Llama.from_pretrained("someone/some-model-GGUF")


def test_a_directory_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LaminaError, match="is a directory; expected a GGUF file"):
        Llama(str(tmp_path), verbose=False)
    with pytest.raises(LaminaError, match="no such model file"):
        Llama(str(tmp_path / "nope.gguf"), verbose=False)


def test_sizes_metadata_and_scores_of_one_row(small):
    assert (small.n_ctx(), small.n_vocab(), small.n_embd()) == (256, 49152, 576)
    assert small.metadata["general.architecture"] == "llama"
    assert all(isinstance(v, str) for v in small.metadata.values())  # llama-cpp-python's shape
    # without logits_all only the last evaluated token's logits are kept
    assert small.scores.shape == (1, 49152)
    small.reset()
    small.eval(small.tokenize(b"The capital of France is"))
    assert np.isfinite(small.scores[0]).all() and small.scores[0].std() > 0
    assert small._scores.shape == (1, 49152)


def test_huge_n_ctx_is_refused_before_anything_is_allocated():
    """n_ctx=2**31-1 asks for tens of TB of KV cache: refused with sizes, not a MemoryError"""
    with pytest.raises(ContextError, match=r"n_ctx=2147483647 needs a .* GiB f16 KV cache"):
        Llama("smollm2-135m-instruct", n_ctx=2**31 - 1, verbose=False)


def test_logits_all_is_checked_against_memory(monkeypatch):
    monkeypatch.setattr("lamina.llama.available_memory", lambda: 2**30)
    with pytest.raises(ValueError, match=r"logits_all=True keeps n_ctx x n_vocab = 8192 x 49152 .*1\.5 GiB"):
        Llama("smollm2-135m-instruct", n_ctx=8192, logits_all=True, verbose=False)


def test_n_ctx_above_the_training_context_warns():
    with pytest.warns(ContextSizeWarning, match="above the model's training context"):
        from lamina.engine.context import Context, Model

        Context(Model.load(fetch_model("smollm2-135m-instruct"), n_threads=2), n_ctx=8192 * 2)


def test_gpu_layers_minus_one_means_every_layer():
    from lamina.engine.context import Context, Model

    model = Model.load(fetch_model("smollm2-135m-instruct"), n_threads=2)
    ctx = Context(model, n_ctx=64, gpu_layers=-1, device="cpu-standin")
    usage = ctx.device_usage()
    assert usage["device_layers"] == model.hparams.n_layer and usage["head_on_device"]
    with pytest.raises(ContextError, match=r"-1 \(all layers\)"):
        Context(model, n_ctx=64, gpu_layers=-2, device="cpu-standin")


def test_seed_minus_one_is_random_and_bad_seeds_name_the_parameter():
    with Llama("smollm2-135m-instruct", n_ctx=64, seed=-1, verbose=False) as llm:
        assert llm._rng_seed is None
        with pytest.raises(OptionError, match=r"seed must be in \[0, 4294967294\]"):
            llm.create_completion("Hi", max_tokens=1, seed=2**40)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": -1}, r"top_p must be in \(0, 1\]"),
        ({"min_p": 2}, r"min_p must be in \[0, 1\]"),
        ({"top_k": -5}, "top_k must be >= 0"),
        ({"repeat_penalty": 0}, "repeat_penalty must be > 0"),
    ],
)
def test_sampling_values_are_checked(small, kwargs, match):
    with pytest.raises(OptionError, match=match):
        small.create_completion("Hi", max_tokens=1, **kwargs)


def test_constructor_values_are_checked():
    with pytest.raises(OptionError, match=r"n_threads must be in \[1, \d+\]"):
        Llama("smollm2-135m-instruct", n_threads=500, verbose=False)
    with pytest.raises(OptionError, match="n_ctx must be 0"):
        Llama("smollm2-135m-instruct", n_ctx=-3, verbose=False)


def test_parameters_that_would_be_ignored_are_refused(small):
    with pytest.raises(UnsupportedParameterError, match=r"Llama\(lora_base='b.gguf'\) is not supported"):
        Llama("smollm2-135m-instruct", lora_path="a.gguf", lora_base="b.gguf", verbose=False)
    with pytest.raises(UnsupportedParameterError, match=r"Llama\(attention_type=1\) is not supported"):
        Llama("smollm2-135m-instruct", attention_type=1, verbose=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_ctxx'"):
        Llama("smollm2-135m-instruct", n_ctxx=64, verbose=False)
    with pytest.raises(UnsupportedParameterError, match="functions="):
        small.create_chat_completion([{"role": "user", "content": "Hi"}], functions=[{"name": "f"}])
    with pytest.raises(UnsupportedParameterError, match="tfs_z=0.5"):
        small.create_completion("Hi", max_tokens=1, tfs_z=0.5)
    # defaults spelled out, and speed-only settings, are fine
    assert small.create_completion("Hi", max_tokens=1, mirostat_mode=0, grammar=None, tfs_z=1.0)["choices"]
    with Llama("smollm2-135m-instruct", n_ctx=64, use_mmap=False, n_ubatch=32, flash_attn=True, verbose=False) as llm:
        assert llm.n_ctx() == 64


def test_logit_bias_forces_bans_and_is_checked(small):
    prompt = "The capital of France is"
    plain = small.create_completion(prompt, temperature=0, max_tokens=3)["choices"][0]["text"]
    first = small.tokenize(plain.encode(), add_bos=False)[0]
    banned = small.create_completion(prompt, temperature=0, max_tokens=3, logit_bias={first: -math.inf})
    assert not banned["choices"][0]["text"].startswith(small.detokenize([first]).decode())
    forced = small.tokenize(b" zebra", add_bos=False)[0]
    chat = small.create_chat_completion(
        [{"role": "user", "content": "Hi"}], temperature=0, max_tokens=1, logit_bias={str(forced): 100.0}
    )
    assert chat["choices"][0]["message"]["content"] == small.detokenize([forced]).decode()
    # a zero bias changes nothing
    assert (
        small.create_completion(prompt, temperature=0, max_tokens=3, logit_bias={first: 0})["choices"][0]["text"]
        == plain
    )
    for bad in ({small.n_vocab(): 1.0}, {-1: 1.0}, {"x": 1.0}, {1: float("nan")}, [1, 2]):
        with pytest.raises(ValueError, match="logit_bias"):
            small.create_completion(prompt, max_tokens=1, logit_bias=bad)


def test_close_and_the_context_manager():
    with Llama("smollm2-135m-instruct", n_ctx=64, verbose=False) as llm:
        assert llm.create_completion("Hi", max_tokens=2, temperature=0)["choices"]
    with pytest.raises(LlamaClosedError):
        llm.create_completion("Hi", max_tokens=2)
    llm.close()  # twice is fine
