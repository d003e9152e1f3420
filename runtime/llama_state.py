"""Llama.save_state / load_state with llama-cpp-python's LlamaState: what
eval() has evaluated (its sequence's KV cache, tokens, scores) and the seed,
so a program can snapshot a prompt and come back to it, or hand it to
another Llama of the same model and KV type.

llama_state is lamina's state format (runtime/engine/state.py): bound to
the model, the KV type and the LoRA adapters and scale (lora_path /
lora_scale) it was computed under, checksummed, and self-contained (its tokens, the
last logits and the seeds ride in it); the LlamaState's other fields are
llama-cpp-python's copies for its callers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lamina.engine.state import StateError, unpack

if TYPE_CHECKING:
    from lamina.llama import Llama


class LlamaState:
    """llama-cpp-python's LlamaState, field for field."""

    def __init__(
        self,
        input_ids: np.ndarray,
        scores: np.ndarray,
        n_tokens: int,
        llama_state: bytes,
        llama_state_size: int,
        seed: int,
    ) -> None:
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed


def save_state(llm: Llama) -> LlamaState:
    with llm._engine.exclusive() as ctx:
        llm._restore_shared(ctx)
        raw = list(llm._raw)
        last = llm.scores[len(raw) - 1 if llm.logits_all else 0] if raw else np.zeros(0, np.float32)
        data = ctx.save_seq(
            llm._raw_seq,
            tokens=raw,
            extra={"seed": int(llm._seed), "rng_seed": llm._rng_seed, "logits_all": llm.logits_all},
            arrays={"last_logits": last},
        )
    return LlamaState(
        input_ids=llm.input_ids.copy(),
        scores=llm._scores.copy(),
        n_tokens=len(raw),
        llama_state=data,
        llama_state_size=len(data),
        seed=llm._seed,
    )


def load_state(llm: Llama, state: LlamaState) -> None:
    """Checked whole (StateError naming what is wrong: another model or KV
    type, cut short, corrupted) before eval()'s sequence is replaced."""
    data = state.llama_state
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateError(f"LlamaState.llama_state must be bytes, got {type(data).__name__}")
    if state.llama_state_size != len(data):
        n = len(data)
        raise StateError(f"LlamaState: llama_state_size is {state.llama_state_size}, llama_state holds {n} bytes")
    with llm._engine.exclusive() as ctx:
        saved = unpack(ctx, data, "LlamaState", into=llm._raw_seq)  # before anything changes
        (seq,) = saved.sequences
        tokens = seq.tokens.tolist() if seq.tokens.size else [int(t) for t in state.input_ids[: seq.n_pos]]
        if len(tokens) != seq.n_pos or state.n_tokens != seq.n_pos:
            raise StateError(
                f"LlamaState: n_tokens is {state.n_tokens} and its cache holds {seq.n_pos} positions "
                f"({len(tokens)} tokens known)"
            )
        ctx.load_seq(data, llm._raw_seq, "LlamaState")
        llm._raw = tokens
        if llm._shared_slot is not None:
            llm._shared_slot.tokens = list(tokens)
    n = len(tokens)
    llm.input_ids[:] = 0
    llm.input_ids[:n] = tokens
    last = saved.arrays.get("last_logits")
    scores = np.asarray(state.scores, dtype=np.float32)
    if llm.logits_all:
        llm.scores[:] = 0.0
        if scores.ndim == 2 and scores.shape[0] >= n and scores.shape[1] == llm.n_vocab():
            llm.scores[:n] = scores[:n]
        elif n and last is not None and last.size:
            llm.scores[n - 1] = last
    elif last is not None and last.size:
        llm.scores[0] = last
    llm._seed = state.seed
    if "rng_seed" in saved.extra:  # None: a random seed per completion
        llm._rng_seed = saved.extra["rng_seed"]
