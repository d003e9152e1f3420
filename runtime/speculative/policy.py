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
(p_min). For a draft model the policy keeps two running rates instead,
how often a draft pass is sure (yields a token) and how often a drafted
token is right (accepted), and drafts the length k whose expected tokens
per unit of time beat plain decoding by MARGIN:
(1 + E[accepted]) / (1 + verify(E[drafted]) + draft_cost * E[passes]),
verify(k) being COST per column for the first two and COST_LONG for the
rest (the many-column kernels: 1 + 8 columns cost 2.2-2.8 single-token
passes on SmolLM2 and Qwen2.5-0.5B, f16, Q4_0, Q4_1 and Q4_K_M alike),
with k = 0 (plain decoding) where none does. Its probes cost more than a
lookup's (the draft first catches up with every token decoded meanwhile:
~2 target passes per probe), so each probe that does not pay makes the
wait before the next four times longer, up to PROBE_MAX steps. SmolLM2
Q4_0 drafting for its f16 (draft_cost 0.33) is sure and right on code and
drafts long runs; on free text it is unsure after a token or two and stops."""

from __future__ import annotations

COST = 0.4  # one more verified column, in single-token forward passes
MIN_RATE = 0.5  # below this running acceptance rate, no drafts (but probes)
PROBE_EVERY = 8
PROBE_MAX = 256  # a draft model's longest wait between probes
DECAY = 0.8  # weight of the past in the running acceptance rate
PRIOR = 0.6  # the rate assumed before anything was verified
START = 4  # the first draft's length (at most n_max)
# a draft model's
COST_LONG = 0.2  # a verified column past the second
MARGIN = 0.05  # drafting must promise this much more speed than plain decoding
MODEL_DECAY = 0.95  # weight of the past in its sure and right rates (one update per pass / token)
SURE, RIGHT = 0.9, 0.95  # its rates assumed before anything was verified


class DraftLength:
    """n_max / n_min: the draft's bounds; adaptive: follow the measured
    acceptance (else always n_max); draft_cost: one draft forward pass in
    target passes (0: a drafter that runs no model, such as prompt lookup)."""

    def __init__(self, n_max: int, n_min: int = 0, adaptive: bool = True, draft_cost: float = 0.0) -> None:
        self.n_max, self.n_min, self.adaptive = n_max, n_min, adaptive
        self.draft_cost = draft_cost
        self.rate = PRIOR
        self.sure, self.right = SURE, RIGHT
        self.k = min(START, n_max)
        self._idle = 0
        self._every = PROBE_EVERY  # steps between probes

    def next(self) -> int:
        """The draft length for this step (0: decode one token without drafting)."""
        if not self.adaptive:
            return self.n_max
        k = self._model_length() if self.draft_cost > 0 else (self.k if self.rate >= MIN_RATE else 0)
        if k > 0:
            self._idle, self._every = 0, PROBE_EVERY
            return max(k, self.n_min)
        self._idle += 1
        if self._idle < self._every:
            return 0
        self._idle = 0
        if self.draft_cost == 0:
            return max(1, self.n_min)  # a lookup probe: one token
        # a draft model's probe pays its catch-up anyway, so it drafts a run; the next one waits longer
        self._every = min(4 * self._every, PROBE_MAX)
        return max(self.n_max, self.n_min)

    def _model_length(self) -> int:
        """The draft model's length with the best expected speed-up, 0 if none beats 1 + MARGIN."""
        best, best_k = 1.0 + MARGIN, 0
        accepted = drafted = passes = 0.0
        reach = 1.0  # the chance that pass i runs (every earlier one was sure)
        for k in range(1, self.n_max + 1):
            passes += reach
            drafted += reach * self.sure
            accepted += (self.sure * self.right) ** k
            reach *= self.sure
            verify = COST * min(drafted, 2.0) + COST_LONG * max(0.0, drafted - 2.0)
            speed = (1.0 + accepted) / (1.0 + verify + self.draft_cost * passes)
            if speed > best:
                best, best_k = speed, k
        return best_k

    def update(self, drafted: int, accepted: int, passes: int | None = None) -> None:
        """One drafting step: drafted tokens verified (0: the draft model was
        unsure at once), the accepted prefix of them, and the draft model's
        forward passes spent (None: no model ran)."""
        verdicts = [1.0] * accepted + [0.0] * (accepted < drafted)  # up to the first rejection
        for ok in verdicts:
            self.rate = DECAY * self.rate + (1.0 - DECAY) * ok
        if passes:
            for ok in verdicts:
                self.right = MODEL_DECAY * self.right + (1.0 - MODEL_DECAY) * ok
            for sure in [1.0] * drafted + [0.0] * (passes - drafted):
                self.sure = MODEL_DECAY * self.sure + (1.0 - MODEL_DECAY) * sure
        if drafted and accepted == drafted:
            self.k = min(self.n_max, max(1, 2 * self.k))
        elif drafted:
            self.k = max(1, accepted + 1)
