"""Slot placement (lamina.engine.slots): which sequence a prompt runs in and
what it reuses, on token lists alone."""

from __future__ import annotations

from lamina.engine.slots import MIN_COPY_GAIN, SlotTable

SYSTEM = list(range(1000, 1040))  # a 40-token system prompt every request shares


def run(table: SlotTable, prompt: list[int], reply: list[int]) -> tuple[int, int, int | None]:
    """Place, take, "generate", release: (slot, kept, copied from)."""
    p = table.place(prompt)
    assert p is not None
    src = None if p.copy_from is None else p.copy_from.seq
    slot = table.take(p)
    slot.tokens = prompt + reply
    table.release(slot)
    return slot.seq, p.keep, src


def test_prompts_sharing_a_system_prompt_each_keep_a_slot():
    """Four chats cycled over four slots: after the first round every prompt
    finds its whole self cached (before, each overwrote the last one's slot)."""
    table = SlotTable(4)
    prompts = [SYSTEM + [i, i + 1, i + 2] for i in range(4)]
    first = [run(table, p, [7, 8]) for p in prompts]
    assert sorted(s for s, _, _ in first) == [0, 1, 2, 3]
    assert [k for _, k, _ in first[1:]] == [len(SYSTEM)] * 3  # the system prompt, copied
    assert all(src is not None for _, _, src in first[1:])
    for p, (seq, _, _) in zip(prompts, first):
        again = run(table, p, [7, 8])
        assert again == (seq, len(p) - 1, None)


def test_the_next_turn_lands_in_its_own_slot():
    table = SlotTable(2)
    turn1 = SYSTEM + [1, 2]
    seq, _, _ = run(table, turn1, [3, 4])
    run(table, SYSTEM + [9], [5])  # another chat meanwhile
    turn2 = turn1 + [3, 4] + [5, 6]
    assert run(table, turn2, [7]) == (seq, len(turn1) + 2, None)


def test_a_short_gain_is_not_copied_and_busy_slots_are_never_targets():
    table = SlotTable(2)
    a = table.take(table.place(SYSTEM + [1]))  # busy from now on
    a.tokens = SYSTEM + [1]
    p = table.place(SYSTEM[: MIN_COPY_GAIN - 1] + [5, 6])
    assert p.slot is not a and p.copy_from is None and p.keep == 0
    p2 = table.place(SYSTEM + [2, 3])
    assert p2.slot is not a and p2.copy_from is a and p2.keep == len(SYSTEM)
    table.take(p2)
    assert table.place([1, 2, 3]) is None
