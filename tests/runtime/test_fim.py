"""Fill-in-the-middle (`suffix`) on Qwen2.5-Coder, whose vocabulary has
<|fim_prefix|> & co: the prompt is token for token llama.cpp's infill prompt
(llama-cpp-python's vocab calls in a child process), and greedy output fills
the hole with code; a model without FIM tokens refuses suffix."""

import pytest

from lamina import Llama
from lamina.fim import FimError, fim_tokens, infill_tokens
from lamina.model_cache import fetch_model
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_infill

PREFIX = "def add(a, b):\n    return"
SUFFIX = "\n\nprint(add(2, 3))\n"
TRICKY = "\n# <|fim_middle|> in the text stays text\n"


@pytest.fixture(scope="module")
def coder():
    with Llama("qwen2.5-coder-0.5b", n_ctx=256, n_threads=2, seed=1, verbose=False) as llm:
        yield llm


@pytest.mark.skipif(not have_llama_cpp(), reason="llama-cpp-python is the oracle of the infill prompt")
def test_the_infill_prompt_is_llama_cpps(coder):
    ref = llama_cpp_infill(fetch_model("qwen2.5-coder-0.5b"), PREFIX, SUFFIX + TRICKY)
    fim = fim_tokens(coder._model.native.gguf.metadata, coder.tokenizer_)
    assert [fim.pre, fim.suf, fim.mid] == ref["fim"]
    assert infill_tokens(coder.tokenizer_, fim, PREFIX, SUFFIX + TRICKY) == ref["psm"]
    assert infill_tokens(coder.tokenizer_, fim, PREFIX, SUFFIX + TRICKY, spm=True) == ref["spm"]
    # and a middle ends where llama.cpp's would: <|endoftext|>, and the FIM pad/repo/file-separator tokens
    assert sorted(coder.tokenizer_.eot_ids) == ref["eog"]


def test_greedy_infill_fills_the_hole_with_code(coder):
    out = coder.create_completion(PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0)
    choice = out["choices"][0]
    assert choice["text"].strip().startswith("a + b"), choice
    assert choice["finish_reason"] == "stop"  # the model ends the middle (<|endoftext|>)
    # the same model without suffix just continues the prefix: suffix changed the prompt
    fim = fim_tokens(coder._model.native.gguf.metadata, coder.tokenizer_)
    n_prompt = len(infill_tokens(coder.tokenizer_, fim, PREFIX, SUFFIX))
    assert out["usage"]["prompt_tokens"] == n_prompt
    # echo gives prefix + middle; streaming gives the same middle
    echoed = coder.create_completion(PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0, echo=True)
    assert echoed["choices"][0]["text"] == PREFIX + choice["text"]
    streamed = "".join(
        c["choices"][0]["text"]
        for c in coder.create_completion(PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0, stream=True)
    )
    assert streamed == choice["text"]


def test_spm_infill_order_is_used():
    with Llama("qwen2.5-coder-0.5b", n_ctx=128, n_threads=2, spm_infill=True, verbose=False) as llm:
        out = llm.create_completion(PREFIX, suffix=SUFFIX, max_tokens=1, temperature=0)
        fim = fim_tokens(llm._model.native.gguf.metadata, llm.tokenizer_)
        assert out["usage"]["prompt_tokens"] == len(infill_tokens(llm.tokenizer_, fim, PREFIX, SUFFIX, spm=True))


def test_a_model_without_fim_tokens_refuses_suffix():
    with (
        Llama("smollm2-135m-instruct", n_ctx=64, n_threads=2, verbose=False) as llm,
        pytest.raises(FimError, match="suffix: fill-in-the-middle needs a model with FIM tokens"),
    ):
        llm.create_completion("def f():", suffix="\nf()\n", max_tokens=4)
