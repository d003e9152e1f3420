"""Llama.save_state / load_state (lamina.llama_state) on a real model
(SmolLM2-135M): eval, save, continue; come back and continue again gives the
same scores bit for bit, in the same Llama and in another one."""

import pickle

import numpy as np
import pytest

from lamina import Llama
from lamina.engine.state import StateError, StateMismatchError
from lamina.model_cache import fetch_model

TEXT = b"The quick brown fox jumps over the lazy dog, and then it runs into the forest to find"


@pytest.fixture(scope="module")
def path():
    return str(fetch_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def llm(path):
    return Llama(path, n_ctx=256, n_threads=2, seed=7, logits_all=True, verbose=False)


def test_load_state_continues_as_if_never_stopped(llm, path):
    ids = llm.tokenize(TEXT)
    head, tail = ids[:9], ids[9:]
    llm.reset()
    llm.eval(head)
    state = llm.save_state()
    assert state.n_tokens == len(head) and state.llama_state_size == len(state.llama_state)
    assert state.seed == 7 and np.array_equal(state.input_ids[: len(head)], head)
    llm.eval(tail)
    want = llm.scores[: len(ids)].copy()
    llm.reset()
    llm.eval(llm.tokenize(b"Something else entirely, to overwrite the cache"))
    llm.load_state(state)
    assert llm.n_tokens == len(head) and np.array_equal(llm.scores[: len(head)], want[: len(head)])
    llm.eval(tail)
    assert np.array_equal(llm.scores[: len(ids)], want)
    # another Llama of the same model, not logits_all, through pickle (how apps keep LlamaStates)
    with Llama(path, n_ctx=128, n_threads=2, verbose=False) as other:
        other.load_state(pickle.loads(pickle.dumps(state)))
        assert other.n_tokens == len(head) and np.array_equal(other.scores[0], want[len(head) - 1])
        other.eval(tail)
        assert np.array_equal(other.scores[0], want[-1])
        out = other.create_completion(TEXT.decode(), max_tokens=4, temperature=0)  # completions still run
        assert out["usage"]["completion_tokens"] > 0


def test_load_state_refuses_another_kv_type_and_damage(llm, path):
    llm.reset()
    llm.eval(llm.tokenize(TEXT)[:5])
    state = llm.save_state()
    with Llama(path, n_ctx=128, n_threads=2, kv_type="q8_0", verbose=False) as q8:
        q8.eval([1, 2, 3])
        with pytest.raises(StateMismatchError, match="kv_type"):
            q8.load_state(state)
        assert q8.n_tokens == 3
    bad = pickle.loads(pickle.dumps(state))
    bad.llama_state = bytearray(state.llama_state)
    bad.llama_state[len(bad.llama_state) // 2] ^= 4
    with pytest.raises(StateError, match="checksum"):
        llm.load_state(bad)
    bad.llama_state = state.llama_state[:-10]
    with pytest.raises(StateError, match="llama_state_size"):
        llm.load_state(bad)
    assert llm.n_tokens == 5
