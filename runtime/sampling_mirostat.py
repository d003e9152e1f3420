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


def _sorted_probs(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, probabilities) by descending logit; tokens at -inf left out."""
    ids = np.flatnonzero(np.isfinite(logits))
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    x = logits[ids].astype(np.float64)
    e = np.exp(x - x[0])
    return ids, e / e.sum()


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
    ids, probs = _sorted_probs(logits)
    k = mirostat_k(zipf_exponent(probs), mu, n_vocab)
    ids, probs = ids[:k], probs[:k] / probs[:k].sum()
    i = _draw(probs, u)
    return int(ids[i]), _update(mu, float(probs[i]), tau, eta)


def mirostat_v2(logits: np.ndarray, mu: float, tau: float, eta: float, u: float) -> tuple[int, float]:
    ids, probs = _sorted_probs(logits)
    # keep the head up to the first token whose surprise exceeds mu (at least one)
    with np.errstate(divide="ignore"):
        over = np.flatnonzero(-np.log2(probs) > mu)
    keep = max(1, int(over[0]) if over.size else probs.size)
    ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
    i = _draw(probs, u)
    return int(ids[i]), _update(mu, float(probs[i]), tau, eta)
