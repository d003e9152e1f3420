"""Saved context state: the bytes of one or more sequences' KV cache, bound
to the model and cache type they came from (llama.cpp's llama_state_* /
llama_state_seq_*, in a format of lamina's own).

Format, version 2 (integers little-endian):

    magic      8 bytes  b"LAMINAST"
    version    u32      2
    header_len u32      bytes of the header that follows
    header     JSON     {"model": {"arch", "identity", "n_layer", "n_head_kv", "head_dim",
                                   "n_vocab", "file"},
                         "kv_type": "f16", "row_bytes": int, "n_ctx": int, "n_ctx_seq": int,
                         "rope_long": bool (LongRoPE's long factors in use),
                         "loras": [{"file": str, "sha256": str}, ...] (the LoRA adapters
                                  the context applied, in order),
                         "sequences": [{"seq": int, "n_pos": int, "n_tokens": int,
                                        "kv_bytes": int,
                                        "lora_scales": [float per adapter]}, ...],
                         "arrays": [{"name", "dtype", "shape"}, ...],
                         "extra": {...}}
    per sequence, in header order:
               tokens   int32 [n_tokens] (n_tokens is n_pos, or 0 when the caller kept none)
               kv       kv_bytes (lamina.h lm_context_seq_state_get: per layer, keys then
                        values of positions 0..n_pos-1, rows in kv_type)
    per array, in header order: its bytes, C order
    checksum   32 bytes sha256 of everything before it

`identity` is a sha256 over the architecture, every tensor's name, shape and
type, and the first and last 4 KiB of each tensor's data: two files with the
same structure and other weights differ there, and hashing whole multi-GB
files on every save is avoided. A state is refused (a StateError subclass
naming what differs) when it is not one (magic), of another version, cut
short, corrupted (checksum), or of another model, KV type or row size; only
then do the native copies see it, with sizes checked again there.

LoRA adapters change every cached key and value, so a state records the
adapters (sha256 of each one's tensors and alpha: LoraAdapter.content_hash;
the file for messages) and, per sequence, the scales its cache was computed
under. It loads only into a context with the same adapters, in the same
order, into a sequence that runs at the same scales (LoraSet.seq_scales);
anything else is a StateMismatchError naming the adapter or the scale.
llama.cpp's states record no adapters (the caller must restore under the
same ones); refusing here turns a silently different continuation into an
error. Version 1 (before adapters were recorded; states with adapters were
refused then) reads as a state without adapters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import LaminaError

MAGIC = b"LAMINAST"
VERSION = 2
_READS = (1, 2)  # 1: no "loras" / "lora_scales" (no adapters)
_PREFIX = struct.Struct("<8sII")
_DIGEST = 32
_SAMPLE = 4096


class StateError(LaminaError, ValueError):
    """A saved state that cannot be loaded here."""


class StateFormatError(StateError):
    """Not a lamina state, or a version this lamina does not read."""


class StateCorruptError(StateError):
    """The checksum does not match: the bytes changed after they were written."""


class StateTruncatedError(StateCorruptError):
    """Fewer bytes than the header announces: a cut-short file or buffer."""


class StateMismatchError(StateError):
    """A valid state of another model, KV type or shape. `field`, `expected`
    (this context's) and `found` (the state's) name what differs."""

    def __init__(self, what: str, field_name: str, expected: object, found: object) -> None:
        self.field, self.expected, self.found = field_name, expected, found
        super().__init__(f"{what}: the state's {field_name} is {found!r}, this context's is {expected!r}")


@dataclass
class SavedSequence:
    """One sequence of a state: its positions' cache rows and, when kept, their tokens."""

    seq: int
    n_pos: int
    tokens: np.ndarray  # int32 [n_pos], or [0] when the saver kept none
    kv: memoryview = field(repr=False)
    lora_scales: tuple[float, ...] = ()  # one per adapter of the state's context


@dataclass
class SavedState:
    sequences: list[SavedSequence]
    arrays: dict[str, np.ndarray]
    extra: dict[str, Any]


def model_identity(model: Any) -> str:
    """sha256 hex of the model's structure and a sample of every tensor (module doc); cached on the model."""
    cached = getattr(model, "_state_identity", None)
    if cached is not None:
        return str(cached)
    gguf = model.native.gguf
    h = hashlib.sha256(model.hparams.arch.encode())
    for t in gguf.tensors:
        h.update(f"\n{t.name}:{','.join(map(str, t.ne))}:{int(t.ggml_type)}:{t.nbytes}".encode())
        raw = gguf.tensor_bytes(t.name).reshape(-1)
        h.update(raw[:_SAMPLE].tobytes())
        h.update(raw[-_SAMPLE:].tobytes())
    model._state_identity = h.hexdigest()
    return str(model._state_identity)


def _model_header(model: Any) -> dict[str, Any]:
    hp = model.hparams
    return {
        "arch": hp.arch,
        "identity": model_identity(model),
        "n_layer": hp.n_layer,
        "n_head_kv": hp.n_head_kv,
        "head_dim": hp.head_dim,
        "n_vocab": hp.n_vocab,
        "file": os.path.basename(model.path),
    }


def pack(
    ctx: Any,
    sequences: list[tuple[int, int, Sequence[int] | np.ndarray | None, bytes]],
    arrays: dict[str, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The state bytes of ctx's sequences: (seq id, positions, tokens or None,
    kv bytes of Context.seq_state_kv) each; arrays (numeric, any shape) and extra (JSON)
    ride along for the caller (Llama's scores and seed)."""
    row = ctx.kv_row_bytes
    loras = _loras(ctx)
    parts: list[bytes] = []
    seq_headers = []
    for seq, n_pos, tokens, kv in sequences:
        toks = np.zeros(0, np.int32) if tokens is None else np.ascontiguousarray(tokens, dtype="<i4")
        if toks.size not in (0, n_pos):
            raise StateError(f"sequence {seq}: {toks.size} tokens for {n_pos} cached positions")
        scales = list(loras.seq_scales(int(seq))) if loras is not None else []
        seq_headers.append(
            {
                "seq": int(seq),
                "n_pos": int(n_pos),
                "n_tokens": int(toks.size),
                "kv_bytes": len(kv),
                "lora_scales": scales,
            }
        )
        parts += [toks.tobytes(), bytes(kv)]
    array_headers = []
    for name, a in (arrays or {}).items():
        arr = np.ascontiguousarray(a)
        if arr.dtype.kind not in "biuf":
            raise StateError(f"array {name!r}: dtype {arr.dtype} is not numeric")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        array_headers.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        parts.append(arr.tobytes())
    header = {
        "model": _model_header(ctx.model),
        "kv_type": ctx.kv_type,
        "row_bytes": row,
        "n_ctx": ctx.n_ctx,
        "n_ctx_seq": ctx.n_ctx_seq,
        "rope_long": _rope_long(ctx),
        "loras": _lora_header(loras),
        "sequences": seq_headers,
        "arrays": array_headers,
        "extra": extra or {},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    h = hashlib.sha256()
    out = [_PREFIX.pack(MAGIC, VERSION, len(head)), head, *parts]
    for p in out:
        h.update(p)
    out.append(h.digest())
    return b"".join(out)


def unpack(ctx: Any, data: bytes | bytearray | memoryview, what: str = "state", into: int | None = None) -> SavedState:
    """The state in data, checked whole against ctx (its model, kv_type, row
    size, n_ctx_seq, LoRA adapters) before anything is returned; `what` names
    it in errors (a file name). Each sequence's adapter scales must be those
    of sequence `into` of ctx (where it is going), or of its own id when into
    is None (a whole-context load)."""
    buf = memoryview(data).cast("B")
    if len(buf) < _PREFIX.size:
        raise StateTruncatedError(f"{what}: {len(buf)} bytes, shorter than a state's {_PREFIX.size}-byte prefix")
    magic, version, head_len = _PREFIX.unpack_from(buf)
    if magic != MAGIC:
        raise StateFormatError(f"{what}: not a lamina state (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version not in _READS:
        reads = " and ".join(map(str, _READS))
        raise StateFormatError(f"{what}: state format version {version}; this lamina reads versions {reads}")
    end_head = _PREFIX.size + head_len
    if end_head + _DIGEST > len(buf):
        raise StateTruncatedError(f"{what}: the header announces {head_len} bytes and the state has {len(buf)} in all")
    header = _parse_header(buf[_PREFIX.size : end_head], what)
    if header is not None and version == 1:  # written before adapters were recorded: none were loaded
        header = _as_version_2(header)
    expected_len = _total_len(header, end_head, what) if header is not None else None
    if expected_len is not None and expected_len != len(buf):
        kind = StateTruncatedError if expected_len > len(buf) else StateCorruptError
        raise kind(f"{what}: the header announces {expected_len} bytes and the state has {len(buf)}")
    if hashlib.sha256(buf[:-_DIGEST]).digest() != bytes(buf[-_DIGEST:]):
        raise StateCorruptError(f"{what}: checksum mismatch (the bytes changed after the state was written)")
    if header is None or expected_len is None:  # cannot be: the checksum covers the header
        raise StateCorruptError(f"{what}: the header is not valid")
    _check_binding(ctx, header, what, into)
    pos = end_head
    seqs = []
    for s in header["sequences"]:
        toks = np.frombuffer(buf, dtype="<i4", count=s["n_tokens"], offset=pos).astype(np.int32)
        pos += 4 * s["n_tokens"]
        kv = buf[pos : pos + s["kv_bytes"]]
        seqs.append(SavedSequence(s["seq"], s["n_pos"], toks, kv, tuple(map(float, s["lora_scales"]))))
        pos += s["kv_bytes"]
    arrays = {}
    for a in header["arrays"]:
        dt = np.dtype(a["dtype"])
        n = int(np.prod(a["shape"], dtype=np.int64))
        arrays[a["name"]] = np.frombuffer(buf, dtype=dt, count=n, offset=pos).reshape(a["shape"]).copy()
        pos += n * dt.itemsize
    return SavedState(seqs, arrays, dict(header["extra"]))


def _parse_header(raw: memoryview, what: str) -> dict[str, Any] | None:
    """the header, or None when it does not parse (then the checksum says why)"""
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _as_version_2(header: dict[str, Any]) -> dict[str, Any]:
    """a version 1 header as version 2 reads it: no adapters, no scales"""
    out = dict(header, loras=[])
    if isinstance(header.get("sequences"), list):
        out["sequences"] = [dict(s, lora_scales=[]) if isinstance(s, dict) else s for s in header["sequences"]]
    return out


def _total_len(header: dict[str, Any], start: int, what: str) -> int | None:
    """bytes the header announces in all, or None when its fields are not well-formed"""

    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def scale(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf")

    try:
        if not isinstance(header["model"], dict) or not isinstance(header["extra"], dict):
            return None
        loras = header["loras"]
        if not isinstance(loras, list) or not all(
            isinstance(a, dict) and isinstance(a["file"], str) and isinstance(a["sha256"], str) for a in loras
        ):
            return None
        total = start + _DIGEST
        for s in header["sequences"]:
            fields = (s["seq"], s["n_pos"], s["n_tokens"], s["kv_bytes"])
            if not all(count(v) for v in fields) or s["n_tokens"] not in (0, s["n_pos"]):
                return None
            scales = s["lora_scales"]
            if not isinstance(scales, list) or len(scales) != len(loras) or not all(map(scale, scales)):
                return None
            total += 4 * s["n_tokens"] + s["kv_bytes"]
        for a in header["arrays"]:
            dt = np.dtype(a["dtype"])
            if dt.kind not in "biuf" or not isinstance(a["name"], str) or not all(count(d) for d in a["shape"]):
                return None
            total += int(np.prod(a["shape"], dtype=np.int64)) * dt.itemsize
        return int(total)
    except (KeyError, TypeError, ValueError):
        return None


def _loras(ctx: Any) -> Any:
    """ctx's lamina.engine.lora.LoraSet, or None when it applies no adapters"""
    loras = getattr(ctx, "_loras", None)
    return loras if loras is not None and loras.adapters else None


def _lora_header(loras: Any) -> list[dict[str, str]]:
    return [{"file": a.path, "sha256": a.content_hash()} for a in loras.adapters] if loras is not None else []


def _describe(adapters: list[dict[str, str]]) -> str:
    return ", ".join(f"{a['file']} (sha256 {a['sha256'][:16]})" for a in adapters) or "none"


def _check_loras(ctx: Any, header: dict[str, Any], what: str, into: int | None) -> None:
    """the same adapters (by content, in order), and each sequence's scales
    those of the sequence it goes into: a cache computed under other adapters
    or scales would continue as another model would"""
    loras = _loras(ctx)
    mine, theirs = _lora_header(loras), header["loras"]
    if len(mine) != len(theirs):
        raise StateMismatchError(
            f"{what} was saved under other LoRA adapters", "LoRA adapters", _describe(mine), _describe(theirs)
        )
    for i, (m, t) in enumerate(zip(mine, theirs, strict=True)):
        if m["sha256"] != t["sha256"]:
            raise StateMismatchError(
                f"{what} was saved under another LoRA adapter {i}",
                f"LoRA adapter {i}",
                _describe([m]),
                _describe([t]),
            )
    if loras is None:
        return
    for s in header["sequences"]:
        target = s["seq"] if into is None else into
        want = loras.seq_scales(target)
        for i, (w, got) in enumerate(zip(want, s["lora_scales"], strict=True)):
            if float(got) != w:
                raise StateMismatchError(
                    f"{what}: sequence {s['seq']} was computed under another scale of LoRA adapter {i} "
                    f"({mine[i]['file']}) than sequence {target} runs at",
                    f"LoRA adapter {i} scale",
                    w,
                    float(got),
                )


def _check_binding(ctx: Any, header: dict[str, Any], what: str, into: int | None = None) -> None:
    mine = _model_header(ctx.model)
    theirs = header["model"]
    for key in ("arch", "n_layer", "n_head_kv", "head_dim", "n_vocab", "identity"):
        if theirs.get(key) != mine[key]:
            source = f" (saved from {theirs.get('file')!r})" if theirs.get("file") else ""
            raise StateMismatchError(f"{what}{source} is of another model", f"model {key}", mine[key], theirs.get(key))
    if header.get("kv_type") != ctx.kv_type:
        raise StateMismatchError(f"{what} has another KV cache type", "kv_type", ctx.kv_type, header.get("kv_type"))
    if header.get("row_bytes") != ctx.kv_row_bytes:
        raise StateMismatchError(f"{what} has other KV rows", "row_bytes", ctx.kv_row_bytes, header.get("row_bytes"))
    if header.get("rope_long", False) != _rope_long(ctx):
        raise StateMismatchError(
            f"{what} was rotated by other LongRoPE factors (n_ctx_seq on the other side of the model's "
            f"rope_long_ctx={ctx.model.hparams.rope_long_ctx})",
            "rope_long",
            _rope_long(ctx),
            header.get("rope_long"),
        )
    for s in header["sequences"]:
        if s["n_pos"] > ctx.n_ctx_seq:
            raise StateMismatchError(
                f"{what}: sequence {s['seq']} does not fit", "positions", f"<= n_ctx_seq={ctx.n_ctx_seq}", s["n_pos"]
            )
        if s["kv_bytes"] != ctx.seq_state_bytes(s["n_pos"]):
            raise StateMismatchError(
                f"{what}: sequence {s['seq']}'s cache rows", "kv_bytes", ctx.seq_state_bytes(s["n_pos"]), s["kv_bytes"]
            )
    _check_loras(ctx, header, what, into)


def _rope_long(ctx: Any) -> bool:
    """whether ctx rotates by LongRoPE's long factors (n_ctx_seq past rope_long_ctx): keys
    cached with one set of angles do not continue with the other"""
    hp = ctx.model.hparams
    return bool(hp.long_rope and ctx.n_ctx_seq > hp.rope_long_ctx)


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """data to path through a temporary file in the same folder and a rename:
    an interrupted write never leaves a half state under the real name."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_file(path: str | os.PathLike[str]) -> bytes:
    return Path(path).read_bytes()
