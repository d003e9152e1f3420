"""Block formats from Python: quantize, dequantize, vec_dot and matmul through
the native core, shaped like gguf-py's `gguf.quants` so the two compare
directly.

    quantize(x: f32 [rows, n], qtype)        -> u8 [rows, row_bytes]
    dequantize(data: u8 [rows, row_bytes], qtype) -> f32 [rows, n]
    matmul(w: u8 [rows, row_bytes], qtype, x: f32 [ncols, n]) -> f32 [ncols, rows]

Every size is checked here, so the C side only ever sees valid ones; bad
shapes or types raise ValueError."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from lamina.errors import ImatrixRequiredError, QuantizerUnavailableError
from lamina.native import ffi, last_error, lib

QType = GGMLQuantizationType | str | int

SCALAR, AVX2, AUTO = lib.LM_IMPL_SCALAR, lib.LM_IMPL_AVX2, lib.LM_IMPL_AUTO
# vnni: the AVX2 kernels with the VNNI byte dot (AVX-VNNI or AVX512-VNNI) where a type has them (the same bits)
IMPLS: dict[str, int] = {"auto": AUTO, "scalar": SCALAR, "avx2": AVX2, "vnni": lib.LM_IMPL_VNNI}


def as_qtype(qtype: QType) -> GGMLQuantizationType:
    """GGMLQuantizationType from an enum member, its name ('Q4_K', 'q4_k') or id."""
    if isinstance(qtype, GGMLQuantizationType):
        return qtype
    if isinstance(qtype, str):
        try:
            return GGMLQuantizationType[qtype.upper()]
        except KeyError:
            raise ValueError(f"unknown ggml type name {qtype!r}") from None
    try:
        return GGMLQuantizationType(int(qtype))
    except ValueError:
        raise ValueError(f"unknown ggml type id {qtype!r}") from None


def can_run(qtype: QType) -> bool:
    """Weights of this type run: they dequantize and dot (lm_type_supported)."""
    return bool(lib.lm_type_supported(int(as_qtype(qtype))))


def can_quantize(qtype: QType) -> bool:
    """quantize() can write this type (lm_type_quantizable); the types lamina
    runs but cannot write are can_run and not can_quantize."""
    return bool(lib.lm_type_quantizable(int(as_qtype(qtype))))


def needs_imatrix(qtype: QType) -> bool:
    """quantize() writes this type only with an importance matrix (IQ1_S,
    IQ2_XXS, IQ2_XS: ggml_quantize_requires_imatrix)."""
    return bool(lib.lm_type_needs_imatrix(int(as_qtype(qtype))))


def block_size(qtype: QType) -> int:
    return int(lib.lm_type_block_size(int(as_qtype(qtype))))


def block_bytes(qtype: QType) -> int:
    return int(lib.lm_type_block_bytes(int(as_qtype(qtype))))


def row_bytes(qtype: QType, n: int) -> int:
    bs = block_size(qtype)
    if bs == 0:
        raise ValueError(f"lamina does not implement ggml type {as_qtype(qtype).name}")
    if n % bs:
        raise ValueError(f"row length {n} is not a multiple of {as_qtype(qtype).name}'s block size {bs}")
    return n // bs * block_bytes(qtype)


def vec_dot_type(qtype: QType) -> GGMLQuantizationType:
    return GGMLQuantizationType(int(lib.lm_type_vec_dot_type(int(as_qtype(qtype)))))


def _check(rc: int) -> None:
    if rc != 0:
        raise ValueError(last_error())


def _f32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {x.dtype}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {x.shape}")
    return np.ascontiguousarray(x)


def _impl(impl: str | int) -> int:
    if isinstance(impl, str):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {sorted(IMPLS)}, got {impl!r}")
        impl = IMPLS[impl]
    if not lib.lm_impl_available(impl):
        raise ValueError(f"kernel implementation {impl} is not available on this CPU/build")
    return impl


def quantize(x: np.ndarray, qtype: QType, imatrix: np.ndarray | None = None) -> np.ndarray:
    """f32 [rows, n] -> u8 [rows, row_bytes], byte-identical to ggml_quantize_chunk.

    imatrix: f32 [n], the importance of each column (llama-imatrix's per-tensor
    values), or None. QuantizerUnavailableError for a type lamina only runs
    (can_quantize), ImatrixRequiredError without an imatrix where the type needs
    one (needs_imatrix)."""
    qt = as_qtype(qtype)
    if not can_quantize(qt) and lib.lm_type_supported(int(qt)):
        raise QuantizerUnavailableError(qt.name)
    if imatrix is None and needs_imatrix(qt):
        raise ImatrixRequiredError(qt.name)
    x = _f32_matrix(x, "x")
    rows, n = x.shape
    rb = row_bytes(qt, n)
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n,):
            raise ValueError(f"imatrix must have shape ({n},), got {imatrix.shape}")
    out = np.empty((rows, rb), dtype=np.uint8)
    if rows:
        _check(
            lib.lm_quantize(
                int(qt),
                ffi.from_buffer("float[]", x),
                ffi.from_buffer(out),
                rows,
                n,
                ffi.NULL if imatrix is None else ffi.from_buffer("float[]", imatrix),
            )
        )
    return out


def _u8_rows(data: np.ndarray, qt: GGMLQuantizationType) -> tuple[np.ndarray, int]:
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"quantized data must be uint8, got {data.dtype}")
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2:
        raise ValueError(f"quantized data must be 1-D or 2-D, got shape {data.shape}")
    bb = block_bytes(qt)
    if bb == 0:
        raise ValueError(f"lamina does not implement ggml type {qt.name}")
    if data.shape[1] % bb:
        raise ValueError(f"row of {data.shape[1]} bytes is not a whole number of {qt.name} blocks ({bb} bytes)")
    return np.ascontiguousarray(data), data.shape[1] // bb * block_size(qt)


def dequantize(data: np.ndarray, qtype: QType) -> np.ndarray:
    """u8 [rows, row_bytes] -> f32 [rows, n]."""
    qt = as_qtype(qtype)
    data, n = _u8_rows(data, qt)
    out = np.empty((data.shape[0], n), dtype=np.float32)
    if out.size:
        _check(lib.lm_dequantize(int(qt), ffi.from_buffer(data), ffi.from_buffer("float[]", out), out.size))
    return out


def quantize_activations(x: np.ndarray, qtype: QType, impl: str | int = "auto") -> np.ndarray:
    """f32 [n] -> bytes of x in the dot partner of qtype (Q8_0, Q8_1, Q8_K, F16...),
    by the quantizer of impl (the same bytes from each; tests compare them)."""
    qt = as_qtype(qtype)
    x = _f32_matrix(x, "x")
    if x.shape[0] != 1:
        raise ValueError("quantize_activations takes one row")
    partner = vec_dot_type(qt)
    out = np.empty(row_bytes(partner, x.shape[1]), dtype=np.uint8)
    src = ffi.from_buffer("float[]", x)
    _check(lib.lm_quantize_activations_impl(int(qt), _impl(impl), src, ffi.from_buffer(out), x.shape[1]))
    return out


def vec_dot(w_row: np.ndarray, qtype: QType, y_act: np.ndarray, impl: str | int = "auto") -> float:
    """dot of one weight row (bytes of qtype) with activations already in vec_dot_type(qtype)."""
    qt = as_qtype(qtype)
    w_row, n = _u8_rows(w_row, qt)
    if w_row.shape[0] != 1:
        raise ValueError("vec_dot takes one weight row")
    y_act = np.ascontiguousarray(y_act, dtype=np.uint8)
    if y_act.size != row_bytes(vec_dot_type(qt), n):
        raise ValueError(f"activations hold {y_act.size} bytes, expected {row_bytes(vec_dot_type(qt), n)}")
    out = ffi.new("float *")
    _check(lib.lm_vec_dot(int(qt), _impl(impl), n, ffi.from_buffer(w_row), ffi.from_buffer(y_act), out))
    return float(out[0])


class ThreadPool:
    """A persistent native worker pool (the calling thread is worker 0)."""

    def __init__(self, n_threads: int):
        if not 1 <= n_threads <= 512:
            raise ValueError(f"n_threads must be in 1..512, got {n_threads}")
        self._tp = ffi.gc(lib.lm_threadpool_create(n_threads), lib.lm_threadpool_free)
        if self._tp == ffi.NULL:
            raise MemoryError("could not create the native thread pool")
        self.n_threads = n_threads


_default_pools: dict[int, ThreadPool] = {}


def default_pool(n_threads: int) -> ThreadPool:
    if n_threads not in _default_pools:
        _default_pools[n_threads] = ThreadPool(n_threads)
    return _default_pools[n_threads]


def matmul(
    w: np.ndarray,
    qtype: QType,
    x: np.ndarray,
    n_threads: int = 1,
    impl: str | int = "auto",
    pool: ThreadPool | None = None,
) -> np.ndarray:
    """w: u8 [rows, row_bytes] of qtype, x: f32 [ncols, n] -> y: f32 [ncols, rows] = x @ W.T"""
    qt = as_qtype(qtype)
    w, n = _u8_rows(w, qt)
    x = _f32_matrix(x, "x")
    if x.shape[1] != n:
        raise ValueError(f"x has rows of {x.shape[1]} values, the weights have {n}")
    row_bytes(vec_dot_type(qt), n)  # the activation format's block size must divide n too
    pool = pool or default_pool(n_threads)
    y = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
    if y.size:
        _check(
            lib.lm_matmul(
                pool._tp,
                _impl(impl),
                int(qt),
                ffi.from_buffer(w),
                w.shape[0],
                n,
                ffi.from_buffer("float[]", x),
                x.shape[0],
                ffi.from_buffer("float[]", y),
            )
        )
    return y
