"""Small GGUF files for tests: realistic ones written by gguf-py's GGUFWriter,
and raw byte-level ones whose every count, length and offset can lie."""

from __future__ import annotations

import contextlib
import signal
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from gguf import GGUFWriter
from gguf.quants import quantize

# -- realistic files via gguf-py ---------------------------------------------

SAMPLE_STRING = "héllo ✓ [INST] <|im_start|>"


def write_sample_gguf(path: Path, *, alignment: int | None = None, seed: int = 0) -> Path:
    """Every scalar type, several array types, and tensors of 1-4 dims in
    F32/F16/I32/Q8_0/Q4_1/Q4_K/Q6_K."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -5)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 1.5)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 3.141592653589793)
    w.add_bool("test.bool", True)
    w.add_string("test.string", SAMPLE_STRING)
    w.add_key_value("test.u16s", [1, 2, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.f32s", [0.5, -1.25, 3.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.bools", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_array("test.strings", ["a", "", "ü", "<0x0A>"] * 10)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(100)])

    w.add_tensor("f32.2d", rng.standard_normal((3, 8), dtype=np.float32))
    w.add_tensor("f16.2d", rng.standard_normal((4, 32)).astype(np.float16))
    w.add_tensor("i32.1d", np.arange(5, dtype=np.int32))
    w.add_tensor("f32.3d", rng.standard_normal((2, 3, 4), dtype=np.float32))
    w.add_tensor("f32.4d", rng.standard_normal((1, 2, 3, 4), dtype=np.float32))
    for qtype, shape in ((T.Q8_0, (2, 64)), (T.Q4_1, (3, 32))):
        q = quantize(rng.standard_normal(shape, dtype=np.float32), qtype)
        w.add_tensor(f"{qtype.name.lower()}.2d", q, raw_dtype=qtype)
    # No K-quant quantizer in gguf-py; random block bytes are fine for layout.
    w.add_tensor("q4_k.2d", rng.integers(0, 256, (2, 144), dtype=np.uint8), raw_dtype=T.Q4_K)
    w.add_tensor("q6_k.2d", rng.integers(0, 256, (3, 2 * 210), dtype=np.uint8), raw_dtype=T.Q6_K)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- raw byte-level files -----------------------------------------------------


def gguf_str(s: str | bytes, length: int | None = None) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(data) if length is None else length) + data


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, V.UINT32, struct.pack("<I", value))


def kv_string(key: str, value: str | bytes) -> bytes:
    return kv(key, V.STRING, gguf_str(value))


def kv_array(key: str, element: int, count: int, items: bytes) -> bytes:
    return kv(key, V.ARRAY, struct.pack("<IQ", element, count) + items)


def tensor_info(
    name: str | bytes, ne: Sequence[int], ggml_type: int, offset: int, *, n_dims: int | None = None
) -> bytes:
    out = gguf_str(name) + struct.pack("<I", len(ne) if n_dims is None else n_dims)
    out += b"".join(struct.pack("<Q", d) for d in ne)
    return out + struct.pack("<IQ", ggml_type, offset)


def gguf_bytes(
    kvs: Sequence[bytes] = (),
    infos: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
) -> bytes:
    """Header + kvs + tensor infos, zero-padded to `alignment`, then `data`."""
    head = magic + struct.pack(
        "<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body = head + b"".join(kvs) + b"".join(infos)
    return body + b"\0" * (-len(body) % alignment) + data


def good_raw_parts() -> tuple[list[bytes], list[bytes], bytes]:
    """A valid file's parts: an F32 [8] at 0 and a Q8_0 [32, 2] at 32."""
    kvs = [kv_string("general.architecture", "llama"), kv_u32("test.n", 7)]
    infos = [tensor_info("a", [8], T.F32, 0), tensor_info("b", [32, 2], T.Q8_0, 32)]
    data = np.arange(8, dtype=np.float32).tobytes() + bytes(range(68))
    return kvs, infos, data


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@contextlib.contextmanager
def no_hang(seconds: float = 10.0) -> Iterator[None]:
    """Fail instead of hanging: a lying count must never make the reader loop."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
