"""Importance-matrix files, as llama.cpp writes and reads them.

GGUF (llama-imatrix's default, tools/imatrix/imatrix.cpp `save_imatrix`):
  general.type = "imatrix", imatrix.datasets (string array), imatrix.chunk_count
  and imatrix.chunk_size (u32); per weight, in name order, `<weight>.in_sum2`
  F32 [n_mat][n] (the sums of x*x of the weight's input over the tokens seen,
  one row per expert) then `<weight>.counts` F32 [n_mat][1] (those tokens).
  No general.architecture.
Legacy `.dat` (`save_imatrix_legacy`, read by common/imatrix-loader.cpp):
  i32 n_entries; per entry i32 len, name, i32 ncall, i32 nval, f32[nval]
  holding (sum / count) * ncall; then optionally i32 chunk count, i32 len and
  the dataset name.

`Imatrix.importance(name)` is what llama-quantize's `load_imatrix` hands the
quantizer: in_sum2 / count per expert (1 where an expert saw no token), or for
a legacy file the values / ncall.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lamina.convert.errors import ImatrixError
from lamina.convert.writer import atomic_output
from lamina.errors import GGUFError
from lamina.gguf.reader import GGUFFile, TensorInfo

_SUM2, _COUNTS = ".in_sum2", ".counts"


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # f32 [n_mat, n]: GGUF sums of x*x; legacy: [1, nval] mean * ncall
    counts: np.ndarray  # i64 [n_mat]: tokens per expert (legacy: [ncall])


@dataclass
class Imatrix:
    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    path: str = ""  # where it was read from ("" when computed)

    def importance(self, name: str) -> np.ndarray | None:
        """f32 [n_mat * n] quant weights for weight `name` (llama-quantize's
        load_imatrix), None if the file has no entry for it."""
        e = self.entries.get(name)
        if e is None:
            return None
        sums = e.sums.astype(np.float32, copy=False)
        if self.legacy:
            ncall = int(e.counts[0]) if e.counts.size else 0
            return (sums / np.float32(ncall) if ncall > 0 else sums).ravel()
        out = np.ones_like(sums)
        for j, c in enumerate(e.counts):
            if c > 0:
                out[j] = sums[j] / np.float32(c)
        return out.ravel()


# ----------------------------------------------------------------------------
# reading


def read_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """A GGUF or legacy importance matrix; ImatrixError naming the file and field."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ImatrixError(p, f"cannot read: {err.strerror or err}") from None
    im = _read_gguf(p) if magic == b"GGUF" else _read_legacy(p)
    if not im.entries:
        raise ImatrixError(p, "no importance-matrix entries", field="tensors")
    for name, e in im.entries.items():
        if not np.isfinite(e.sums).all():
            raise ImatrixError(p, "holds NaN/Inf sums", field=name + (_SUM2 if not im.legacy else ""))
    im.path = str(p)
    return im


def _read_gguf(p: Path) -> Imatrix:
    try:
        g = GGUFFile(p)
    except GGUFError as e:
        raise ImatrixError(p, f"not a readable GGUF imatrix ({e})") from None
    gtype = g.get(gguf.Keys.General.TYPE)
    if gtype is not None and gtype != gguf.GGUFType.IMATRIX:
        raise ImatrixError(p, f"expected 'imatrix', got {gtype!r} (a model file?)", field="general.type")
    keys = (gguf.Keys.IMatrix.DATASETS, gguf.Keys.IMatrix.CHUNK_COUNT, gguf.Keys.IMatrix.CHUNK_SIZE)
    missing = [k for k in keys if g.get(k) is None]
    if missing:
        # llama-quantize refuses such a file too ("missing imatrix metadata")
        raise ImatrixError(p, "missing (llama-imatrix writes it, llama-quantize needs it)", field=missing[0])
    datasets = g.get(keys[0])
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise ImatrixError(p, "expected an array of strings", field=keys[0])
    pairs: dict[str, dict[str, TensorInfo]] = {}
    for info in g.tensors:
        for suffix in (_SUM2, _COUNTS):
            if info.name.endswith(suffix):
                pairs.setdefault(info.name[: -len(suffix)], {})[suffix] = info
    entries: dict[str, ImatrixEntry] = {}
    for name in sorted(pairs):
        sums_t, counts_t = pairs[name].get(_SUM2), pairs[name].get(_COUNTS)
        if sums_t is None or counts_t is None:
            lacking = name + (_SUM2 if sums_t is None else _COUNTS)
            raise ImatrixError(p, "missing: every weight needs both in_sum2 and counts", field=lacking)
        for t in (sums_t, counts_t):
            if t.ggml_type != gguf.GGMLQuantizationType.F32:
                raise ImatrixError(p, f"must be F32, got {t.ggml_type.name}", field=t.name)
        sums = g.tensor_bytes(sums_t.name).view(np.float32).ravel()
        counts = g.tensor_bytes(counts_t.name).view(np.float32).ravel()
        if counts.size < 1 or sums.size % counts.size:
            raise ImatrixError(p, f"{sums.size} sums do not split into {counts.size} experts", field=name + _COUNTS)
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise ImatrixError(p, "counts must be finite and >= 0", field=name + _COUNTS)
        entries[name] = ImatrixEntry(
            sums.reshape(counts.size, -1).copy(),
            np.floor(counts.astype(np.float64) + 0.5).astype(np.int64),  # std::lround of non-negative values
        )
    return Imatrix(entries, list(datasets), int(g.get(keys[1])), int(g.get(keys[2])))


def _read_legacy(p: Path) -> Imatrix:
    data = p.read_bytes()
    at = 0

    def take(n: int, what: str) -> bytes:
        nonlocal at
        if at + n > len(data):
            raise ImatrixError(
                p, f"ends at byte {len(data)}, {n} more needed at {at} (not a GGUF or legacy imatrix?)", field=what
            )
        at += n
        return data[at - n : at]

    def i32(what: str) -> int:
        return int(struct.unpack("<i", take(4, what))[0])

    n_entries = i32("n_entries")
    if n_entries < 1:
        raise ImatrixError(p, f"expected >= 1 entries, got {n_entries}", field="n_entries")
    entries: dict[str, ImatrixEntry] = {}
    for i in range(n_entries):
        n = i32(f"entry {i} name length")
        if n < 1 or n > 4096:
            raise ImatrixError(p, f"name length {n} is not in [1, 4096]", field=f"entry {i}")
        try:
            name = take(n, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise ImatrixError(p, "name is not UTF-8", field=f"entry {i}") from None
        ncall = i32(f"{name} ncall")
        nval = i32(f"{name} nval")
        if nval < 1:
            raise ImatrixError(p, f"expected >= 1 values, got {nval}", field=f"{name} nval")
        sums = np.frombuffer(take(4 * nval, f"{name} values"), dtype="<f4").astype(np.float32)
        entries[name] = ImatrixEntry(sums.reshape(1, nval), np.array([ncall], dtype=np.int64))
    im = Imatrix(entries, legacy=True)
    if at + 4 <= len(data):  # the optional trailer: chunk count, dataset
        im.chunk_count = i32("chunk count")
        if at + 4 <= len(data):
            n = i32("dataset length")
            if n > 0:
                im.datasets.append(take(n, "dataset").decode("utf-8", errors="replace"))
    return im


# ----------------------------------------------------------------------------
# writing


class _Writer(gguf.GGUFWriter):
    """gguf-py refuses an empty array; llama-imatrix writes imatrix.datasets
    empty when it had no text file (a merge of other files)."""

    def _pack_val(self, val: Any, vtype: gguf.GGUFValueType, add_vtype: bool, sub_type: Any = None) -> bytes:
        if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type or gguf.GGUFValueType.STRING) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def write_imatrix(path: str | os.PathLike[str], im: Imatrix) -> None:
    """llama-imatrix's GGUF layout, through gguf-py, to a temp file renamed onto path."""
    out = Path(path)
    with atomic_output(out) as tmp:
        w = _Writer(tmp, arch="")
        try:
            w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes none
            w.add_type(gguf.GGUFType.IMATRIX)
            w.add_key_value(
                gguf.Keys.IMatrix.DATASETS,
                list(im.datasets),
                gguf.GGUFValueType.ARRAY,
                sub_type=gguf.GGUFValueType.STRING,
            )
            w.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, im.chunk_count)
            w.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, im.chunk_size)
            for name in sorted(im.entries):
                e = im.entries[name]
                sums, counts = np.ascontiguousarray(e.sums, dtype=np.float32), e.counts.astype(np.float32)
                # ggml drops trailing dims of 1: one matrix gives 1-D tensors, n experts [n_exp][n] and [n_exp][1]
                one = sums.shape[0] == 1
                w.add_tensor(name + _SUM2, sums.ravel() if one else sums)
                w.add_tensor(name + _COUNTS, counts if one else counts.reshape(-1, 1))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()


def write_imatrix_legacy(path: str | os.PathLike[str], im: Imatrix) -> None:
    """llama-imatrix's `--output-format dat` (save_imatrix_legacy), for tools
    that read only that: per entry (sum / count) * ncall with ncall = its
    largest count over chunk_size, rounded up (an expert that saw no token
    stores 1 * ncall); entries without any count are left out."""
    if im.legacy or im.chunk_size < 1:
        raise ImatrixError(path, "a legacy file is written from sums and counts with a chunk size (a GGUF imatrix)")
    names = sorted(n for n, e in im.entries.items() if e.counts.size and e.counts.any())
    out = [struct.pack("<i", len(names))]
    for name in names:
        e = im.entries[name]
        raw = name.encode("utf-8")
        ncall = (int(e.counts.max()) + im.chunk_size - 1) // im.chunk_size
        sums = np.ascontiguousarray(e.sums, dtype=np.float32).reshape(e.counts.size, -1)
        counts = e.counts.astype(np.float32)[:, None]
        vals = np.where(counts == 0, np.float32(1), sums / np.where(counts == 0, np.float32(1), counts))
        vals = (vals * np.float32(ncall)).astype("<f4")
        out += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, vals.size), vals.tobytes()]
    dataset = (im.datasets[-1] if im.datasets else "").encode("utf-8")
    most = max((int(e.counts.max()) for e in im.entries.values() if e.counts.size), default=0)
    out += [struct.pack("<ii", most // im.chunk_size, len(dataset)), dataset]
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(b"".join(out))
