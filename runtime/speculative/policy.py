"""How many tokens to draft for a request: as many as are likely to pay.

Verifying k drafted tokens costs one forward pass of k + 1 columns, about
1 + COST * k single-token passes (SmolLM2 Q4_1 on 2 threads: 1 column 9 ms,
2: 12, 4: 18.5, 8: 33), so a drafted token pays only if it is accepted with
probability above ~COST. Acceptance comes in runs (the output copies a
stretch of the prompt, then writes its own words), so the length follows
the runs, as Hugging Face's assisted generation does: it doubles after a
draft accepted whole and drops to what was accepted plus one after a
rejection. Where the running acceptance rate falls below MIN_RATE (COST
with a margin: near it drafting is a wash, and a busy machine's noise
decides) nothing is drafted, except a one-token probe every PROBE_EVERY steps so a rate that
recovers (the output starts quoting the prompt) is noticed: prompt lookup
costs a free-form reply little and drafts long runs while copying.

A draft model costs more: each of its forward passes is draft_cost target
passes (its weight bytes over the target's: decode reads every weight
once), whether it yields a token or stops there because it is unsure
(p_min). So the rate counts draft passes, not tokens (a pass that drafted
nothing or a rejected token is a miss), and must clear MIN_RATE +
draft_cost: SmolLM2 Q4_0 drafting for its f16 (draft_cost 0.31) agrees on
69% of free-text tokens, under the 0.81 it needs, so on free text it stops
drafting instead of running at 0.74x."""

from __future__ import annotations

COST = 0.4  # one more verified column, in single-token forward passes
MIN_RATE = 0.5  # below this running acceptance rate, no drafts (but probes)
PROBE_EVERY = 8
DECAY = 0.8  # weight of the past in the running acceptance rate
# a draft model's: its bar sits near its rate, so a short memory's noise would stop
# it often (each stop costs PROBE_EVERY plain steps); its rate follows the kind of
# text, not copied runs, so it changes slowly anyway
DECAY_MODEL = 0.95
PRIOR = 0.6  # the rate assumed before anything was verified
START = 4  # the first draft's length (at most n_max)


class DraftLength:
    """n_max / n_min: the draft's bounds; adaptive: follow the measured rate
    (else always n_max); draft_cost: one draft forward pass in target passes
    (0 for drafters that run no model, such as prompt lookup)."""

    def __init__(self, n_max: int, n_min: int = 0, adaptive: bool = True, draft_cost: float = 0.0) -> None:
        self.n_max, self.n_min, self.adaptive = n_max, n_min, adaptive
        self.min_rate = MIN_RATE + draft_cost
        self.decay = DECAY_MODEL if draft_cost > 0 else DECAY
        self.rate = max(PRIOR, self.min_rate)  # a first draft is always tried
        self.k = min(START, n_max)
        self._idle = 0

    def next(self) -> int:
        """The draft length for this step (0: decode one token without drafting)."""
        if not self.adaptive:
            return self.n_max
        if self.rate < self.min_rate:
            self._idle += 1
            if self._idle < PROBE_EVERY:
                return 0
            self._idle = 0
            return max(1, self.n_min)
        return max(self.k, self.n_min)

    def update(self, drafted: int, accepted: int, passes: int | None = None) -> None:
        """One verification: the accepted prefix, then the first rejection if
        any, then the draft passes that yielded no token (passes: the draft
        model's forward passes for this draft; None: one per drafted token)."""
        misses = (accepted < drafted) + max(0, (passes or 0) - drafted)
        for ok in [1.0] * accepted + [0.0] * misses:
            self.rate = self.decay * self.rate + (1.0 - self.decay) * ok
        if drafted and accepted == drafted:
            self.k = min(self.n_max, max(1, 2 * self.k))
        elif drafted:
            self.k = max(1, accepted + 1)
