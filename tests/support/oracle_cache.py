"""The outputs of the slow oracles (llama.cpp's converter and llama-quantize,
transformers on the real models), kept in ~/.cache/lamina/ref/<kind>/ under
a key of everything the output depends on: the bytes of every input file, the
oracle's pinned version and its arguments. A warm run compares lamina with
the same output the oracle gave on a cold one, without paying the oracle
again (a Python child importing torch, a full-model quantization); any change
of input, version or argument is another key, so nothing stale is reused.

Inputs are keyed by their name and content, not by their folder or time: the
tiny checkpoints are rebuilt into fresh temp folders every run, byte for byte
the same."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lamina.model_cache import cache_dir

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process per (path, size, mtime)"""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        _digests[memo] = h.hexdigest()
    return _digests[memo]


def _canonical(part: Any) -> Any:
    if isinstance(part, Path):  # its name too: llama.cpp's converter names a model after its folder
        if part.is_dir():
            files = {str(p.relative_to(part)): file_digest(p) for p in sorted(part.rglob("*")) if p.is_file()}
            return [part.name, files]
        return [part.name, file_digest(part)]
    if isinstance(part, (list, tuple)):
        return [_canonical(p) for p in part]
    if isinstance(part, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(part).tobytes()).hexdigest() + str(part.dtype) + str(part.shape)
    return part


def oracle_key(*parts: Any) -> str:
    """a key of the parts: files and folders by their bytes, the rest by value"""
    return hashlib.sha256(json.dumps([_canonical(p) for p in parts], sort_keys=True).encode()).hexdigest()[:24]


def _slot(kind: str, name: str) -> Path:
    folder = cache_dir() / "ref" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def cached_file(kind: str, name: str, key: str, make: Callable[[Path], None]) -> Path:
    """the file make(path) writes, made once per key (written to a temp name, then renamed)"""
    out = _slot(kind, f"{key}-{name}")
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
        try:
            make(tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def cached_array(kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """compute()'s array, computed once per key"""

    def make(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(compute()), allow_pickle=False)

    return np.load(cached_file(kind, "array.npy", key, make), allow_pickle=False)
