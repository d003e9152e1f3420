"""Safe GGUF v2/v3 reader.

The whole header is parsed by hand over a read-only memory map, and every
length, count and offset is checked against the bytes actually left in the
file before it is used, so a corrupt or hostile file fails fast with a typed
error naming the file, key or tensor. gguf-py's own reader trusts those counts
(a lying array length makes it loop or allocate for a long time), so it is
used here only for its type enums and block-size tables.

Decisions where the GGUF spec and ggml are loose:
- n_dims must be 1..4 and every dim >= 1. ggml accepts n_dims 0 (a scalar)
  and dims of 0 (an empty tensor); neither is a usable weight, and refusing
  them keeps sizes strictly positive so the overlap check cannot be fooled.
- Nested arrays are refused, as ggml's loader refuses them.
- Invalid UTF-8 in a key or tensor name is an error (names must be matchable).
  In string values it is kept losslessly with errors="surrogateescape", since
  tokenizer vocabularies may hold raw byte pieces; encode a value back with
  .encode("utf-8", "surrogateescape") to get the exact file bytes.
- A bool must be stored as 0 or 1; anything else is a corrupt file.
- Tensors may sit in any order with gaps (ggml insists on tight packing in
  info order); they must only be aligned, inside the file and non-overlapping.
- Big-endian GGUF files are refused: the native core reads little-endian.
- Tensor-name length is not limited here (ggml's GGML_MAX_NAME is 64).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from lamina.errors import (
    GGUFError,
    GGUFFormatError,
    GGUFMissingKeyError,
    GGUFMissingTensorError,
    GGUFTensorError,
    GGUFTruncatedError,
)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
INT64_MAX = 2**63 - 1

# Smallest possible encodings, used to reject lying counts before looping:
# a kv is a key length (u64) + value type (u32) + at least a 1-byte value; a
# tensor info is a name length (u64) + n_dims (u32) + one dim (u64) + type
# (u32) + offset (u64).
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8

# struct format per scalar type; numpy dtypes for arrays follow from it.
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<B",  # checked to be 0/1, then made a bool
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class MetaType:
    """A metadata value's GGUF type; `element` is set only for arrays."""

    type: GGUFValueType
    element: GGUFValueType | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length (contiguous)
    np_shape: tuple[int, ...]  # numpy order: reversed ne
    ggml_type: GGMLQuantizationType
    offset: int  # absolute byte offset of the data in the file
    nbytes: int
    n_elements: int

    @property
    def block_size(self) -> int:
        return GGML_QUANT_SIZES[self.ggml_type][0]

    @property
    def type_size(self) -> int:
        return GGML_QUANT_SIZES[self.ggml_type][1]

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.ne[0]

    @property
    def row_bytes(self) -> int:
        return self.ne[0] // self.block_size * self.type_size


class _HeaderParser:
    """Bounded cursor over the mapped header; every read checks what is left."""

    def __init__(self, path: str, buf: memoryview) -> None:
        self.path = path
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        # What is being parsed, so every error can name it.
        self.key: str | None = None
        self.tensor: str | None = None

    def truncated(self, what: str, needed: int) -> GGUFTruncatedError:
        left = self.size - self.pos
        return GGUFTruncatedError(
            self.path,
            f"{what} needs {needed} bytes but only {left} remain in the {self.size}-byte file",
            key=self.key,
            tensor=self.tensor,
            offset=self.pos,
        )

    def format_error(self, message: str, offset: int | None = None) -> GGUFFormatError:
        return GGUFFormatError(self.path, message, key=self.key, offset=offset)

    def tensor_error(self, message: str, offset: int | None = None) -> GGUFTensorError:
        return GGUFTensorError(self.path, message, tensor=self.tensor, offset=offset)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.truncated(what, n)

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def raw_string(self, what: str) -> memoryview:
        length = self.u64(f"{what} length")
        self.need(length, f"{what} ({length} bytes)")
        start = self.pos
        self.pos += length
        return self.buf[start : self.pos]

    def name(self, what: str, error: Callable[[str, int], GGUFError]) -> str:
        """A key or tensor name: strict UTF-8, since callers match on it."""
        start = self.pos
        raw = self.raw_string(what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} is not valid UTF-8: {bytes(raw[:64])!r}", start) from None

    def string_value(self) -> str:
        return str(self.raw_string("string value"), "utf-8", "surrogateescape")

    def string_array(self, count: int) -> list[str]:
        # string_value() unrolled: vocabularies run to 262k entries and this
        # loop is most of the time it takes to open a model.
        buf, size, pos = self.buf, self.size, self.pos
        unpack_u64 = struct.Struct("<Q").unpack_from
        out = []
        for _ in range(count):
            if size - pos < 8:
                self.pos = pos
                raise self.truncated("string value length", 8)
            (length,) = unpack_u64(buf, pos)
            pos += 8
            if length > size - pos:
                self.pos = pos
                raise self.truncated(f"string value ({length} bytes)", length)
            out.append(str(buf[pos : pos + length], "utf-8", "surrogateescape"))
            pos += length
        self.pos = pos
        return out

    def value_type(self, what: str) -> GGUFValueType:
        start = self.pos
        raw = self.u32(what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.format_error(f"unknown {what} {raw}: expected 0..12", start) from None

    def check_count(self, count: int, min_bytes: int, what: str) -> None:
        # Reject before looping: `count` items cannot fit in what is left.
        if count * min_bytes > self.size - self.pos:
            raise self.truncated(f"{what} of {count}", count * min_bytes)

    def scalar(self, vtype: GGUFValueType) -> int | float | bool:
        fmt = _SCALAR_FORMATS[vtype]
        start = self.pos
        value = self.unpack(fmt, struct.calcsize(fmt), f"{vtype.name} value")
        if vtype == GGUFValueType.BOOL:
            if value > 1:
                raise self.format_error(f"bool value must be 0 or 1, found {value}", start)
            return bool(value)
        return value

    def array(self) -> tuple[Any, GGUFValueType]:
        element = self.value_type("array element type")
        if element == GGUFValueType.ARRAY:
            raise self.format_error("nested arrays are not supported", self.pos - 4)
        count = self.u64("array length")
        if element == GGUFValueType.STRING:
            self.check_count(count, 8, "array of strings")
            return self.string_array(count), element
        dtype = np.dtype(_SCALAR_FORMATS[element])
        self.need(count * dtype.itemsize, f"array of {count} {element.name}")
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        if element == GGUFValueType.BOOL:
            if values.size and values.max() > 1:
                raise self.format_error("bool array holds values other than 0 and 1", self.pos)
            values = values.astype(np.bool_)
        self.pos += count * dtype.itemsize
        return values, element

    def value(self) -> tuple[Any, MetaType]:
        vtype = self.value_type("value type")
        if vtype == GGUFValueType.STRING:
            return self.string_value(), MetaType(vtype)
        if vtype == GGUFValueType.ARRAY:
            values, element = self.array()
            return values, MetaType(vtype, element)
        return self.scalar(vtype), MetaType(vtype)


def _ggml_type(p: _HeaderParser, raw: int, at: int) -> GGMLQuantizationType:
    try:
        ggml_type = GGMLQuantizationType(raw)
    except ValueError:
        ggml_type = None
    if ggml_type is None or ggml_type not in GGML_QUANT_SIZES:
        raise p.tensor_error(f"unknown ggml type id {raw}", at)
    return ggml_type


def _tensor_info(p: _HeaderParser) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    """Parse one tensor info; returns name, ne, type and the data-relative offset."""
    name = p.name("tensor name", p.tensor_error)
    p.tensor = name
    at = p.pos
    n_dims = p.u32("n_dims")
    if not 1 <= n_dims <= MAX_DIMS:
        raise p.tensor_error(f"n_dims must be 1..{MAX_DIMS}, found {n_dims}", at)
    ne: list[int] = []
    n_elements = 1
    for i in range(n_dims):
        at = p.pos
        dim = p.u64(f"dim {i}")
        if not 1 <= dim <= INT64_MAX:
            raise p.tensor_error(f"dim {i} must be in 1..{INT64_MAX}, found {dim}", at)
        n_elements *= dim
        if n_elements > INT64_MAX:
            raise p.tensor_error(f"element count overflows int64 at dim {i} (ne so far {ne + [dim]})", at)
        ne.append(dim)
    at = p.pos
    ggml_type = _ggml_type(p, p.u32("ggml type"), at)
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    if ne[0] % block_size:
        raise p.tensor_error(
            f"row length ne[0]={ne[0]} is not a multiple of the {ggml_type.name} block size {block_size}", at
        )
    return name, tuple(ne), ggml_type, p.u64("data offset")


class GGUFFile:
    """A validated, memory-mapped GGUF file.

    Everything in the header is checked on open; tensor data is only mapped,
    never read, until `tensor_bytes` is called.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        size = os.stat(self.path).st_size  # OSError (missing file...) passes through
        if size == 0:
            raise GGUFTruncatedError(self.path, "file is empty: expected a GGUF header", offset=0)
        self._mm: np.memmap | None = np.memmap(self.path, dtype=np.uint8, mode="r")
        try:
            self._parse(self._mm.data)  # the 1-D uint8 buffer of the map
        except BaseException:
            self.close()
            raise

    # -- parsing -----------------------------------------------------------

    def _parse(self, buf: memoryview) -> None:
        p = _HeaderParser(self.path, buf)
        p.need(4, "magic")
        magic = bytes(buf[:4])
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(self.path, f"bad magic {magic!r}: expected {GGUF_MAGIC!r}", offset=0)
        p.pos = 4
        self.version = p.u32("version")
        if self.version not in SUPPORTED_VERSIONS:
            raise GGUFFormatError(self.path, _version_message(self.version), offset=4)
        n_tensors = p.u64("tensor count")
        n_kv = p.u64("kv count")
        p.check_count(n_kv, _MIN_KV_BYTES, "kv count")
        p.check_count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensor count")

        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, MetaType] = {}
        for _ in range(n_kv):
            p.key = None
            at = p.pos
            key = p.name("key", p.format_error)
            p.key = key
            if key in self.metadata:
                raise p.format_error("duplicate key", at)
            self.metadata[key], self.metadata_types[key] = p.value()
        p.key = None

        self.alignment = self._read_alignment()
        p.check_count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensor count")
        raw_infos = []
        seen: set[str] = set()
        for _ in range(n_tensors):
            p.tensor = None
            at = p.pos
            info = _tensor_info(p)
            if info[0] in seen:
                raise p.tensor_error("duplicate tensor name", at)
            seen.add(info[0])
            raw_infos.append(info)
        self.data_offset = -(-p.pos // self.alignment) * self.alignment
        self.tensors = [self._place(p.size, *info) for info in raw_infos]
        self._check_overlaps()
        self._by_name = {t.name: t for t in self.tensors}

    def _read_alignment(self) -> int:
        key = "general.alignment"
        if key not in self.metadata:
            return DEFAULT_ALIGNMENT
        found = self.metadata_types[key]
        if found != MetaType(GGUFValueType.UINT32):
            raise GGUFFormatError(self.path, f"must be UINT32, found {_type_name(found)}", key=key)
        alignment = int(self.metadata[key])
        if alignment == 0 or alignment & (alignment - 1):
            raise GGUFFormatError(self.path, f"must be a non-zero power of two, found {alignment}", key=key)
        return alignment

    def _place(
        self, file_size: int, name: str, ne: tuple[int, ...], ggml_type: GGMLQuantizationType, rel: int
    ) -> TensorInfo:
        block_size, type_size = GGML_QUANT_SIZES[ggml_type]
        n_elements = math.prod(ne)
        nbytes = n_elements // block_size * type_size
        if rel % self.alignment:
            raise GGUFTensorError(
                self.path, f"data offset {rel} is not a multiple of the alignment {self.alignment}", tensor=name
            )
        start = self.data_offset + rel
        if start + nbytes > file_size:
            raise GGUFTensorError(
                self.path,
                f"data [{start}, {start + nbytes}) ({nbytes} bytes of {ggml_type.name} {ne}) "
                f"extends past the end of the {file_size}-byte file",
                tensor=name,
            )
        return TensorInfo(name, ne, tuple(reversed(ne)), ggml_type, start, nbytes, n_elements)

    def _check_overlaps(self) -> None:
        ordered = sorted(self.tensors, key=lambda t: t.offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.offset + a.nbytes > b.offset:
                raise GGUFTensorError(
                    self.path,
                    f"data [{b.offset}, {b.offset + b.nbytes}) overlaps tensor {a.name!r} "
                    f"at [{a.offset}, {a.offset + a.nbytes})",
                    tensor=b.name,
                )

    # -- public API --------------------------------------------------------

    @property
    def architecture(self) -> str:
        arch = self.require("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError(self.path, "must be a string", key="general.architecture")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        try:
            return self.metadata[key]
        except KeyError:
            raise GGUFMissingKeyError(self.path, "required metadata key is missing", key=key) from None

    def has_tensor(self, name: str) -> bool:
        return name in self._by_name

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise GGUFMissingTensorError(
                self.path, f"no such tensor (the file has {len(self.tensors)})", tensor=name
            ) from None

    def tensor_bytes(self, name: str) -> np.ndarray:
        """Read-only uint8 view [n_rows, row_bytes] into the map; no copy.

        The view keeps the mapping alive, so it stays valid after close().
        """
        info = self.tensor(name)
        if self._mm is None:
            raise GGUFError(self.path, "file is closed")
        raw = self._mm[info.offset : info.offset + info.nbytes].view(np.ndarray)
        return raw.reshape(info.n_rows, info.row_bytes)

    def close(self) -> None:
        # Dropping the reference unmaps once no tensor_bytes view is alive;
        # closing the mmap explicitly would pull memory out from under them.
        self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({self.path!r}, v{self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors)"


def _version_message(version: int) -> str:
    if version == 1:
        return "GGUF version 1 (pre-August-2023, 32-bit counts) is not supported: re-convert the model"
    if version & 0xFFFF == 0 and version >> 16:
        return f"version field {version:#010x} looks byte-swapped: big-endian GGUF is not supported"
    return f"unsupported GGUF version {version}: expected 2 or 3"


def _type_name(t: MetaType) -> str:
    return f"ARRAY[{t.element.name}]" if t.element is not None else t.type.name
