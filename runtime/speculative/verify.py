"""Verification of drafted tokens against the target model's logits: the
speculative-sampling rule (Leviathan et al. 2023, Chen et al. 2023), which
leaves the distribution of the output exactly the target sampler's.

For a drafted token d proposed from the draft distribution q (a point mass
for prompt lookup and for greedy drafts), with p the target's sampling
distribution at that position:

    accept d with probability min(1, p(d) / q(d))
    else draw from norm(max(0, p - q))

At temperature 0 p is a point mass at the target's greedy token, so a draft
is accepted exactly when it equals that token: the output is the same token
for token as without speculation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from lamina.errors import LaminaError
from lamina.sampling import Sampler, SamplingParams, apply_logit_bias, apply_penalties, candidates

# the SamplingParams fields whose distribution target_distribution reproduces;
# any other field (a sampler added later) must stay at its default
_SUPPORTED_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
)


class SpeculativeError(LaminaError, ValueError):
    """A speculative-decoding setting, or a combination with it, that cannot run."""


def check_sampler(sampler: Sampler) -> None:
    """Refuse a sampler whose distribution verification cannot reproduce:
    another sampler class (mirostat keeps state between tokens) or a
    SamplingParams field beyond the standard chain set away from its default."""
    if type(sampler) is not Sampler:
        raise SpeculativeError(
            f"speculative decoding cannot be combined with {type(sampler).__name__} (e.g. mirostat): "
            "it verifies drafts against the standard sampler chain only"
        )
    params = sampler.params
    known = {f: getattr(params, f) for f in _SUPPORTED_FIELDS}
    base = SamplingParams(**known)
    if base != params:
        other = [
            f.name
            for f in dataclasses.fields(params)
            if f.name not in _SUPPORTED_FIELDS and getattr(params, f.name) != getattr(base, f.name)
        ]
        raise SpeculativeError(
            f"speculative decoding cannot be combined with {', '.join(other) or 'these sampling settings'}"
        )


def target_distribution(params: SamplingParams, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
    """The probabilities [n_vocab] (float64) Sampler(params) draws one token
    from for these logits f32 [n_vocab]: bias, penalties, top-k/top-p/min-p,
    temperature (> 0), in lamina.sampling's order."""
    if params.temperature <= 0.0:
        raise SpeculativeError("target_distribution: temperature 0 is greedy, a point mass")
    logits = apply_penalties(apply_logit_bias(np.asarray(logits, dtype=np.float32), params), history, params)
    ids, vals = candidates(logits, params)
    z = vals / params.temperature
    e = np.exp(z - z.max())
    out = np.zeros(logits.size, dtype=np.float64)
    out[ids] = e / e.sum()
    return out


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token from probs [n] (not necessarily normalized), inverse CDF with one uniform."""
    cum = np.cumsum(probs)
    k = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return min(k, probs.size - 1)


def accept_or_resample(p: np.ndarray, q: np.ndarray | None, token: int, rng: np.random.Generator) -> tuple[bool, int]:
    """The rule for one drafted token: (True, token) if accepted, else
    (False, a token drawn from norm(max(0, p - q))). p, q: probabilities
    [n_vocab]; q None: a point mass at token (the draft was deterministic)."""
    q_t = 1.0 if q is None else float(q[token])
    if q_t <= 0.0:
        raise SpeculativeError(f"drafted token {token} has probability 0 under its own draft distribution")
    if rng.random() * q_t < p[token]:  # u < p/q, without dividing
        return True, token
    if q is None:
        residual = p.copy()
        residual[token] = 0.0
    else:
        residual = np.maximum(p - q, 0.0)
    if not residual.sum() > 0.0:  # p <= q everywhere means p == q: rejection had probability 0
        residual = p
    return False, draw(residual, rng)


@dataclasses.dataclass
class Verdict:
    """What one verification step produced: the drafted tokens accepted (a
    prefix of the draft) and the token sampled after them (the correction
    at the first rejection, or the bonus token when all were accepted)."""

    accepted: list[int]
    next_token: int


def verify(
    sampler: Sampler,
    rows: np.ndarray,
    draft: Sequence[int],
    q: Sequence[np.ndarray | None] | None,
    history: Sequence[int],
) -> Verdict:
    """rows f32 [len(draft) + 1, n_vocab]: the target's logits after the last
    accepted token and after each drafted token; q: the draft distribution
    of each drafted token (None: point masses); history: the tokens before
    the draft (what the penalties look back on)."""
    hist = list(history)
    accepted: list[int] = []
    greedy = sampler.params.temperature <= 0.0
    for i, d in enumerate(draft):
        if greedy:  # the sampler itself: bit for bit the token decoding without drafts picks
            token = sampler(rows[i], hist)
            ok = token == d
        else:
            p = target_distribution(sampler.params, rows[i], hist)
            ok, token = accept_or_resample(p, None if q is None else q[i], int(d), sampler._rng)
        if not ok:
            return Verdict(accepted, int(token))
        accepted.append(int(d))
        hist.append(int(d))
    return Verdict(accepted, int(sampler(rows[len(draft)], hist)))
