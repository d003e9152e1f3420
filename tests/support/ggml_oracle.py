"""ggml itself as the oracle: libggml-python ships ggml's libggml-base.so (the
reference quantizers and dequantizers) and libggml-cpu.so (its vec_dot kernels).
Bound with ctypes so the oracle shares no code with lamina's cffi binding."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_c_float_p = ctypes.POINTER(ctypes.c_float)


def _lib_dir() -> Path:
    import libggml  # from the libggml-python wheel

    return Path(libggml.__file__).parent / "lib64"


class GGMLOracle:
    def __init__(self) -> None:
        d = _lib_dir()
        self.base = ctypes.CDLL(str(d / "libggml-base.so"))
        self.cpu = ctypes.CDLL(str(d / "libggml-cpu.so"))
        self.base.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.base.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            _c_float_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            _c_float_p,
        ]
        self.base.ggml_quantize_init.argtypes = [ctypes.c_int]
        self.cpu.ggml_cpu_init()  # fills the fp16 tables the vec_dot kernels read

    @staticmethod
    def row_bytes(qtype: GGMLQuantizationType, n: int) -> int:
        bs, ts = GGML_QUANT_SIZES[qtype]
        assert n % bs == 0
        return n // bs * ts

    def quantize_chunk(
        self, qtype: GGMLQuantizationType, x: np.ndarray, imatrix: np.ndarray | None = None
    ) -> np.ndarray:
        """ggml_quantize_chunk over all rows of x: f32 [rows, n] -> u8 [rows, row_bytes]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, n = x.shape
        out = np.zeros((rows, self.row_bytes(qtype, n)), dtype=np.uint8)
        im = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            im = imatrix.ctypes.data_as(_c_float_p)
        self.base.ggml_quantize_init(int(qtype))
        written = self.base.ggml_quantize_chunk(
            int(qtype), x.ctypes.data_as(_c_float_p), out.ctypes.data, 0, rows, n, im
        )
        assert written == out.size
        return out

    def quantize_row_ref(self, qtype: GGMLQuantizationType, x: np.ndarray) -> np.ndarray:
        """quantize_row_<t>_ref for one row (e.g. the activation formats Q8_0, Q8_1, Q8_K)."""
        x = np.ascontiguousarray(x, dtype=np.float32).ravel()
        fn = getattr(self.base, f"quantize_row_{_ggml_name(qtype)}_ref")
        fn.argtypes = [_c_float_p, ctypes.c_void_p, ctypes.c_int64]
        out = np.zeros(self.row_bytes(qtype, x.size), dtype=np.uint8)
        fn(x.ctypes.data_as(_c_float_p), out.ctypes.data, x.size)
        return out

    def quantize_row_cpu(self, qtype: GGMLQuantizationType, x: np.ndarray) -> np.ndarray:
        """ggml-cpu's quantize_row_<t> for one row: how the CPU backend (the SIMD
        build this wheel carries) quantizes activations before a dot."""
        x = np.ascontiguousarray(x, dtype=np.float32).ravel()
        fn = getattr(self.cpu, f"quantize_row_{_ggml_name(qtype)}")
        fn.argtypes = [_c_float_p, ctypes.c_void_p, ctypes.c_int64]
        out = np.zeros(self.row_bytes(qtype, x.size), dtype=np.uint8)
        fn(x.ctypes.data_as(_c_float_p), out.ctypes.data, x.size)
        return out

    def dequantize_row(self, qtype: GGMLQuantizationType, data: np.ndarray, n: int) -> np.ndarray:
        data = np.ascontiguousarray(data, dtype=np.uint8)
        out = np.zeros(n, dtype=np.float32)
        if qtype == GGMLQuantizationType.F16:
            fn = self.base.ggml_fp16_to_fp32_row
        elif qtype == GGMLQuantizationType.BF16:
            fn = self.base.ggml_bf16_to_fp32_row
        else:
            fn = getattr(self.base, f"dequantize_row_{_ggml_name(qtype)}")
        fn.argtypes = [ctypes.c_void_p, _c_float_p, ctypes.c_int64]
        fn(data.ctypes.data, out.ctypes.data_as(_c_float_p), n)
        return out

    def vec_dot(
        self,
        qtype: GGMLQuantizationType,
        partner: GGMLQuantizationType,
        n: int,
        x: np.ndarray,
        y: np.ndarray,
        generic: bool = False,
    ) -> float:
        """ggml's own CPU vec_dot (SIMD build, or the _generic scalar one)."""
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            name = f"ggml_vec_dot_{qtype.name.lower()}"
        else:
            name = f"ggml_vec_dot_{_ggml_name(qtype)}_{_ggml_name(partner)}" + ("_generic" if generic else "")
        fn = getattr(self.cpu, name)
        fn.argtypes = [
            ctypes.c_int,
            _c_float_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        s = ctypes.c_float(0)
        x = np.ascontiguousarray(x)
        y = np.ascontiguousarray(y)
        fn(n, ctypes.byref(s), 0, x.ctypes.data, 0, y.ctypes.data, 0, 1)
        return float(s.value)


def _ggml_name(qtype: GGMLQuantizationType) -> str:
    """ggml's function-name spelling: q4_0, q4_K, iq4_nl, q8_K ..."""
    name = qtype.name.lower()
    return name[:-1] + "K" if name.endswith("_k") else name


_oracle: GGMLOracle | None = None


def oracle() -> GGMLOracle:
    global _oracle
    if _oracle is None:
        _oracle = GGMLOracle()
    return _oracle
