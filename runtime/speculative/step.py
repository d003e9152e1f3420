"""Speculation as the engine runs it: each step, the decoding requests that
speculate get drafts (appended to their one token in the same forward pass,
every drafted position's logits asked for), and after the pass each such
request verifies its rows, keeps the accepted prefix in its KV cache and
removes the rest (one seq_rm).

    spec = Speculative(LlamaPromptLookupDecoding(num_pred_tokens=10))
    request = engine.submit(prompt, sampler, speculative=spec)
    request.spec.drafted, request.spec.accepted      # tokens guessed / kept"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina.engine.context import ContextError
from lamina.sampling import Sampler
from lamina.speculative.draft import Draft, DraftJob, LlamaDraftFile, check_draft_range
from lamina.speculative.lookup import LlamaDraftModel, LlamaPromptLookupDecoding
from lamina.speculative.policy import DraftLength
from lamina.speculative.verify import SpeculativeError, Verdict, check_sampler, verify

DEFAULT_LOOKUP_MAX = 10  # llama-cpp-python's num_pred_tokens


@dataclass(frozen=True)
class Speculative:
    """How requests speculate. drafter: a LlamaDraftModel (prompt lookup, or
    any callable guessing tokens from the sequence's tokens) or a
    LlamaDraftFile (a small model). n_max / n_min: the most / fewest tokens
    one draft verifies (llama-server's speculative.n_max / n_min; None: the
    drafter's own). adaptive (the default): shorten drafts to what the
    measured acceptance rate pays for, a draft model's own cost counted
    (policy.py); False: always draft n_max (a draft model still stops
    where it is unsure, its p_min)."""

    drafter: LlamaDraftModel | LlamaDraftFile
    n_max: int | None = None
    n_min: int | None = None
    adaptive: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.drafter, (LlamaDraftModel, LlamaDraftFile)):
            raise SpeculativeError(
                f"draft_model must be a lamina.LlamaDraftModel (e.g. LlamaPromptLookupDecoding) or a "
                f"lamina.LlamaDraftFile, got {type(self.drafter).__name__}"
            )
        check_draft_range(self.limits[0], self.limits[1])

    @property
    def limits(self) -> tuple[int, int]:
        d = self.drafter
        if isinstance(d, LlamaDraftFile):
            default_max, default_min = d.n_max, d.n_min
        elif isinstance(d, LlamaPromptLookupDecoding):
            default_max, default_min = d.num_pred_tokens, 0
        else:
            default_max, default_min = DEFAULT_LOOKUP_MAX, 0
        return (default_max if self.n_max is None else self.n_max, default_min if self.n_min is None else self.n_min)

    def with_limits(self, n_max: int | None, n_min: int | None) -> Speculative:
        """The same drafter with a request's own bounds (llama-server's per-request speculative.n_max/n_min)."""
        return Speculative(
            self.drafter,
            n_max if n_max is not None else self.n_max,
            n_min if n_min is not None else self.n_min,
            self.adaptive,
        )

    def start(self, sampler: Sampler) -> SpecState:
        """A request's speculation state; refuses samplers verification cannot reproduce."""
        check_sampler(sampler)
        n_max, n_min = self.limits
        adaptive = True if self.adaptive is None else self.adaptive
        cost = self.drafter.cost if isinstance(self.drafter, LlamaDraftFile) else 0.0  # bound before start()
        seed = None if sampler.seed is None else [sampler.seed, 0x5EC]
        return SpecState(self, DraftLength(n_max, n_min, adaptive, cost), np.random.default_rng(seed))


@dataclass
class SpecState:
    config: Speculative
    length: DraftLength
    rng: np.random.Generator  # the draft model's draws (sampled drafts), apart from the sampler's
    drafted: int = 0  # tokens guessed and verified
    accepted: int = 0  # of those, kept
    steps: int = 0  # verification steps
    pending: Draft | None = field(default=None, repr=False)  # this step's draft

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class DraftRequest:
    """What the engine hands over per speculating request: its slot's
    sequence, the tokens so far (prompt and output), the most tokens the
    step's batch and the sequence's room leave, and its sampler."""

    state: SpecState
    seq: int
    history: list[int]
    room: int
    sampler: Sampler


def make_drafts(requests: Sequence[DraftRequest], budget: int) -> list[Draft | None]:
    """One draft per request (None or empty: decode one token), at most
    budget drafted tokens in all, batched per draft model."""
    out: list[Draft | None] = [None] * len(requests)
    by_file: dict[int, list[int]] = {}
    limits = []
    for i, r in enumerate(requests):
        n = min(r.state.length.next(), r.room, budget)
        limits.append(n)
        budget -= max(n, 0)
        if n <= 0:
            continue
        d = r.state.config.drafter
        if isinstance(d, LlamaDraftFile):
            by_file.setdefault(id(d), []).append(i)
        else:
            try:  # a user's drafter: its failure ends its request, not the engine's step
                guess = np.asarray(d(np.asarray(r.history, dtype=np.intc)), dtype=np.int64).reshape(-1)[:n]
            except Exception as e:
                error = SpeculativeError(f"draft_model {type(d).__name__} failed: {type(e).__name__}: {e}")
                out[i] = Draft([], None, error)
                continue
            out[i] = Draft([int(t) for t in guess], None)
    for idx in by_file.values():
        drafter = requests[idx[0]].state.config.drafter
        assert isinstance(drafter, LlamaDraftFile)
        jobs = [
            DraftJob(requests[i].seq, requests[i].history, limits[i], requests[i].sampler, requests[i].state.rng)
            for i in idx
        ]
        try:
            made = drafter.draft(jobs)
        except ContextError:  # the draft's own cache is full: these requests decode without drafts this step
            continue
        for i, one in zip(idx, made):
            out[i] = one
    for i, r in enumerate(requests):
        got = out[i]
        if got is None or got.error is not None:
            continue
        if len(got.tokens) < r.state.length.n_min:
            out[i] = got = Draft([], None, passes=got.passes)
        if not got.tokens:  # nothing to verify, but the draft passes were spent: the policy counts them
            r.state.length.update(0, 0, got.passes)
    return out


def check_draft(draft: Draft, n_vocab: int) -> None:
    bad = [t for t in draft.tokens if not 0 <= t < n_vocab]
    if bad:
        raise SpeculativeError(f"the draft model guessed token {bad[0]}, outside the vocabulary [0, {n_vocab})")


def verify_step(state: SpecState, sampler: Sampler, rows: np.ndarray, draft: Draft, history: Sequence[int]) -> Verdict:
    """Verify one request's draft against its rows [len(draft) + 1, n_vocab] and record the outcome."""
    verdict = verify(sampler, rows, draft.tokens, draft.q, history)
    state.length.update(len(draft.tokens), len(verdict.accepted), draft.passes or None)
    state.drafted += len(draft.tokens)
    state.accepted += len(verdict.accepted)
    state.steps += 1
    return verdict
