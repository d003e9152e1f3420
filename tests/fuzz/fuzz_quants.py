"""Random block bytes through the native dequantize and dot kernels of every
type lamina runs (lamina.quants): no crash, and no read or write past the
buffers, checked by putting each one against a PROT_NONE guard page so a
stray byte is a segfault libFuzzer reports, not silent garbage.

Input: type pick, block count, implementation, then the bytes."""

from __future__ import annotations

import ctypes
import mmap

import atheris
import numpy as np
from gguf import GGMLQuantizationType

from lamina import quants
from lamina.native import ffi, lib

PAGE = mmap.PAGESIZE
_types: list[GGMLQuantizationType] = []
_impls: list[str] = []
_libc = ctypes.CDLL(None, use_errno=True)


class GuardedBuffer:
    """`size` bytes that end exactly where a PROT_NONE page begins."""

    def __init__(self, pages: int = 4) -> None:
        self.map = mmap.mmap(-1, (pages + 1) * PAGE)
        self.capacity = pages * PAGE
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        if _libc.mprotect(ctypes.c_void_p(base + self.capacity), PAGE, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")

    def view(self, size: int, dtype: type = np.uint8) -> np.ndarray:
        nbytes = size * np.dtype(dtype).itemsize
        assert nbytes <= self.capacity
        return np.frombuffer(self.map, dtype=dtype, count=size, offset=self.capacity - nbytes)


_in = _act = _out = None


def setup() -> None:
    global _in, _act, _out
    _types.extend(t for t in GGMLQuantizationType if quants.can_run(t))
    _impls.extend(name for name, impl in quants.IMPLS.items() if lib.lm_impl_available(impl))
    _in, _act, _out = GuardedBuffer(), GuardedBuffer(), GuardedBuffer(8)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    qt = _types[fdp.ConsumeIntInRange(0, len(_types) - 1)]
    n_blocks = fdp.ConsumeIntInRange(1, 4)
    impl = _impls[fdp.ConsumeIntInRange(0, len(_impls) - 1)]
    bs, bb = quants.block_size(qt), quants.block_bytes(qt)
    n = bs * n_blocks
    raw = fdp.ConsumeBytes(bb * n_blocks).ljust(bb * n_blocks, b"\0")

    w = _in.view(len(raw))
    w[:] = np.frombuffer(raw, dtype=np.uint8)
    x = quants.dequantize(w, qt)
    assert x.shape == (1, n)
    # the kernel writing into a guarded output: exactly n floats, not one more
    out = _out.view(n, np.float32)
    rc = lib.lm_dequantize(int(qt), ffi.from_buffer(w), ffi.from_buffer("float[]", out), n)
    assert rc == 0
    assert np.array_equal(out.view(np.uint32), x[0].view(np.uint32)), qt.name

    partner = quants.vec_dot_type(qt)
    try:
        act_bytes = quants.row_bytes(partner, n)
    except ValueError:  # n is not a whole number of the partner's blocks (types of 32 vs Q8_K's 256)
        return
    y = _act.view(act_bytes)
    y[:] = np.frombuffer(fdp.ConsumeBytes(act_bytes).ljust(act_bytes, b"\0"), dtype=np.uint8)
    quants.vec_dot(w, qt, y, impl=impl)
    # the activation quantizer on floats from the same bytes (NaN/inf included)
    floats = np.nan_to_num(x[0], nan=0.0, posinf=1e30, neginf=-1e30).astype(np.float32)
    quants.quantize_activations(floats, qt, impl=impl)
