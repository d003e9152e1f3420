"""Putting a finished folder into the shared cache (~/.cache/lamina) when
several test processes (pytest-xdist workers) may build the same one at once:
the first rename wins, the others keep the winner's (a folder is never
replaced or removed under a process that is reading it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish_dir(staged: Path, target: Path, complete: str | None = None) -> Path:
    """rename staged to target, whole or not at all; if another process got
    there first (target exists, holding `complete` when given), keep theirs"""
    try:
        os.replace(staged, target)
    except OSError:
        if not target.is_dir() or (complete is not None and not (target / complete).exists()):
            raise
        shutil.rmtree(staged, ignore_errors=True)
    return target
