"""Token sampling, in llama.cpp's order: logit bias -> penalties -> top-k ->
typical -> top-p -> min-p -> temperature -> draw; with mirostat 1 or 2: logit
bias -> penalties -> temperature -> mirostat (lamina.sampling_mirostat), whose
truncation replaces top-k/typical/top-p/min-p as in llama.cpp's chain. Greedy
when temperature <= 0. A seeded sampler draws the same tokens for the same
logits, run after run."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import options
from lamina.sampling_mirostat import mirostat_v1, mirostat_v2


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # >= 1: off
    min_p: float = 0.05  # <= 0: off
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64  # how many recent tokens the penalties look at; -1: all
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added before everything else; -inf bans
    typical_p: float = 1.0  # locally typical sampling's mass; 1: off
    mirostat: int = 0  # 0 off, 1 Mirostat, 2 Mirostat 2.0
    mirostat_tau: float = 5.0  # target surprise, bits per token
    mirostat_eta: float = 0.1  # learning rate of mu

    def __post_init__(self) -> None:
        # the one validation of every front end (lamina.options); normalizes types too
        set_ = object.__setattr__
        set_(self, "temperature", options.temperature(self.temperature))
        set_(self, "top_k", options.top_k(self.top_k))
        set_(self, "top_p", options.top_p(self.top_p))
        set_(self, "min_p", options.probability(self.min_p, "min_p"))
        set_(self, "repeat_penalty", options.repeat_penalty(self.repeat_penalty))
        set_(self, "repeat_last_n", options.repeat_last_n(self.repeat_last_n))
        set_(self, "frequency_penalty", options.penalty(self.frequency_penalty, "frequency_penalty"))
        set_(self, "presence_penalty", options.penalty(self.presence_penalty, "presence_penalty"))
        set_(self, "typical_p", options.typical_p(self.typical_p))
        set_(self, "mirostat", options.mirostat(self.mirostat))
        set_(self, "mirostat_tau", options.mirostat_tau(self.mirostat_tau))
        set_(self, "mirostat_eta", options.mirostat_eta(self.mirostat_eta))
        bias = self.logit_bias
        set_(self, "logit_bias", options.logit_bias(dict(bias) if isinstance(bias, tuple) else bias))


def apply_logit_bias(logits: np.ndarray, p: SamplingParams) -> np.ndarray:
    """logits + bias for each biased token (llama.cpp's first sampler step)."""
    if not p.logit_bias:
        return logits
    ids, biases = _bias_arrays(p.logit_bias)
    if ids[-1] >= logits.size:
        raise options.OptionError(f"logit_bias token id {int(ids[-1])} is outside the vocabulary [0, {logits.size})")
    out = logits.copy()
    out[ids] += biases
    return out


@functools.lru_cache(maxsize=64)
def _bias_arrays(bias: tuple[tuple[int, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, biases) of a normalized logit_bias, built once, not once a token."""
    return np.array([t for t, _ in bias], dtype=np.int64), np.array([b for _, b in bias], dtype=np.float32)


def apply_penalties(logits: np.ndarray, history: Sequence[int], p: SamplingParams) -> np.ndarray:
    """llama.cpp's penalties: repeat (divide positive logits, multiply negative
    ones), then frequency and presence, over the last repeat_last_n tokens."""
    if p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0:
        return logits
    recent = history if p.repeat_last_n == -1 else history[len(history) - p.repeat_last_n :] if p.repeat_last_n else []
    if not len(recent):
        return logits
    counts = Counter(int(t) for t in recent)
    ids = np.fromiter(counts.keys(), dtype=np.int64)
    n = np.fromiter(counts.values(), dtype=np.float32)
    out = logits.copy()
    vals = out[ids]
    vals = np.where(vals <= 0, vals * p.repeat_penalty, vals / p.repeat_penalty)
    out[ids] = vals - n * p.frequency_penalty - p.presence_penalty
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def typical(ids: np.ndarray, vals: np.ndarray, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Locally typical sampling (Meister et al. 2022, llama.cpp's typical
    sampler): keep the tokens whose surprise -log p is closest to the
    entropy H, nearest first, until their probability passes `mass`.
    Returns the kept (ids, logits) by descending logit."""
    probs = _softmax(vals)
    with np.errstate(divide="ignore", invalid="ignore"):
        surprise = -np.log(probs)
        entropy = float(np.sum(np.where(probs > 0, probs * surprise, 0.0)))
    order = np.argsort(np.abs(surprise - entropy), kind="stable")
    over = np.flatnonzero(np.cumsum(probs[order]) > mass)
    keep = order[: int(over[0]) + 1 if over.size else order.size]
    keep = np.sort(keep)  # back to descending logit (vals came sorted)
    return ids[keep], vals[keep]


def candidates(logits: np.ndarray, p: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, their logits) that survive top-k, typical, top-p and min-p,
    sorted by descending logit. At least one token always survives."""
    ids = np.arange(logits.size)
    if 0 < p.top_k < logits.size:
        ids = np.argpartition(-logits, p.top_k - 1)[: p.top_k]
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    vals = logits[ids].astype(np.float64)
    if p.typical_p < 1.0:
        ids, vals = typical(ids, vals, p.typical_p)
    if p.top_p < 1.0:
        cum = np.cumsum(_softmax(vals))
        keep = int(np.searchsorted(cum, p.top_p)) + 1  # smallest prefix whose mass reaches top_p
        ids, vals = ids[:keep], vals[:keep]
    if p.min_p > 0.0:
        probs = _softmax(vals)
        keep = max(1, int(np.count_nonzero(probs >= p.min_p * probs[0])))
        ids, vals = ids[:keep], vals[:keep]
    return ids, vals


class Sampler:
    """Draws one token id from a row of logits f32 [n_vocab]."""

    def __init__(self, params: SamplingParams | None = None, seed: int | None = None):
        self.params = params or SamplingParams()
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.mu = 2.0 * self.params.mirostat_tau  # mirostat's state: this generation's threshold

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.mu = 2.0 * self.params.mirostat_tau

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        logits = apply_penalties(apply_logit_bias(np.asarray(logits, dtype=np.float32), p), history, p)
        if p.temperature <= 0.0:
            return int(np.argmax(logits))  # with mirostat too: llama.cpp's temperature 0 leaves one token
        if p.mirostat:
            return self._mirostat(logits)
        ids, vals = candidates(logits, p)
        probs = _softmax(vals / p.temperature)
        # inverse CDF with one uniform draw: the same seed gives the same token
        k = int(np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum(), side="right"))
        return int(ids[min(k, ids.size - 1)])

    def _mirostat(self, logits: np.ndarray) -> int:
        p = self.params
        scaled = logits.astype(np.float64) / p.temperature
        u = self._rng.random()
        if p.mirostat == 1:
            token, self.mu = mirostat_v1(scaled, self.mu, p.mirostat_tau, p.mirostat_eta, logits.size, u)
        else:
            token, self.mu = mirostat_v2(scaled, self.mu, p.mirostat_tau, p.mirostat_eta, u)
        return token
