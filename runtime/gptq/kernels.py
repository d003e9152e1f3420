"""GPTQ INT4 linears through the native kernels (native/gptq, lamina_gptq.h).

    w = GPTQMatrix(qweight, scales, qzeros, g_idx=None, group_size=128)
    y = w.matmul(x, impl="auto", n_threads=2)      # x f32 [ncols, n_in] -> y f32 [ncols, n_out]

Arrays (numpy shapes), exactly the packing of runtime/gptq/pack.py with the
zero points in the "v2" form (the zero itself):

    qweight int32 [n_in/8, n_out]       nibble j of qweight[r, o]: level of input 8r+j, output o
    scales  f16   [n_groups, n_out]
    qzeros  int32 [n_groups, n_out/8]   nibble j of qzeros[g, c]: zero of output 8c+j
    g_idx   int32 [n_in] or None        group of each input (None: i // group_size)

Every shape is checked here first and the native validation runs once, at
construction; a bad matrix raises GPTQKernelError naming what was expected."""

from __future__ import annotations

import numpy as np

from lamina.errors import LaminaError
from lamina.gptq.format import PER_WORD
from lamina.gptq.group_order import group_order
from lamina.native import ffi, last_error, lib
from lamina.quants import IMPLS, ThreadPool, default_pool


class GPTQKernelError(LaminaError, ValueError):
    """A GPTQ matrix or a matmul request the native kernels cannot take."""


def _int32_array(a, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.uint32:
        a = a.view(np.int32)  # torch has no uint32: files hold the same bits as int32
    if a.dtype != np.int32:
        raise GPTQKernelError(f"GPTQ {name} must be int32, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise GPTQKernelError(f"GPTQ {name} must be {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _impl(impl: str) -> int:
    if impl not in IMPLS:
        raise GPTQKernelError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
    if not lib.lm_impl_available(IMPLS[impl]):
        raise GPTQKernelError(f"kernel implementation {impl!r} is not available on this CPU/build")
    return IMPLS[impl]


class GPTQMatrix:
    """One GPTQ INT4 linear, W [n_out, n_in], packed; keeps its arrays alive
    for as long as the native struct points into them."""

    def __init__(
        self,
        qweight: np.ndarray,
        scales: np.ndarray,
        qzeros: np.ndarray,
        g_idx: np.ndarray | None = None,
        group_size: int = 128,
        name: str = "gptq",
    ):
        self.name = name
        self.qweight = _int32_array(qweight, f"{name}.qweight", 2)  # [n_in/8, n_out]
        self.qzeros = _int32_array(qzeros, f"{name}.qzeros", 2)  # [G, n_out/8]
        sc = np.asarray(scales)
        if sc.dtype not in (np.float16, np.uint16):
            raise GPTQKernelError(f"GPTQ {name}.scales must be float16 (or its uint16 bits), got dtype {sc.dtype}")
        if sc.ndim != 2:
            raise GPTQKernelError(f"GPTQ {name}.scales must be 2-D [n_groups, n_out], got shape {sc.shape}")
        self.scales = np.ascontiguousarray(sc).view(np.uint16)  # [G, n_out] f16 bits
        self.n_in = self.qweight.shape[0] * PER_WORD
        self.n_out = self.qweight.shape[1]
        self.n_groups = self.scales.shape[0]
        self.group_size = int(group_size)
        if self.scales.shape[1] != self.n_out:
            raise GPTQKernelError(
                f"GPTQ {name}.scales must be [n_groups, {self.n_out}] for qweight "
                f"{self.qweight.shape}, got {self.scales.shape}"
            )
        if self.n_out % PER_WORD:
            raise GPTQKernelError(
                f"GPTQ {name}: n_out={self.n_out} (qweight {self.qweight.shape}) must be a "
                f"multiple of 8: qzeros packs 8 outputs per int32"
            )
        want = (self.n_groups, self.n_out // PER_WORD)
        if self.qzeros.shape != want:
            raise GPTQKernelError(
                f"GPTQ {name}.qzeros must be {list(want)} for scales {self.scales.shape}, got {list(self.qzeros.shape)}"
            )
        if g_idx is None:
            self.g_idx = None
        else:
            self.g_idx = _int32_array(g_idx, f"{name}.g_idx", 1)  # [n_in]
            if self.g_idx.shape != (self.n_in,):
                raise GPTQKernelError(
                    f"GPTQ {name}.g_idx must have {self.n_in} entries (8 per qweight row), got shape {self.g_idx.shape}"
                )
        if not -1 <= self.group_size < 2**31:
            raise GPTQKernelError(
                f"GPTQ {name}: group_size={self.group_size} must be positive, or -1/0 for one group per row"
            )
        self._c = ffi.new("lm_gptq_matrix *")
        self._c.qweight = ffi.from_buffer("int32_t[]", self.qweight)
        self._c.scales = ffi.from_buffer("uint16_t[]", self.scales)
        self._c.qzeros = ffi.from_buffer("int32_t[]", self.qzeros)
        self._c.g_idx = ffi.NULL if self.g_idx is None else ffi.from_buffer("int32_t[]", self.g_idx)
        # act-order: a group-order copy for the CPU kernels (group_order.py)
        self.grouped = None if self.g_idx is None else group_order(self.qweight, self.g_idx, self.group_size)
        if self.grouped is not None:
            self._c.qweight_grouped = ffi.from_buffer("int32_t[]", self.grouped.qweight)
            self._c.perm_grouped = ffi.from_buffer("int32_t[]", self.grouped.perm)
            if self.grouped.g_idx is not None:
                self._c.g_idx_grouped = ffi.from_buffer("int32_t[]", self.grouped.g_idx)
        self._c.n_in, self._c.n_out = self.n_in, self.n_out
        self._c.group_size, self._c.n_groups = self.group_size, self.n_groups
        if lib.lm_gptq_validate(self._c) != 0:
            raise GPTQKernelError(f"GPTQ {name}: {last_error()}")

    @property
    def native(self):
        """the lm_gptq_matrix * (lm_matrix.data of an LM_TYPE_GPTQ_INT4 weight)"""
        return self._c

    @classmethod
    def from_packed(cls, packed, group_size: int, name: str = "gptq") -> GPTQMatrix:
        """From a convert.gptq_pack.GPTQPacked (v1 zeros are converted to v2)."""
        if getattr(packed, "fmt", "v2") != "v2":
            packed = packed.to_format("v2")
        return cls(packed.qweight, packed.scales, packed.qzeros, packed.g_idx, group_size, name)

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise GPTQKernelError(f"GPTQ {self.name}: x must be float32, got {x.dtype}")
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise GPTQKernelError(f"GPTQ {self.name}: x must be [ncols, {self.n_in}], got shape {x.shape}")
        return np.ascontiguousarray(x)

    def matmul(
        self, x: np.ndarray, impl: str = "auto", n_threads: int = 1, pool: ThreadPool | None = None
    ) -> np.ndarray:
        """x f32 [ncols, n_in] (or [n_in]) -> y f32 [ncols, n_out] = x @ W.T"""
        return self.matmul_rows(x, 0, self.n_out, impl=impl, n_threads=n_threads, pool=pool)

    def matmul_rows(
        self,
        x: np.ndarray,
        o0: int,
        o1: int,
        impl: str = "auto",
        n_threads: int = 1,
        pool: ThreadPool | None = None,
        ldy: int | None = None,
    ) -> np.ndarray:
        """Outputs [o0, o1) only, through lm_gptq_matmul_into (the forward
        pass's entry) -> y f32 [ncols, ldy] whose first o1 - o0 columns hold
        them; the rest keep a NaN sentinel, so a stray write shows."""
        x = self._x(x)
        if not 0 <= o0 <= o1 <= self.n_out:
            raise GPTQKernelError(f"GPTQ {self.name}: output range [{o0}, {o1}) is not inside [0, {self.n_out})")
        ldy = o1 - o0 if ldy is None else ldy
        if ldy < o1 - o0:
            raise GPTQKernelError(f"GPTQ {self.name}: ldy={ldy} is smaller than the {o1 - o0} outputs")
        code = _impl(impl)
        pool = pool or default_pool(n_threads)
        ncols = x.shape[0]
        y = np.full((ncols, ldy), np.nan, dtype=np.float32)
        scratch = np.empty(lib.lm_gptq_scratch_bytes(self._c, ncols), dtype=np.uint8)
        rc = lib.lm_gptq_matmul_into(
            pool._tp,
            code,
            self._c,
            o0,
            o1,
            ffi.from_buffer("float[]", x),
            ncols,
            ffi.from_buffer("float[]", y),
            ldy,
            ffi.from_buffer(scratch),
        )
        if rc != 0:
            raise GPTQKernelError(f"GPTQ {self.name}: {last_error()}")
        return y

    def matmul_standalone(self, x: np.ndarray, impl: str = "auto", n_threads: int = 1) -> np.ndarray:
        """The same product through lm_gptq_matmul (its own pool and scratch)."""
        x = self._x(x)
        y = np.empty((x.shape[0], self.n_out), dtype=np.float32)
        rc = lib.lm_gptq_matmul(
            self._c, ffi.from_buffer("float[]", x), x.shape[0], ffi.from_buffer("float[]", y), _impl(impl), n_threads
        )
        if rc != 0:
            raise GPTQKernelError(f"GPTQ {self.name}: {last_error()}")
        return y

    @property
    def nbytes(self) -> int:
        """bytes a mat-vec reads: the packed weights, scales and zeros"""
        return (
            self.qweight.nbytes
            + self.scales.nbytes
            + self.qzeros.nbytes
            + (0 if self.g_idx is None else self.g_idx.nbytes)
        )
