"""llama-server's slot actions: POST /slots/{id}?action=save|restore|erase.

save writes the slot's cache and tokens (lamina's state format,
runtime/engine/state.py: bound to the model and KV type, checksummed; temp
file + rename) to {"filename": NAME} under --slot-save-path; restore loads
such a file into a slot, where the next prompt starting with its tokens
reuses them; erase forgets a slot's cache. NAME is a plain file name: no
folders, no path that leads out of the directory (symlinks included). A
busy slot is waited for, as llama-server defers the action, up to --timeout.
Without --slot-save-path the endpoint answers 501, as llama-server does."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from lamina.engine.context import ContextError
from lamina.engine.state import StateError, read_file, write_file
from lamina.server.errors import APIError
from lamina.server.service import Service

ACTIONS = ("save", "restore", "erase")
POLL_SECONDS = 0.05


def slot_file(directory: Path, name: object) -> Path:
    """NAME inside directory, or a 400 naming why not"""
    if not isinstance(name, str) or not name:
        raise APIError(400, "Invalid filename: expected a non-empty string", param="filename")
    bad = (
        len(name.encode("utf-8", "surrogatepass")) > 255
        or any(c in name for c in "/\\\0:")
        or name.startswith(".")
        or name != name.strip()
    )
    if bad:
        raise APIError(
            400,
            f"Invalid filename {name!r}: a plain file name is expected (no folders, no leading dot)",
            param="filename",
        )
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(path) != root:
        raise APIError(400, f"Invalid filename {name!r}: it leads outside --slot-save-path", param="filename")
    return Path(path)


def router(service: Service) -> APIRouter:
    r = APIRouter()

    @r.post("/slots/{id_slot}")
    def slot_action(id_slot: str, request: Request, action: str = "", body: dict[str, Any] | None = None):
        directory = service.config.slot_save_path
        if directory is None:
            raise APIError(
                501, "This server does not support slots action. Start it with `--slot-save-path`", code="not_supported"
            )
        session = service.require()
        slots = session.engine.slots.slots
        try:
            index = int(id_slot)
        except ValueError:
            index = -1
        if not 0 <= index < len(slots):
            raise APIError(400, f"Invalid slot ID {id_slot!r}: expected 0 .. {len(slots) - 1}", param="id_slot")
        if action not in ACTIONS:
            raise APIError(400, f"Invalid action {action!r}: expected one of {', '.join(ACTIONS)}", param="action")
        path = None if action == "erase" else slot_file(Path(directory), (body or {}).get("filename"))
        deadline = time.monotonic() + service.config.timeout
        while True:
            with session.engine.exclusive() as ctx:
                slot = slots[index]
                if not slot.busy:  # no step runs while we hold the context, so it stays free
                    return _act(ctx, slot, index, action, path, (body or {}).get("filename"))
            if time.monotonic() > deadline:
                raise APIError(504, f"slot {index} stayed busy past --timeout", code="timeout")
            time.sleep(POLL_SECONDS)

    return r


def _act(ctx: Any, slot: Any, index: int, action: str, path: Path | None, name: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    if action == "erase":
        n = len(slot.tokens)
        ctx.seq_rm(slot.seq, 0)
        slot.tokens = []
        return {"id_slot": index, "n_erased": n}
    assert path is not None
    if action == "save":
        n = min(len(slot.tokens), ctx.seq_len(slot.seq))
        if n < ctx.seq_len(slot.seq):  # positions past the tokens the slot knows (an unfinished step's)
            ctx.seq_rm(slot.seq, n)
        slot.tokens = slot.tokens[:n]
        data = ctx.save_seq(slot.seq, tokens=slot.tokens)
        write_file(path, data)
        ms = (time.perf_counter() - t0) * 1e3
        return {"id_slot": index, "filename": name, "n_saved": n, "n_written": len(data), "timings": {"save_ms": ms}}
    if not path.is_file():
        raise APIError(400, f"Unable to restore slot: no file {name!r} in --slot-save-path", param="filename")
    data = read_file(path)
    try:
        saved = ctx.load_seq(data, slot.seq, name)
    except (StateError, ContextError) as e:  # foreign, damaged, or no room for it
        raise APIError(400, f"Unable to restore slot: {e}", param="filename") from None
    seq = saved.sequences[0]
    if seq.tokens.size != seq.n_pos:
        ctx.seq_rm(slot.seq, 0)
        slot.tokens = []
        raise APIError(400, f"Unable to restore slot: {name!r} keeps no tokens", param="filename")
    slot.tokens = seq.tokens.tolist()
    ms = (time.perf_counter() - t0) * 1e3
    return {
        "id_slot": index,
        "filename": name,
        "n_restored": seq.n_pos,
        "n_read": len(data),
        "timings": {"restore_ms": ms},
    }
