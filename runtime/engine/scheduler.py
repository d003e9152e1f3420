"""The engine's decisions, and nothing else (it runs nothing): which waiting
requests enter which slot, and how many tokens each running request
evaluates in the next forward pass.

Policy, llama-server's: every decoding request gets its one token each step
(latency first); the batch's remaining tokens go to prompts in arrival order,
in chunks of at most prefill_chunk (llama.cpp's n_ubatch), so a long prompt
is spread over several steps instead of stalling everyone else's stream for
its whole prefill, and a cancelled one stops within a chunk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lamina.engine.request import Request, RequestState
from lamina.engine.slots import Placement, SlotTable


@dataclass
class StepPlan:
    decode: list[Request] = field(default_factory=list)  # one token each
    prefill: list[tuple[Request, int]] = field(default_factory=list)  # prompt tokens this step

    @property
    def n_tokens(self) -> int:
        return len(self.decode) + sum(n for _, n in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, n_batch: int, prefill_chunk: int) -> None:
        """n_batch: tokens per forward pass; prefill_chunk: the most prompt
        tokens one request evaluates in a step while others are decoding."""
        self.n_batch = n_batch
        self.prefill_chunk = min(prefill_chunk, n_batch)

    def admit(self, waiting: Sequence[Request], slots: SlotTable) -> list[tuple[Request, Placement]]:
        """Waiting requests, in arrival order, into the free slots."""
        placed = []
        for request in waiting:
            placement = slots.place(request.prompt)
            if placement is None:
                break
            slots.take(placement)
            placed.append((request, placement))
        return placed

    def plan(self, running: Sequence[Request]) -> StepPlan:
        step = StepPlan()
        budget = self.n_batch
        for r in running:
            if r.state is RequestState.DECODE and budget > 0:
                step.decode.append(r)
                budget -= 1
        chunk = self.prefill_chunk
        for r in running:
            if r.state is RequestState.PREFILL and budget > 0:
                n = min(r.prompt_left, chunk, budget)
                step.prefill.append((r, n))
                budget -= n
        return step
