"""Which sequence of the KV cache a request runs in, chosen to reuse what is
cached: each slot remembers the tokens its sequence holds, and a new request
takes the free slot whose cache it would destroy least (the previous turn of
the same chat lands back in its own slot) with the longest cached prefix of
any slot, copied when it is another's (a shared system prompt is computed
once: the copy shares the cache blocks, it costs neither memory nor time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# a prefix copied from another slot must beat the best free slot's by this
# many tokens: below that, evaluating the difference is about as cheap
MIN_COPY_GAIN = 16


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class Slot:
    seq: int  # the context's sequence id
    tokens: list[int] = field(default_factory=list)  # what the sequence's KV cache holds, in order
    busy: bool = False
    last_used: int = 0  # step counter at release: the least recently used free slot is evicted first


@dataclass(frozen=True)
class Placement:
    slot: Slot
    keep: int  # positions of the slot to keep (the rest is removed)
    copy_from: Slot | None  # copy keep positions from this slot first (None: the slot's own)


class SlotTable:
    def __init__(self, n_slots: int) -> None:
        self.slots = [Slot(seq) for seq in range(n_slots)]
        self._clock = 0

    def free(self) -> list[Slot]:
        return [s for s in self.slots if not s.busy]

    def place(self, prompt: Sequence[int]) -> Placement | None:
        """Where a prompt should run, or None when every slot is busy. At least
        the last prompt token is always evaluated (its logits start the reply).

        The prompt goes to the free slot whose cache it would destroy least
        (the fewest cached tokens past the common prefix: its own previous
        turn, else an empty or least recently used slot), and takes the
        longest cached prefix of any slot there, copied when it is another
        slot's (shared blocks: free). So prompts that share only a system
        prompt each keep a slot of their own instead of overwriting one
        another (llama-server's LRU with a similarity threshold)."""
        free = self.free()
        if not free:
            return None
        limit = len(prompt) - 1
        match = {id(s): min(common_prefix(s.tokens, prompt), limit) for s in self.slots}
        target = min(free, key=lambda s: (len(s.tokens) - match[id(s)], -match[id(s)], s.last_used))
        donor = max(self.slots, key=lambda s: match[id(s)])
        own_keep, donor_keep = match[id(target)], match[id(donor)]
        if donor is not target and donor_keep >= own_keep + MIN_COPY_GAIN:
            return Placement(target, donor_keep, donor)
        return Placement(target, own_keep, None)

    def take(self, placement: Placement) -> Slot:
        slot = placement.slot
        source = placement.copy_from.tokens if placement.copy_from is not None else slot.tokens
        slot.tokens = list(source[: placement.keep])
        slot.busy = True
        return slot

    def release(self, slot: Slot) -> None:
        self._clock += 1
        slot.busy = False
        slot.last_used = self._clock
