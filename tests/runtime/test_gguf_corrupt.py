"""Corrupt and hostile GGUF files: each ends in the right typed error, fast,
naming the file and the key or tensor at fault."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf import GGUFValueType as V

from lamina.errors import GGUFError, GGUFFormatError, GGUFTensorError, GGUFTruncatedError
from lamina.gguf.reader import GGUFFile
from support.gguf_builders import (
    gguf_bytes,
    gguf_str,
    good_raw_parts,
    kv,
    kv_array,
    kv_u32,
    no_hang,
    tensor_info,
    write_bytes,
    write_sample_gguf,
)

BIG_COUNTS = [2**40, 2**62, 2**63 - 1, 2**64 - 1]


def expect(path: Path, exc_type: type[GGUFError], *mentions: str) -> GGUFError:
    with no_hang(5), pytest.raises(exc_type) as info:
        GGUFFile(path)
    message = str(info.value)
    assert str(path) in message
    for m in mentions:
        assert m in message, (m, message)
    return info.value


def raw(tmp_path: Path, **changes: object) -> Path:
    """The good raw file with some of its parts or header fields replaced."""
    kvs, infos, data = good_raw_parts()
    parts: dict[str, object] = {"kvs": kvs, "infos": infos, "data": data}
    parts.update(changes)
    return write_bytes(tmp_path / "bad.gguf", gguf_bytes(**parts))  # type: ignore[arg-type]


def test_good_raw_file_is_valid(tmp_path: Path) -> None:
    with GGUFFile(raw(tmp_path)) as f:
        assert [(t.name, t.offset - f.data_offset, t.nbytes) for t in f.tensors] == [("a", 0, 32), ("b", 32, 68)]


# -- truncation ----------------------------------------------------------------


def test_truncated_at_every_header_offset_and_inside_data(tmp_path: Path) -> None:
    cut = write_sample_gguf(tmp_path / "cut.gguf")
    ref = GGUFReader(cut)
    last = ref.tensors[-1].field
    header_end = last.offset + sum(int(p.nbytes) for p in last.parts)
    data_start = int(ref.data_offset)
    data_end = max(t.data_offset + t.n_bytes for t in ref.tensors)
    del ref  # its map must not outlive the truncation below
    # Past the header the infos are whole, so the tensors are what no longer
    # fit: cuts in the padding, inside the data and at its last byte.
    inside = np.random.default_rng(0).integers(data_start, data_end, 40).tolist()
    data_cuts = {*range(header_end, data_start + 1), *inside, data_end - 1}
    # Shrinking one file in place is ~100x faster here than rewriting it.
    with no_hang(60):
        for n in sorted(data_cuts | set(range(header_end)), reverse=True):
            os.truncate(cut, n)
            with pytest.raises(GGUFError) as e:
                GGUFFile(cut)
            assert str(cut) in str(e.value), n
            if n < header_end:
                assert isinstance(e.value, GGUFTruncatedError), (n, e.value)
            else:
                assert isinstance(e.value, GGUFTensorError) and "past the end" in str(e.value), (n, e.value)
                assert e.value.tensor is not None and repr(e.value.tensor) in str(e.value)


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    expect(write_bytes(tmp_path / "empty.gguf", b""), GGUFTruncatedError, "empty")
    expect(write_bytes(tmp_path / "gg.gguf", b"GG"), GGUFTruncatedError, "magic")


def test_random_header_corruption_never_leaks_other_errors(tmp_path: Path) -> None:
    """300 files with 3 random header bytes changed: each is rejected with a
    GGUFError or read back exactly as gguf-py reads it (a changed letter in a
    key or string can make a valid file); most are rejected, so a reader that
    accepted everything fails here."""
    path = write_sample_gguf(tmp_path / "fuzz.gguf")
    header_end = int(GGUFReader(path).data_offset)
    rng = np.random.default_rng(1)
    rejected = 0
    with no_hang(120), open(path, "r+b") as f:
        for _ in range(300):
            positions = rng.integers(0, header_end, 3).tolist()
            saved = []
            for pos in positions:
                f.seek(pos)
                saved.append(f.read(1))
                f.seek(pos)
                f.write(bytes([int(rng.integers(0, 256))]))
            f.flush()
            try:
                with GGUFFile(path) as g:
                    ours = [(t.name, t.ne, int(t.ggml_type), t.offset) for t in g.tensors]
            except GGUFError:
                rejected += 1
            else:
                theirs = GGUFReader(path)
                want = [
                    (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset))
                    for t in theirs.tensors
                ]
                assert ours == want
            for pos, old in reversed(list(zip(positions, saved))):
                f.seek(pos)
                f.write(old)
    print(f"rejected {rejected} of 300")
    assert rejected >= 250, rejected


# -- header fields -----------------------------------------------------------------


@pytest.mark.parametrize("magic", [b"GGML", b"\0\0\0\0", b"FUGG"])
def test_bad_magic(tmp_path: Path, magic: bytes) -> None:
    expect(raw(tmp_path, magic=magic), GGUFFormatError, "magic")


@pytest.mark.parametrize(
    "version,mention", [(1, "version 1"), (99, "version 99"), (0, "version 0"), (0x03000000, "big-endian")]
)
def test_bad_version(tmp_path: Path, version: int, mention: str) -> None:
    expect(raw(tmp_path, version=version), GGUFFormatError, mention)


@pytest.mark.parametrize("count", BIG_COUNTS)
def test_lying_tensor_count(tmp_path: Path, count: int) -> None:
    expect(raw(tmp_path, n_tensors=count), GGUFTruncatedError, "tensor count", str(count))


@pytest.mark.parametrize("count", BIG_COUNTS)
def test_lying_kv_count(tmp_path: Path, count: int) -> None:
    expect(raw(tmp_path, n_kv=count), GGUFTruncatedError, "kv count", str(count))


def test_small_lie_in_kv_count(tmp_path: Path) -> None:
    # One kv too many: the parser reads the first tensor info as a key.
    with no_hang(5), pytest.raises(GGUFError):
        GGUFFile(raw(tmp_path, n_kv=3))


# -- metadata -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [2**62, 2**64 - 1, 1000])
def test_huge_key_length(tmp_path: Path, length: int) -> None:
    kvs = [gguf_str("general.architecture", length=length) + struct.pack("<I", V.UINT8) + b"\0"]
    expect(raw(tmp_path, kvs=kvs), GGUFTruncatedError, "key", str(length))


@pytest.mark.parametrize("length", [2**62, 2**63, 10_000])
def test_huge_string_value_length(tmp_path: Path, length: int) -> None:
    kvs = [kv("test.s", V.STRING, gguf_str("abc", length=length))]
    e = expect(raw(tmp_path, kvs=kvs), GGUFTruncatedError, "'test.s'", "string value")
    assert e.key == "test.s"


@pytest.mark.parametrize(
    "element,count",
    [(V.UINT8, 2**62), (V.INT64, 2**64 - 1), (V.STRING, 2**61), (V.FLOAT32, 2**40), (V.STRING, 1000)],
)
def test_huge_array_length(tmp_path: Path, element: V, count: int) -> None:
    kvs = [kv_array("test.arr", element, count, b"\x01\x02\x03\x04")]
    e = expect(raw(tmp_path, kvs=kvs), GGUFTruncatedError, "'test.arr'", str(count))
    assert e.key == "test.arr"


@pytest.mark.parametrize("vtype", [13, 255, 2**32 - 1])
def test_unknown_value_type(tmp_path: Path, vtype: int) -> None:
    e = expect(raw(tmp_path, kvs=[kv("test.x", vtype, b"\0" * 8)]), GGUFFormatError, "'test.x'", str(vtype))
    assert e.key == "test.x"


def test_unknown_array_element_type(tmp_path: Path) -> None:
    expect(raw(tmp_path, kvs=[kv_array("test.y", 99, 1, b"\0")]), GGUFFormatError, "'test.y'", "99")


def test_nested_array(tmp_path: Path) -> None:
    inner = struct.pack("<IQ", V.UINT8, 1) + b"\x07"
    expect(raw(tmp_path, kvs=[kv_array("test.z", V.ARRAY, 1, inner)]), GGUFFormatError, "'test.z'", "nested")


def test_bool_out_of_range(tmp_path: Path) -> None:
    expect(raw(tmp_path, kvs=[kv("test.b", V.BOOL, b"\x02")]), GGUFFormatError, "'test.b'", "0 or 1")
    expect(raw(tmp_path, kvs=[kv_array("test.bs", V.BOOL, 2, b"\x01\x05")]), GGUFFormatError, "'test.bs'")


def test_duplicate_key(tmp_path: Path) -> None:
    kvs, _, _ = good_raw_parts()
    e = expect(raw(tmp_path, kvs=kvs + [kv_u32("test.n", 8)]), GGUFFormatError, "'test.n'", "duplicate")
    assert e.key == "test.n"


def test_invalid_utf8_key(tmp_path: Path) -> None:
    expect(raw(tmp_path, kvs=[kv(b"bad\xffkey", V.UINT8, b"\0")]), GGUFFormatError, "UTF-8")


@pytest.mark.parametrize("alignment", [0, 3, 48, 2**32 - 1])
def test_alignment_not_power_of_two(tmp_path: Path, alignment: int) -> None:
    kvs, _, _ = good_raw_parts()
    e = expect(
        raw(tmp_path, kvs=kvs + [kv_u32("general.alignment", alignment)]),
        GGUFFormatError,
        "'general.alignment'",
        "power of two",
        str(alignment),
    )
    assert e.key == "general.alignment"


def test_alignment_wrong_type(tmp_path: Path) -> None:
    kvs = [kv("general.alignment", V.INT32, struct.pack("<i", 32))]
    expect(raw(tmp_path, kvs=kvs), GGUFFormatError, "'general.alignment'", "UINT32", "INT32")


# -- tensor infos --------------------------------------------------------------------


def bad_tensor(tmp_path: Path, info: bytes, exc_type: type[GGUFError], *mentions: str) -> None:
    _, infos, data = good_raw_parts()
    e = expect(raw(tmp_path, infos=[infos[0], info], data=data), exc_type, "'b'", *mentions)
    assert e.tensor == "b"


@pytest.mark.parametrize("length", [2**62, 2**64 - 1])
def test_huge_tensor_name_length(tmp_path: Path, length: int) -> None:
    info = gguf_str("b", length=length) + struct.pack("<IQIQ", 1, 32, T.F32, 0)
    _, infos, data = good_raw_parts()
    expect(raw(tmp_path, infos=[infos[0], info], data=data), GGUFTruncatedError, "tensor name")


@pytest.mark.parametrize("type_id", [4, 5, 31, 36, 1000, 2**32 - 1])
def test_unknown_ggml_type(tmp_path: Path, type_id: int) -> None:
    bad_tensor(tmp_path, tensor_info("b", [32, 2], type_id, 32), GGUFTensorError, "ggml type", str(type_id))


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_bad_n_dims(tmp_path: Path, n_dims: int) -> None:
    info = tensor_info("b", [32, 2, 1, 1, 1][: min(n_dims, 5)], T.Q8_0, 32, n_dims=n_dims)
    bad_tensor(tmp_path, info, GGUFTensorError, "n_dims", str(n_dims))


@pytest.mark.parametrize("ne", [[32, 2**32, 2**32], [2**62, 2**62], [32, 2**63], [2**64 - 32, 1]])
def test_element_count_overflows_int64(tmp_path: Path, ne: list[int]) -> None:
    bad_tensor(tmp_path, tensor_info("b", ne, T.Q8_0, 32), GGUFTensorError)


def test_zero_dim(tmp_path: Path) -> None:
    bad_tensor(tmp_path, tensor_info("b", [32, 0], T.Q8_0, 32), GGUFTensorError, "dim 1")


@pytest.mark.parametrize("ggml_type,ne0", [(T.Q8_0, 48), (T.Q4_K, 32), (T.Q6_K, 300), (T.Q4_1, 1)])
def test_row_not_multiple_of_block(tmp_path: Path, ggml_type: T, ne0: int) -> None:
    bad_tensor(tmp_path, tensor_info("b", [ne0, 2], ggml_type, 32), GGUFTensorError, "block size", str(ne0))


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    _, infos, data = good_raw_parts()
    e = expect(raw(tmp_path, infos=infos + [infos[1]], data=data), GGUFTensorError, "'b'", "duplicate")
    assert e.tensor == "b"


def test_invalid_utf8_tensor_name(tmp_path: Path) -> None:
    _, infos, data = good_raw_parts()
    bad = tensor_info(b"\xc3(", [8], T.F32, 64)
    expect(raw(tmp_path, infos=infos + [bad], data=data), GGUFTensorError, "UTF-8")


@pytest.mark.parametrize("offset", [4, 33, 31])
def test_misaligned_offset(tmp_path: Path, offset: int) -> None:
    bad_tensor(tmp_path, tensor_info("b", [32, 2], T.Q8_0, offset), GGUFTensorError, "alignment", str(offset))


@pytest.mark.parametrize("offset", [2**40, 2**64 - 32, 128])
def test_offset_past_end(tmp_path: Path, offset: int) -> None:
    bad_tensor(tmp_path, tensor_info("b", [32, 2], T.Q8_0, offset), GGUFTensorError, "past the end")


def test_tensor_extends_past_end(tmp_path: Path) -> None:
    _, infos, data = good_raw_parts()
    e = expect(raw(tmp_path, data=data[:-4]), GGUFTensorError, "'b'", "past the end")
    assert e.tensor == "b"
    bad_tensor(tmp_path, tensor_info("b", [32, 200], T.Q8_0, 32), GGUFTensorError, "past the end")


@pytest.mark.parametrize("offset", [0, 32])
def test_overlapping_tensors(tmp_path: Path, offset: int) -> None:
    # "c" sits on top of "b" (at 32) or contains "a" (at 0).
    _, infos, data = good_raw_parts()
    c = tensor_info("c", [32, 2], T.Q8_0, offset)
    e = expect(
        raw(tmp_path, infos=infos + [c], data=data), GGUFTensorError, "overlaps", "'a'" if offset == 0 else "'b'"
    )
    assert e.tensor == "c"
