"""Mirostat (Basu et al. 2021), versions 1 and 2, as llama.cpp's sampler runs
them (src/llama-sampler.cpp, llama_sampler_mirostat{,_v2}_apply): each step
truncates the distribution so that the surprise of the drawn token tracks a
target tau (bits), and moves the truncation threshold mu after every draw by
eta times the error. The state (mu) belongs to one generation; it starts at
2 * tau.

Both take logits already divided by the temperature (llama.cpp's chain with
mirostat is: logit bias, temperature, mirostat; lamina keeps the penalties
before the temperature, as llama-cpp-python does) and one uniform draw u in
[0, 1), and return (token id, new mu)."""

from __future__ import annotations

import math

import numpy as np

MIROSTAT_M = 100  # v1: tokens used to estimate the Zipf exponent (llama.cpp's m)


def _probs(logits: np.ndarray) -> np.ndarray:
    """f64 [n] softmax of the whole row, unsorted (-inf: 0)."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _top(probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ids sorted by descending probability (ties: lower id first), as a stable sort of the row would."""
    return ids[np.lexsort((ids, -probs[ids]))]


def _largest(probs: np.ndarray, k: int) -> np.ndarray:
    """The k most probable ids, most probable first, without sorting the whole row."""
    k = min(k, probs.size)
    ids = np.arange(probs.size) if k == probs.size else np.argpartition(-probs, k - 1)[:k]
    return _top(probs, ids)


def _draw(probs: np.ndarray, u: float) -> int:
    """Index of the token the uniform draw u lands on (inverse CDF)."""
    k = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
    return min(k, probs.size - 1)


def _update(mu: float, p: float, tau: float, eta: float) -> float:
    surprise = -math.log2(p)  # of the drawn token, in bits, within the truncated distribution
    return mu - eta * (surprise - tau)


def zipf_exponent(probs: np.ndarray, m: int = MIROSTAT_M) -> float:
    """s_hat: the least-squares Zipf exponent of the m most probable tokens
    (probs sorted descending), from the log ratios of neighbours."""
    n = min(m - 1, probs.size - 1)
    i = np.arange(n, dtype=np.float64)
    t = np.log((i + 2) / (i + 1))
    b = np.log(probs[:n] / probs[1 : n + 1])
    return float((t * b).sum() / (t * t).sum()) if n > 0 else math.nan


def mirostat_k(s_hat: float, mu: float, n_vocab: int) -> int:
    """v1's top-k: k = (eps * 2^mu / (1 - N^-eps))^(1/s_hat), eps = s_hat - 1, at least 1.
    (A flat head, s_hat ~ 1 or undefined, gives NaN: one token, as llama.cpp's
    int conversion of NaN ends up.)"""
    eps = s_hat - 1.0
    with np.errstate(all="ignore"):
        k = np.float64(eps * 2.0**mu) / (1.0 - np.float64(n_vocab) ** -eps)
        k = k ** (1.0 / s_hat)
    if not np.isfinite(k):
        return 1 if np.isnan(k) or k < 0 else n_vocab
    return max(int(k), 1)


def mirostat_v1(logits: np.ndarray, mu: float, tau: float, eta: float, n_vocab: int, u: float) -> tuple[int, float]:
    probs = _probs(logits)
    head = _largest(probs, MIROSTAT_M)  # the Zipf fit reads the m most probable only
    k = mirostat_k(zipf_exponent(probs[head[probs[head] > 0]]), mu, n_vocab)
    ids = head[:k] if k <= head.size else _largest(probs, k)
    ids = ids[probs[ids] > 0]
    kept = probs[ids] / probs[ids].sum()
    i = _draw(kept, u)
    return int(ids[i]), _update(mu, float(kept[i]), tau, eta)


def mirostat_v2(logits: np.ndarray, mu: float, tau: float, eta: float, u: float) -> tuple[int, float]:
    probs = _probs(logits)
    # the sorted head up to the first token whose surprise exceeds mu is every
    # token with -log2 p <= mu (at least the most probable one)
    with np.errstate(divide="ignore"):
        ids = np.flatnonzero(-np.log2(probs) <= mu)
    ids = _top(probs, ids) if ids.size else _largest(probs, 1)
    kept = probs[ids] / probs[ids].sum()
    i = _draw(kept, u)
    return int(ids[i]), _update(mu, float(kept[i]), tau, eta)
