"""lamina run --prompt-cache FILE (llama.cpp's flag): the evaluated prompt's
state is saved in FILE, and a later run whose prompt starts with the same
tokens loads it into the slot the prompt runs in, so the engine's prefix
reuse evaluates only the rest. --prompt-cache-all saves the reply's tokens
too. A FILE of another model or KV type, or a damaged one, is a one-line
error (lamina.engine.state's typed errors), never a silent recompute."""

from __future__ import annotations

from pathlib import Path

from lamina.engine.slots import common_prefix
from lamina.engine.state import StateError, read_file, write_file
from lamina.generation import Session


def restore(gen: Session, path: Path, prompt: list[int]) -> int:
    """Load FILE, when it exists, into slot 0; returns the prompt tokens it covers."""
    if not path.exists():
        return 0
    slot = gen.engine.slots.slots[0]
    with gen.engine.exclusive() as ctx:
        saved = ctx.load_seq(read_file(path), slot.seq, str(path))
        tokens = saved.sequences[0].tokens.tolist()
        if len(tokens) != saved.sequences[0].n_pos:
            ctx.seq_rm(slot.seq, 0)
            raise StateError(f"{path}: the state keeps no tokens, so no prompt can be matched against it")
        slot.tokens = tokens
    return common_prefix(tokens, prompt)


def save(gen: Session, path: Path, n_prompt: int, save_all: bool) -> int:
    """FILE becomes slot 0's state: the prompt's positions (save_all: the reply's
    too); returns the tokens saved."""
    slot = gen.engine.slots.slots[0]
    with gen.engine.exclusive() as ctx:
        n = min(len(slot.tokens), ctx.seq_len(slot.seq))
        if not save_all:
            n = min(n, n_prompt)
        if n < ctx.seq_len(slot.seq):
            ctx.seq_rm(slot.seq, n)
        slot.tokens = slot.tokens[:n]
        data = ctx.save_seq(slot.seq, tokens=slot.tokens)
    write_file(path, data)
    return n
