"""How llama-perplexity cuts a text into chunks and scores a token, shared by
perplexity (lamina.eval.perplexity) and KL-divergence (lamina.eval.kld)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lamina.errors import LaminaError

ROWS_PER_PASS = 64  # logits rows processed at once (bounds the temporaries)


class PerplexityError(LaminaError, ValueError):
    """The text, settings or a KL-divergence base file cannot be used."""


class LogitsProvider(Protocol):
    """Logits of a fresh sequence: tokens [n] -> f32 [n - first, n_vocab],
    the rows for positions first .. n-1 (earlier rows need not be computed)."""

    n_vocab: int

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray: ...


# ----------------------------------------------------------------------------
# chunking


def n_scored(n_ctx: int) -> int:
    """Tokens scored per chunk: the second half minus the last position."""
    return n_ctx - 1 - n_ctx // 2


def plan_chunks(
    n_tokens: int,
    n_ctx: int,
    n_chunks: int | None = None,
    task: str = "evaluate perplexity",
    error: type[Exception] = PerplexityError,
) -> int:
    """Number of chunks llama-perplexity (and llama-imatrix, which cuts its
    text the same way: task and error name it) would evaluate, or a clear error."""
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise error(f"context size must be an integer >= 4, got {n_ctx!r}")
    if n_chunks is not None and n_chunks < 1:
        raise error(f"--chunks must be >= 1, got {n_chunks}")
    if n_tokens < 2 * n_ctx:
        raise error(
            f"you need at least {2 * n_ctx} tokens to {task} with a context of "
            f"{n_ctx}; the text tokenizes to only {n_tokens} tokens (use a longer text or a "
            f"smaller -c)"
        )
    n_max = n_tokens // n_ctx
    return n_max if n_chunks is None else min(n_chunks, n_max)


def chunk_tokens(tokens: np.ndarray, i: int, n_ctx: int, bos_id: int | None) -> np.ndarray:
    """The tokens evaluated for chunk i: a copy, first one replaced by BOS when bos_id is set."""
    chunk = np.array(tokens[i * n_ctx : (i + 1) * n_ctx], dtype=np.int32)
    if bos_id is not None:
        chunk[0] = bos_id
    return chunk


# ----------------------------------------------------------------------------
# per-row math (float32 like perplexity.cpp, sums in float64)


def _log_softmax_parts(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max [n] f32, log(sum exp(x - max)) [n] (f64), argmax [n]."""
    imax = np.argmax(logits, axis=1)
    mx = logits[np.arange(len(logits)), imax]
    sum_exp = np.exp(logits - mx[:, None]).sum(axis=1, dtype=np.float64)
    return mx, np.log(sum_exp), imax


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, f64 [n]."""
    logits = np.asarray(logits, dtype=np.float32)
    out = np.empty(len(logits), dtype=np.float64)
    for r0 in range(0, len(logits), ROWS_PER_PASS):
        x = logits[r0 : r0 + ROWS_PER_PASS]
        mx, lse, _ = _log_softmax_parts(x)
        tgt = x[np.arange(len(x)), targets[r0 : r0 + ROWS_PER_PASS]]
        out[r0 : r0 + len(x)] = mx.astype(np.float64) + lse - tgt.astype(np.float64)
    return out


def _provider_rows(provider: LogitsProvider, chunk: np.ndarray, first: int) -> np.ndarray:
    rows = np.asarray(provider(chunk, first), dtype=np.float32)
    expected = (len(chunk) - first, provider.n_vocab)
    if rows.shape != expected:
        raise PerplexityError(f"logits provider returned shape {rows.shape}, expected {expected}")
    return rows
