"""Embeddings from a causal model: the hidden states output_norm(x) of every
token of an input (Context.decode_embd, no output head), pooled into one
vector as llama.cpp's pooling types do, then L2-normalized (llama-server's
default embd_normalize=2).

    vec = embed_tokens(ctx, seq, tokens, "mean")   # [n_embd] float32

The input runs alone in one sequence of the context (cleared before and
after), in batches of the context's n_batch tokens: its tokens attend to each
other causally, exactly as a generation's prompt would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lamina.engine.context import Context, ContextError

# llama.cpp's enum llama_pooling_type, the values of `{arch}.pooling_type`
POOLING_BY_ID = {0: "none", 1: "mean", 2: "cls", 3: "last"}
POOLINGS = tuple(POOLING_BY_ID.values())
# a decoder LM's GGUF rarely names one; mean pooling is what llama-server users
# pass (--pooling mean) for an OpenAI-shaped endpoint that needs one vector
DEFAULT_POOLING = "mean"


def pooling_from_metadata(metadata: Mapping[str, object], arch: str) -> str:
    """The file's `{arch}.pooling_type` as a name, else DEFAULT_POOLING."""
    value = metadata.get(f"{arch}.pooling_type")
    if value is None:
        return DEFAULT_POOLING
    if not isinstance(value, int) or value not in POOLING_BY_ID:
        raise ContextError(
            f"{arch}.pooling_type = {value!r}: expected one of {sorted(POOLING_BY_ID)} "
            "(none, mean, cls, last); rank pooling needs a reranker head lamina does not run"
        )
    return POOLING_BY_ID[value]


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ContextError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    return pooling


def pool(hidden: np.ndarray, pooling: str) -> np.ndarray:
    """hidden [n_tokens, n_embd] -> [n_embd] (mean, cls: the first token,
    last), or hidden itself for "none" (one vector per token)."""
    if pooling == "mean":
        return hidden.mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "cls":
        return hidden[0].copy()
    if pooling == "last":
        return hidden[-1].copy()
    return hidden


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """Rows (or the vector) scaled to unit Euclidean length; a zero row stays zero."""
    norm = np.linalg.norm(v.astype(np.float64), axis=-1, keepdims=True)
    return (v / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def embed_tokens(ctx: Context, seq: int, tokens: Sequence[int], pooling: str, normalize: bool = True) -> np.ndarray:
    """One input's embedding: [n_embd], or [n_tokens, n_embd] for pooling "none"."""
    check_pooling(pooling)
    toks = np.asarray(tokens, dtype=np.int32)
    if toks.ndim != 1 or len(toks) == 0:
        raise ContextError("embedding input is empty: nothing to evaluate")
    if len(toks) > ctx.n_ctx_seq:
        raise ContextError(f"embedding input has {len(toks)} tokens, more than the context's {ctx.n_ctx_seq}")
    ctx.seq_rm(seq, 0)
    try:
        hidden = ctx.decode_run(toks, seq, "all", embd=True)  # [n_tokens, n_embd]: pooling reads every row
    finally:
        ctx.seq_rm(seq, 0)
    out = pool(hidden, pooling)
    return l2_normalize(out) if normalize else out
