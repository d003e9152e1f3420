"""liblamina_cuda (native/cuda) against the CPU path, in the spirit of ggml's
test-backend-ops: every op and every weight type on the GPU, compared with the
CPU core or a float64 numpy reference by normalized MSE, at batch sizes 1..8
and 32+.

Loading: $LAMINA_CUDA_LIB, else build/cuda/liblamina_cuda.so (what
tools/check_cuda_build.sh builds). Without the library the whole module
skips with one line saying so. With the library but no GPU, the tests that
need no device still run (the library loads, exports its ABI, reports why it
sees no GPU, and rejects bad arguments before any CUDA call); the GPU tests
(marked `gpu`) skip with one line.

Bounds, and why:
- quantizers, dequantizers, KV stores, RoPE, add/scale/bias: bit-exact (the
  same per-value arithmetic as the CPU, no FMA on either side);
- mat-vec of quantized weights vs the CPU: 1e-9 (same quantized activations,
  exact integer block sums, only the order of the float sum differs);
- mat-vec of float weights: the CPU rounds x to F16/BF16 first, the GPU does not;
- GEMM path (f16 weights and activations, f32 accumulate) vs the exact
  product 1e-5, vs the CPU (which quantizes x to 8 bits) ggml's 5e-4;
- norms, softmax, activations, attention vs float64 numpy: 1e-10.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from support.distributions import make, make_imatrix, nmse
from support.gptq_cases import random_gptq
from support.paths import REPO

# the lattice i-quants (quantized with an importance matrix, which some need)
IQ_LATTICE = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M]

ROOT = REPO
HEADER = ROOT / "native" / "cuda" / "lamina_cuda.h"


def _library() -> Path:
    """$LAMINA_CUDA_LIB, else the one beside the loaded core (pip install, dev
    builds with LAMINA_DEV_CUDA=1), else tools/check_cuda_build.sh's."""
    from lamina.engine.offload import cuda_library_path

    beside_core = cuda_library_path()
    return beside_core if beside_core.is_file() else ROOT / "build" / "cuda" / "liblamina_cuda.so"


LIB_PATH = _library()

if not LIB_PATH.is_file():
    pytest.skip(
        f"no CUDA library at {LIB_PATH} (tools/check_cuda_build.sh builds it; LAMINA_CUDA_LIB overrides)",
        allow_module_level=True,
    )
try:
    LIB = ctypes.CDLL(str(LIB_PATH))
except OSError as e:
    pytest.skip(f"CUDA library {LIB_PATH} does not load: {e}", allow_module_level=True)

# ------------------------------------------------------------------ the ABI

OK, E_TYPE, E_SHAPE, E_NOMEM, E_ARG = 0, -1, -2, -4, -5
PATH_AUTO, PATH_MMVQ, PATH_GEMM = 0, 1, 2
ACT_SILU, ACT_GELU = 0, 1
ROPE_NORMAL, ROPE_NEOX = 0, 1

c_int, c_i32, c_i64, c_sz, c_f, c_p = (
    ctypes.c_int,
    ctypes.c_int32,
    ctypes.c_int64,
    ctypes.c_size_t,
    ctypes.c_float,
    ctypes.c_void_p,
)


class GPTQMatrix(ctypes.Structure):
    _fields_ = [
        ("qweight", c_p),
        ("scales", c_p),
        ("qzeros", c_p),
        ("g_idx", c_p),
        ("n_in", c_i32),
        ("n_out", c_i32),
        ("group_size", c_i32),
        ("n_groups", c_i32),
    ]


PROTOS = {
    "lmc_last_error": (ctypes.c_char_p, []),
    "lmc_abi_version": (c_int, []),
    "lmc_device_count": (c_int, []),
    "lmc_device_name": (c_int, [c_int, ctypes.c_char_p, c_sz]),
    "lmc_device_memory": (c_int, [c_int, ctypes.POINTER(c_sz), ctypes.POINTER(c_sz)]),
    "lmc_device_capability": (c_int, [c_int, ctypes.POINTER(c_int), ctypes.POINTER(c_int)]),
    "lmc_set_device": (c_int, [c_int]),
    "lmc_malloc": (c_int, [ctypes.POINTER(c_p), c_sz]),
    "lmc_free": (c_int, [c_p]),
    "lmc_memcpy_h2d": (c_int, [c_p, c_p, c_sz]),
    "lmc_memcpy_d2h": (c_int, [c_p, c_p, c_sz]),
    "lmc_memcpy_d2d": (c_int, [c_p, c_p, c_sz]),
    "lmc_memset": (c_int, [c_p, c_int, c_sz]),
    "lmc_synchronize": (c_int, []),
    "lmc_release": (None, []),
    "lmc_graph_begin": (c_int, []),
    "lmc_graph_end": (c_int, [ctypes.POINTER(c_p)]),
    "lmc_graph_launch": (c_int, [c_p]),
    "lmc_graph_abort": (c_int, []),
    "lmc_graph_free": (c_int, [c_p]),
    "lmc_type_supported": (c_int, [c_int]),
    "lmc_row_bytes": (c_sz, [c_int, c_i64]),
    "lmc_matmul_scratch_bytes": (c_sz, [c_int, c_i64, c_i64, c_i64]),
    "lmc_matmul": (c_int, [c_int, c_p, c_i64, c_i64, c_p, c_i64, c_p, c_i64, c_p, c_sz, c_int]),
    "lmc_quantize_activations": (c_int, [c_int, c_p, c_i64, c_i64, c_p]),
    "lmc_matmul_q": (c_int, [c_int, c_p, c_i64, c_i64, c_int, c_p, c_i64, c_p, c_i64]),
    "lmc_dequantize": (c_int, [c_int, c_p, c_i64, c_p]),
    "lmc_gptq_scratch_bytes": (c_sz, [ctypes.POINTER(GPTQMatrix), c_i64]),
    "lmc_gptq_matmul": (c_int, [ctypes.POINTER(GPTQMatrix), c_p, c_i64, c_p, c_i64, c_p, c_sz, c_int]),
    "lmc_gptq_dequantize": (c_int, [ctypes.POINTER(GPTQMatrix), c_p]),
    "lmc_rms_norm": (c_int, [c_p, c_p, c_p, c_i64, c_i64, c_f, c_f]),
    "lmc_softmax": (c_int, [c_p, c_i64, c_i64]),
    "lmc_act_mul": (c_int, [c_p, c_p, c_i64, c_int]),
    "lmc_add": (c_int, [c_p, c_p, c_i64]),
    "lmc_scale": (c_int, [c_p, c_f, c_i64]),
    "lmc_add_bias": (c_int, [c_p, c_p, c_i64, c_i64]),
    "lmc_rope_cs": (c_int, [c_p, c_p, c_i32, c_i32, c_i32]),
    "lmc_rope_cs_dev": (c_int, [c_p, c_p, c_i32, c_p, c_i32]),
    "lmc_rope": (c_int, [c_p, c_i64, c_i32, c_i32, c_i32, c_p, c_int]),
    "lmc_kv_store": (c_int, [c_int, c_p, c_sz, c_i32, c_p, c_i32, c_i32]),
    "lmc_kv_store_dev": (c_int, [c_int, c_p, c_sz, c_p, c_p, c_i32, c_i32]),
    "lmc_attention": (c_int, [c_p, c_p, c_p, c_p, c_int, c_sz, c_i32, c_i32, c_i32, c_i32, c_i32, c_f, c_i32]),
    "lmc_attention_dev": (c_int, [c_p, c_p, c_p, c_p, c_int, c_sz, c_i32, c_p, c_i32, c_i32, c_i32, c_f, c_i32]),
}
for _name, (_res, _args) in PROTOS.items():
    _fn = getattr(LIB, _name)
    _fn.restype, _fn.argtypes = _res, _args

N_GPU = LIB.lmc_device_count()
NO_GPU_WHY = "" if N_GPU > 0 else LIB.lmc_last_error().decode()


def last_error() -> str:
    return LIB.lmc_last_error().decode()


def check(rc: int) -> None:
    assert rc == OK, f"rc={rc}: {last_error()}"


# ------------------------------------------------ tests that need no GPU


def test_library_exports_every_declared_function():
    names = set(re.findall(r"^\s*(?:const\s+)?[a-z_0-9]+\s*\*?\s*(lmc_[a-z0-9_]+)\s*\(", HEADER.read_text(), re.M))
    assert len(names) >= 30
    assert not [n for n in names if not hasattr(LIB, n)]
    assert set(PROTOS) == names, "PROTOS here must cover the header exactly"
    assert LIB.lmc_abi_version() == 3


def test_device_count_says_why_when_there_is_none():
    n = LIB.lmc_device_count()
    assert n >= 0
    if n == 0:
        assert last_error(), "no GPU but no reason given"


def test_type_table_matches_the_cpu_core():
    from lamina import quants

    supported = [
        T.F32,
        T.F16,
        T.BF16,
        T.Q4_0,
        T.Q4_1,
        T.Q5_0,
        T.Q5_1,
        T.Q8_0,
        T.Q2_K,
        T.Q3_K,
        T.Q4_K,
        T.Q5_K,
        T.Q6_K,
        T.IQ4_NL,
        T.IQ4_XS,
        T.TQ1_0,
        T.TQ2_0,
        T.MXFP4,
        T.NVFP4,
        *IQ_LATTICE,
    ]
    for qt in supported:
        assert LIB.lmc_type_supported(int(qt)) == 1, qt.name
        assert LIB.lmc_row_bytes(int(qt), 1024) == quants.row_bytes(qt, 1024), qt.name
    for bad in (T.Q8_1, T.Q8_K, T.I32, 4, 5, 42, 43, -1, 1024):
        assert LIB.lmc_type_supported(int(bad)) == 0, bad
    assert LIB.lmc_row_bytes(int(T.Q4_K), 100) == 0  # ragged row
    assert LIB.lmc_matmul_scratch_bytes(int(T.Q4_K), 64, 100, 1) == 0
    assert LIB.lmc_matmul_scratch_bytes(int(T.Q4_K), 64, 512, 1) >= quants.row_bytes(T.Q8_K, 512)


FAKE = c_p(0x1000)  # never dereferenced: each call below fails validation first


def _gptq(**kw):
    f = dict(
        qweight=FAKE.value,
        scales=FAKE.value,
        qzeros=FAKE.value,
        g_idx=None,
        n_in=256,
        n_out=64,
        group_size=128,
        n_groups=2,
    )
    f.update(kw)
    return GPTQMatrix(**f)


BAD_CALLS = [
    (
        "unknown type",
        E_TYPE,
        "not supported",
        lambda: LIB.lmc_matmul(99, FAKE, 8, 256, FAKE, 1, FAKE, 8, FAKE, 1 << 20, 0),
    ),
    (
        "activation-only type",
        E_TYPE,
        "not supported",
        lambda: LIB.lmc_matmul(int(T.Q8_K), FAKE, 8, 256, FAKE, 1, FAKE, 8, FAKE, 1 << 20, 0),
    ),
    (
        "ragged n",
        E_SHAPE,
        "n=100",
        lambda: LIB.lmc_matmul(int(T.Q4_K), FAKE, 8, 100, FAKE, 1, FAKE, 8, FAKE, 1 << 20, 0),
    ),
    (
        "ldy < rows",
        E_SHAPE,
        "ldy",
        lambda: LIB.lmc_matmul(int(T.Q4_0), FAKE, 8, 256, FAKE, 1, FAKE, 7, FAKE, 1 << 20, 0),
    ),
    ("bad path", E_ARG, "path", lambda: LIB.lmc_matmul(int(T.Q4_0), FAKE, 8, 256, FAKE, 1, FAKE, 8, FAKE, 1 << 20, 7)),
    (
        "NULL weights",
        E_ARG,
        "NULL",
        lambda: LIB.lmc_matmul(int(T.Q4_0), None, 8, 256, FAKE, 1, FAKE, 8, FAKE, 1 << 20, 0),
    ),
    (
        "scratch too small",
        E_ARG,
        "scratch",
        lambda: LIB.lmc_matmul(int(T.Q4_0), FAKE, 8, 256, FAKE, 1, FAKE, 8, FAKE, 3, 0),
    ),
    (
        "no scratch for GEMM",
        E_ARG,
        "scratch",
        lambda: LIB.lmc_matmul(int(T.Q4_K), FAKE, 8, 256, FAKE, 16, FAKE, 8, None, 0, PATH_GEMM),
    ),
    (
        "matmul_q float weights",
        E_TYPE,
        "lmc_matmul",
        lambda: LIB.lmc_matmul_q(int(T.F16), FAKE, 8, 256, int(T.F16), FAKE, 1, FAKE, 8),
    ),
    (
        "matmul_q wrong partner",
        E_TYPE,
        "dotted with",
        lambda: LIB.lmc_matmul_q(int(T.Q4_K), FAKE, 8, 256, int(T.Q8_0), FAKE, 1, FAKE, 8),
    ),
    (
        "matmul_q ragged n",
        E_SHAPE,
        "n=100",
        lambda: LIB.lmc_matmul_q(int(T.Q4_0), FAKE, 8, 100, int(T.Q8_0), FAKE, 1, FAKE, 8),
    ),
    ("quantize ragged", E_SHAPE, "n=100", lambda: LIB.lmc_quantize_activations(int(T.Q2_K), FAKE, 100, 1, FAKE)),
    ("dequantize ragged", E_SHAPE, "n_total", lambda: LIB.lmc_dequantize(int(T.Q4_0), FAKE, 33, FAKE)),
    ("gptq NULL matrix", E_ARG, "NULL", lambda: LIB.lmc_gptq_matmul(None, FAKE, 1, FAKE, 64, FAKE, 1 << 20, 0)),
    (
        "gptq n_groups",
        E_SHAPE,
        "n_groups",
        lambda: LIB.lmc_gptq_matmul(ctypes.byref(_gptq(n_groups=3)), FAKE, 1, FAKE, 64, FAKE, 1 << 20, 0),
    ),
    (
        "gptq n_in",
        E_SHAPE,
        "multiples of 8",
        lambda: LIB.lmc_gptq_matmul(ctypes.byref(_gptq(n_in=250)), FAKE, 1, FAKE, 64, FAKE, 1 << 20, 0),
    ),
    (
        "gptq ldy",
        E_SHAPE,
        "ldy",
        lambda: LIB.lmc_gptq_matmul(ctypes.byref(_gptq()), FAKE, 1, FAKE, 63, FAKE, 1 << 20, 0),
    ),
    ("gptq NULL qweight", E_ARG, "NULL", lambda: LIB.lmc_gptq_dequantize(ctypes.byref(_gptq(qweight=None)), FAKE)),
    (
        "gptq scratch",
        E_ARG,
        "scratch",
        lambda: LIB.lmc_gptq_matmul(ctypes.byref(_gptq()), FAKE, 16, FAKE, 64, FAKE, 8, PATH_GEMM),
    ),
    ("rms_norm n=0", E_SHAPE, "n=0", lambda: LIB.lmc_rms_norm(FAKE, FAKE, FAKE, 4, 0, 1e-5, 0.0)),
    ("rms_norm NULL w", E_ARG, "NULL", lambda: LIB.lmc_rms_norm(FAKE, FAKE, None, 4, 64, 1e-5, 0.0)),
    ("softmax n<0", E_SHAPE, "n=-1", lambda: LIB.lmc_softmax(FAKE, 1, -1)),
    ("unknown activation", E_ARG, "activation", lambda: LIB.lmc_act_mul(FAKE, FAKE, 16, 5)),
    ("add NULL", E_ARG, "NULL", lambda: LIB.lmc_add(FAKE, None, 16)),
    ("rope odd n_rot", E_SHAPE, "n_rot", lambda: LIB.lmc_rope(FAKE, 4, 8, 64, 63, FAKE, ROPE_NORMAL)),
    ("rope n_rot > head_dim", E_SHAPE, "n_rot", lambda: LIB.lmc_rope(FAKE, 4, 8, 64, 128, FAKE, ROPE_NORMAL)),
    ("rope layout", E_ARG, "layout", lambda: LIB.lmc_rope(FAKE, 4, 8, 64, 64, FAKE, 2)),
    ("rope_cs n_rot", E_SHAPE, "n_rot", lambda: LIB.lmc_rope_cs(FAKE, FAKE, 0, 0, 4)),
    ("kv type", E_TYPE, "KV cache type", lambda: LIB.lmc_kv_store(int(T.Q4_0), FAKE, 1024, 0, FAKE, 1, 256)),
    ("kv q8_0 dim", E_SHAPE, "kv_dim", lambda: LIB.lmc_kv_store(int(T.Q8_0), FAKE, 1024, 0, FAKE, 1, 48)),
    ("kv row bytes", E_SHAPE, "kv_row_bytes", lambda: LIB.lmc_kv_store(int(T.F16), FAKE, 100, 0, FAKE, 1, 64)),
    (
        "attention head_dim",
        E_SHAPE,
        "head_dim",
        lambda: LIB.lmc_attention(FAKE, FAKE, FAKE, FAKE, int(T.F16), 1 << 20, 1, 0, 8, 8, 1024, 0.1, 0),
    ),
    (
        "attention gqa",
        E_SHAPE,
        "n_head_kv",
        lambda: LIB.lmc_attention(FAKE, FAKE, FAKE, FAKE, int(T.F16), 1 << 20, 1, 0, 8, 3, 64, 0.1, 0),
    ),
    (
        "attention row bytes",
        E_SHAPE,
        "kv_row_bytes",
        lambda: LIB.lmc_attention(FAKE, FAKE, FAKE, FAKE, int(T.F16), 255, 1, 0, 8, 2, 64, 0.1, 0),
    ),
    (
        "attention window",
        E_SHAPE,
        "window",
        lambda: LIB.lmc_attention(FAKE, FAKE, FAKE, FAKE, int(T.F32), 1 << 20, 1, 0, 8, 2, 64, 0.1, -1),
    ),
    # the position by value: refused when negative
    ("rope_cs pos0", E_SHAPE, "pos0=-1", lambda: LIB.lmc_rope_cs(FAKE, FAKE, 64, -1, 4)),
    ("kv pos0", E_SHAPE, "pos0=-1", lambda: LIB.lmc_kv_store(int(T.F16), FAKE, 1024, -1, FAKE, 1, 256)),
    (
        "attention pos0",
        E_SHAPE,
        "pos0=-1",
        lambda: LIB.lmc_attention(FAKE, FAKE, FAKE, FAKE, int(T.F32), 1 << 20, 1, -1, 8, 2, 64, 0.1, 0),
    ),
    # the position in device memory: a NULL pointer is refused, even for no
    # work, and the other arguments are checked as the by-value twin's, the
    # message naming the _dev op
    (
        "rope_cs_dev NULL pos",
        E_ARG,
        "lmc_rope_cs_dev: NULL pos0_dev",
        lambda: LIB.lmc_rope_cs_dev(FAKE, FAKE, 64, None, 4),
    ),
    ("rope_cs_dev NULL pos, no tokens", E_ARG, "NULL pos0_dev", lambda: LIB.lmc_rope_cs_dev(None, None, 64, None, 0)),
    ("rope_cs_dev n_rot", E_SHAPE, "lmc_rope_cs_dev: n_rot=63", lambda: LIB.lmc_rope_cs_dev(FAKE, FAKE, 63, FAKE, 4)),
    (
        "rope_cs_dev NULL cs",
        E_ARG,
        "lmc_rope_cs_dev: NULL pointer",
        lambda: LIB.lmc_rope_cs_dev(None, FAKE, 64, FAKE, 4),
    ),
    (
        "kv_store_dev NULL pos",
        E_ARG,
        "lmc_kv_store_dev: NULL pos0_dev",
        lambda: LIB.lmc_kv_store_dev(int(T.F16), FAKE, 1024, None, FAKE, 1, 256),
    ),
    (
        "kv_store_dev NULL pos, no tokens",
        E_ARG,
        "NULL pos0_dev",
        lambda: LIB.lmc_kv_store_dev(int(T.F16), None, 1024, None, None, 0, 256),
    ),
    (
        "kv_store_dev type",
        E_TYPE,
        "lmc_kv_store_dev: KV cache type",
        lambda: LIB.lmc_kv_store_dev(int(T.Q4_0), FAKE, 1024, FAKE, FAKE, 1, 256),
    ),
    (
        "kv_store_dev q8_0 dim",
        E_SHAPE,
        "kv_dim=48",
        lambda: LIB.lmc_kv_store_dev(int(T.Q8_0), FAKE, 1024, FAKE, FAKE, 1, 48),
    ),
    (
        "kv_store_dev row bytes",
        E_SHAPE,
        "kv_row_bytes",
        lambda: LIB.lmc_kv_store_dev(int(T.F16), FAKE, 100, FAKE, FAKE, 1, 64),
    ),
    (
        "kv_store_dev NULL src",
        E_ARG,
        "lmc_kv_store_dev: NULL pointer",
        lambda: LIB.lmc_kv_store_dev(int(T.F16), FAKE, 1024, FAKE, None, 1, 256),
    ),
    (
        "attention_dev NULL pos",
        E_ARG,
        "lmc_attention_dev: NULL pos0_dev",
        lambda: LIB.lmc_attention_dev(FAKE, FAKE, FAKE, FAKE, int(T.F16), 1 << 20, 1, None, 8, 2, 64, 0.1, 0),
    ),
    (
        "attention_dev NULL pos, no tokens",
        E_ARG,
        "NULL pos0_dev",
        lambda: LIB.lmc_attention_dev(None, None, None, None, int(T.F16), 1 << 20, 0, None, 8, 2, 64, 0.1, 0),
    ),
    (
        "attention_dev head_dim",
        E_SHAPE,
        "lmc_attention_dev: head_dim",
        lambda: LIB.lmc_attention_dev(FAKE, FAKE, FAKE, FAKE, int(T.F16), 1 << 20, 1, FAKE, 8, 8, 1024, 0.1, 0),
    ),
    (
        "attention_dev gqa",
        E_SHAPE,
        "n_head_kv",
        lambda: LIB.lmc_attention_dev(FAKE, FAKE, FAKE, FAKE, int(T.F16), 1 << 20, 1, FAKE, 8, 3, 64, 0.1, 0),
    ),
    (
        "attention_dev window",
        E_SHAPE,
        "window",
        lambda: LIB.lmc_attention_dev(FAKE, FAKE, FAKE, FAKE, int(T.F32), 1 << 20, 1, FAKE, 8, 2, 64, 0.1, -1),
    ),
    (
        "attention_dev NULL q",
        E_ARG,
        "lmc_attention_dev: NULL pointer",
        lambda: LIB.lmc_attention_dev(FAKE, None, FAKE, FAKE, int(T.F32), 1 << 20, 1, FAKE, 8, 2, 64, 0.1, 0),
    ),
    ("malloc NULL", E_ARG, "NULL", lambda: LIB.lmc_malloc(None, 16)),
    ("device_name NULL", E_ARG, "buffer", lambda: LIB.lmc_device_name(0, None, 0)),
    ("device_memory NULL", E_ARG, "NULL", lambda: LIB.lmc_device_memory(0, None, None)),
    ("graph_end NULL", E_ARG, "NULL", lambda: LIB.lmc_graph_end(None)),
    ("graph_launch NULL", E_ARG, "NULL", lambda: LIB.lmc_graph_launch(None)),
]


@pytest.mark.parametrize("what,code,words,call", BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_bad_arguments_are_refused_before_any_cuda_call(what, code, words, call):
    rc = call()
    assert rc == code, f"{what}: rc={rc} ({last_error()})"
    assert words in last_error(), f"{what}: {last_error()!r} does not mention {words!r}"


@pytest.mark.parametrize(
    "call",
    [
        lambda: LIB.lmc_matmul(int(T.Q4_0), None, 0, 256, None, 1, None, 0, None, 0, 0),  # no rows
        lambda: LIB.lmc_matmul(int(T.Q4_0), None, 8, 256, None, 0, None, 8, None, 0, 0),  # no columns
        lambda: LIB.lmc_add(None, None, 0),
        lambda: LIB.lmc_rms_norm(None, None, None, 0, 64, 1e-5, 0.0),
        lambda: LIB.lmc_attention(None, None, None, None, int(T.F16), 256, 0, 0, 8, 2, 64, 0.1, 0),
        lambda: LIB.lmc_kv_store(int(T.F16), None, 256, 0, None, 0, 64),
        # the _dev ops with a position pointer (never read: no kernel runs)
        lambda: LIB.lmc_rope_cs_dev(None, None, 64, FAKE, 0),
        lambda: LIB.lmc_kv_store_dev(int(T.F16), None, 256, FAKE, None, 0, 64),
        lambda: LIB.lmc_attention_dev(None, None, None, None, int(T.F16), 256, 0, FAKE, 8, 2, 64, 0.1, 0),
        lambda: LIB.lmc_memcpy_h2d(None, None, 0),
        lambda: LIB.lmc_free(None),
        lambda: LIB.lmc_graph_free(None),
    ],
)
def test_empty_work_is_a_no_op(call):
    assert call() == OK, last_error()


# ------------------------------------------------------------ GPU helpers


class Dev:
    """One device allocation; up() copies a numpy array in, down() out."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = c_p()
        check(LIB.lmc_malloc(ctypes.byref(self.ptr), self.nbytes))

    @classmethod
    def of(cls, a: np.ndarray) -> Dev:
        a = np.ascontiguousarray(a)
        d = cls(a.nbytes)
        d.up(a)
        return d

    def up(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        assert a.nbytes <= self.nbytes
        check(LIB.lmc_memcpy_h2d(self.ptr, a.ctypes.data, a.nbytes))

    def down(self, dtype, shape) -> np.ndarray:
        out = np.empty(shape, dtype)
        check(LIB.lmc_memcpy_d2h(out.ctypes.data, self.ptr, out.nbytes))
        return out

    @property
    def _as_parameter_(self) -> c_p:
        # ctypes passes a Dev as its pointer, and a temporary Dev.of(a) in a
        # call's arguments stays alive (allocated) until the call returns;
        # lmc_free's cudaFree then waits for the kernels that use it
        return self.ptr

    def __del__(self):
        if getattr(self, "ptr", None) is not None and self.ptr.value:
            LIB.lmc_free(self.ptr)
            self.ptr = c_p()


WEIGHT_TYPES = [
    T.F32,
    T.F16,
    T.BF16,
    T.Q4_0,
    T.Q4_1,
    T.Q5_0,
    T.Q5_1,
    T.Q8_0,
    T.Q2_K,
    T.Q3_K,
    T.Q4_K,
    T.Q5_K,
    T.Q6_K,
    T.IQ4_NL,
    T.IQ4_XS,
    T.TQ1_0,
    T.TQ2_0,
    T.MXFP4,
    T.NVFP4,
    *IQ_LATTICE,
]
QUANT_TYPES = [t for t in WEIGHT_TYPES if t not in (T.F32, T.F16, T.BF16)]
ROWS, N = 83, 768  # a ragged last thread block; 3 super-blocks: warps end mid-pass
COLS = [1, 2, 3, 4, 5, 6, 7, 8, 32, 33]
MMVQ_BOUND = {T.F32: 1e-10, T.F16: 1e-6, T.BF16: 2e-5}


def _weights(qt, rows=ROWS, n=N, seed=0):
    from lamina import quants

    w = make("weights_like", rows, n, seed)
    # the lattice i-quants with an importance matrix (some need one)
    wq = quants.quantize(w, qt, imatrix=make_imatrix(n, seed) if qt in IQ_LATTICE else None)
    return wq, quants.dequantize(wq, qt)


def _matmul_gpu(qt, wq, rows, n, x, path, ldy=None):
    ncols = x.shape[0]
    ldy = ldy or rows
    dw, dx = Dev.of(wq), Dev.of(x)
    dy = Dev(4 * ncols * ldy)
    check(LIB.lmc_memset(dy.ptr, 0x7F, dy.nbytes))
    need = LIB.lmc_matmul_scratch_bytes(int(qt), rows, n, ncols)
    ds = Dev(need)
    check(LIB.lmc_matmul(int(qt), dw.ptr, rows, n, dx.ptr, ncols, dy.ptr, ldy, ds.ptr, need, path))
    return dy.down(np.float32, (ncols, ldy))


# ----------------------------------------------------- quantize, dequantize


@pytest.mark.gpu
@pytest.mark.parametrize("qt", [T.Q4_0, T.Q4_1, T.Q4_K, T.F16, T.BF16], ids=["q8_0", "q8_1", "q8_K", "f16", "bf16"])
@pytest.mark.parametrize("dist", ["normal", "outliers", "all_zero", "tiny", "large", "constant", "sparse"])
def test_activation_quantizers_are_bit_exact(qt, dist):
    from lamina import quants

    x = make(dist, 9, N, 3)
    want = np.stack([quants.quantize_activations(x[r], qt) for r in range(9)])
    out = Dev(want.nbytes)
    check(LIB.lmc_quantize_activations(int(qt), Dev.of(x), N, 9, out.ptr))
    np.testing.assert_array_equal(out.down(np.uint8, want.shape), want)


@pytest.mark.gpu
@pytest.mark.parametrize("qt", WEIGHT_TYPES, ids=lambda q: q.name)
def test_dequantize_is_bit_exact(qt):
    wq, want = _weights(qt)
    out = Dev(want.nbytes)
    check(LIB.lmc_dequantize(int(qt), Dev.of(wq), want.size, out.ptr))
    np.testing.assert_array_equal(out.down(np.float32, want.shape).view(np.uint32), want.view(np.uint32))


# ------------------------------------------------------------------ matmul


@pytest.mark.gpu
@pytest.mark.parametrize("ncols", COLS)
@pytest.mark.parametrize("qt", WEIGHT_TYPES, ids=lambda q: q.name)
def test_matmul_mat_vec_path_vs_cpu(qt, ncols):
    from lamina import quants

    wq, _ = _weights(qt)
    x = make("normal", ncols, N, ncols)
    want = quants.matmul(wq, qt, x)
    got = _matmul_gpu(qt, wq, ROWS, N, x, PATH_MMVQ)
    err = nmse(got, want)
    assert err <= MMVQ_BOUND.get(qt, 1e-9), f"{qt.name} ncols={ncols}: nmse {err:.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("ncols", [1, 4, 8, 9, 32, 64])
@pytest.mark.parametrize("qt", WEIGHT_TYPES, ids=lambda q: q.name)
def test_matmul_gemm_path(qt, ncols):
    from lamina import quants

    wq, wf = _weights(qt)
    x = make("normal", ncols, N, 100 + ncols)
    exact = x.astype(np.float64) @ wf.astype(np.float64).T
    got = _matmul_gpu(qt, wq, ROWS, N, x, PATH_GEMM)
    bound = 1e-10 if qt == T.F32 else 1e-5
    assert nmse(got, exact) <= bound, f"{qt.name} ncols={ncols}: nmse vs exact {nmse(got, exact):.3g}"
    assert nmse(got, quants.matmul(wq, qt, x)) <= 5e-4


PARTNER = {
    T.Q4_0: T.Q8_0,
    T.Q5_0: T.Q8_0,
    T.Q8_0: T.Q8_0,
    T.IQ4_NL: T.Q8_0,
    T.MXFP4: T.Q8_0,
    T.NVFP4: T.Q8_0,
    T.Q4_1: T.Q8_1,
    T.Q5_1: T.Q8_1,
}


@pytest.mark.gpu
@pytest.mark.parametrize("ncols", [1, 3, 8, 9])
@pytest.mark.parametrize("qt", QUANT_TYPES, ids=lambda q: q.name)
def test_matmul_of_prequantized_x_is_the_mat_vec_path(qt, ncols):
    """x quantized once (lmc_quantize_activations) and read by lmc_matmul_q:
    the bits of lmc_matmul's mat-vec path, which quantizes x itself"""
    from lamina import quants

    wq, _ = _weights(qt)
    x = make("normal", ncols, N, 40 + ncols)
    want = _matmul_gpu(qt, wq, ROWS, N, x, PATH_MMVQ)
    partner = PARTNER.get(qt, T.Q8_K)
    xq = Dev(ncols * quants.row_bytes(partner, N))
    check(LIB.lmc_quantize_activations(int(qt), Dev.of(x), N, ncols, xq.ptr))
    dy = Dev(4 * ncols * ROWS)
    check(LIB.lmc_matmul_q(int(qt), Dev.of(wq), ROWS, N, int(partner), xq.ptr, ncols, dy.ptr, ROWS))
    np.testing.assert_array_equal(dy.down(np.float32, (ncols, ROWS)).view(np.uint32), want.view(np.uint32))


@pytest.mark.gpu
@pytest.mark.parametrize("path", [PATH_MMVQ, PATH_GEMM, PATH_AUTO])
def test_matmul_writes_only_its_rows_of_a_wider_output(path):
    from lamina import quants

    wq, _ = _weights(T.Q4_K)
    x = make("normal", 12, N, 5)
    got = _matmul_gpu(T.Q4_K, wq, ROWS, N, x, path, ldy=ROWS + 13)
    pad = got[:, ROWS:].view(np.uint32)
    assert np.all(pad == 0x7F7F7F7F), "values past rows were overwritten"
    assert nmse(got[:, :ROWS], quants.matmul(wq, T.Q4_K, x)) <= 5e-4


@pytest.mark.gpu
@pytest.mark.parametrize("ncols", [1, 16])
def test_output_head_sized_matmul_spans_several_tiles(ncols):
    """a vocabulary-sized Q6_K head: the GEMM path dequantizes it in two tiles"""
    from lamina import quants

    rows, n = 33000, 1024
    wq, _ = _weights(T.Q6_K, rows, n, 9)
    x = make("normal", ncols, n, 9)
    got = _matmul_gpu(T.Q6_K, wq, rows, n, x, PATH_AUTO)
    assert nmse(got, quants.matmul(wq, T.Q6_K, x, n_threads=2)) <= (1e-9 if ncols == 1 else 5e-4)


# -------------------------------------------------------------------- GPTQ

GPTQ_CASES = [
    (512, 96, 128, False, True),
    (512, 96, 128, False, False),
    (384, 40, -1, False, False),
    (256, 64, 32, True, True),
    (200, 24, 40, True, True),
]


@pytest.mark.gpu
@pytest.mark.parametrize("n_in,n_out,group_size,act_order,with_g_idx", GPTQ_CASES)
@pytest.mark.parametrize("ncols", [1, 3, 8, 9, 32])
@pytest.mark.parametrize("path", [PATH_MMVQ, PATH_GEMM])
def test_gptq_matmul(n_in, n_out, group_size, act_order, with_g_idx, ncols, path):
    packed, g_idx, G, _ = random_gptq(np.random.default_rng(0), n_in, n_out, group_size, act_order)
    W = packed.dequantize()
    bufs = [
        Dev.of(np.ascontiguousarray(packed.qweight, np.int32)),
        Dev.of(np.ascontiguousarray(packed.scales).view(np.uint16)),
        Dev.of(np.ascontiguousarray(packed.qzeros, np.int32)),
    ]
    gi = Dev.of(g_idx) if with_g_idx else None
    m = GPTQMatrix(
        bufs[0].ptr.value,
        bufs[1].ptr.value,
        bufs[2].ptr.value,
        gi.ptr.value if gi else None,
        n_in,
        n_out,
        group_size,
        G,
    )
    deq = Dev(W.nbytes)
    check(LIB.lmc_gptq_dequantize(ctypes.byref(m), deq.ptr))
    np.testing.assert_array_equal(deq.down(np.float32, W.shape).view(np.uint32), W.view(np.uint32))
    x = make("normal", ncols, n_in, ncols)
    dy = Dev(4 * ncols * n_out)
    need = LIB.lmc_gptq_scratch_bytes(ctypes.byref(m), ncols)
    ds = Dev(need)
    check(LIB.lmc_gptq_matmul(ctypes.byref(m), Dev.of(x), ncols, dy.ptr, n_out, ds.ptr, need, path))
    exact = x.astype(np.float64) @ W.astype(np.float64).T
    err = nmse(dy.down(np.float32, (ncols, n_out)), exact)
    assert err <= (1e-10 if path == PATH_MMVQ else 1e-5), f"nmse {err:.3g}"


# ------------------------------------------------------------ row-wise ops

ROW_COUNTS = [1, 2, 5, 8, 32, 37]


def rms_norm_ref(x, w, eps, add_one):
    x64 = x.astype(np.float64)
    scale = 1.0 / np.sqrt((x64 * x64).mean(axis=-1, keepdims=True) + eps)
    return x64 * scale * (w.astype(np.float64) + add_one)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("add_one", [0.0, 1.0])
@pytest.mark.parametrize("in_place", [False, True])
def test_rms_norm(rows, add_one, in_place):
    n = 576
    x = make("heavy_tails", rows, n, rows)
    w = make("weights_like", 1, n, 1)[0]
    dx, dw = Dev.of(x), Dev.of(w)
    out = dx if in_place else Dev(x.nbytes)
    check(LIB.lmc_rms_norm(out.ptr, dx.ptr, dw.ptr, rows, n, 1e-6, add_one))
    assert nmse(out.down(np.float32, x.shape), rms_norm_ref(x, w, 1e-6, add_one)) <= 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("n", [1, 17, 1000])
def test_softmax(rows, n):
    x = make("large", rows, n, n) * np.float32(1e-3)
    d = Dev.of(x)
    check(LIB.lmc_softmax(d.ptr, rows, n))
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    assert nmse(d.down(np.float32, x.shape), e / e.sum(axis=1, keepdims=True)) <= 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("act", [ACT_SILU, ACT_GELU], ids=["silu", "gelu_tanh"])
@pytest.mark.parametrize("rows", [1, 8, 33])
def test_gated_activation(act, rows):
    n = 1536
    g = make("normal", rows, n, 1) * np.float32(3)
    u = make("normal", rows, n, 2)
    dg, du = Dev.of(g), Dev.of(u)
    check(LIB.lmc_act_mul(dg.ptr, du.ptr, g.size, act))
    g64 = g.astype(np.float64)
    if act == ACT_SILU:
        ref = g64 / (1 + np.exp(-g64)) * u
    else:
        ref = 0.5 * g64 * (1 + np.tanh(np.sqrt(2 / np.pi) * g64 * (1 + 0.044715 * g64 * g64))) * u
    assert nmse(dg.down(np.float32, g.shape), ref) <= 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 8, 40])
def test_add_scale_bias_are_exact(rows):
    n = 960
    x, y = make("normal", rows, n, 1), make("normal", rows, n, 2)
    b = make("normal", 1, n, 3)[0]
    d = Dev.of(x)
    check(LIB.lmc_add(d.ptr, Dev.of(y), x.size))
    np.testing.assert_array_equal(d.down(np.float32, x.shape), x + y)
    check(LIB.lmc_scale(d.ptr, np.float32(33.941125), x.size))
    np.testing.assert_array_equal(d.down(np.float32, x.shape), (x + y) * np.float32(33.941125))
    check(LIB.lmc_add_bias(d.ptr, Dev.of(b), rows, n))
    np.testing.assert_array_equal(d.down(np.float32, x.shape), (x + y) * np.float32(33.941125) + b)


def rope_cs_ref(inv_freq, pos0, n_tokens):
    theta = (pos0 + np.arange(n_tokens))[:, None].astype(np.float64) * inv_freq[None, :]
    cs = np.empty((n_tokens, 2 * len(inv_freq)), np.float32)
    cs[:, 0::2], cs[:, 1::2] = np.cos(theta), np.sin(theta)
    return cs


def rope_ref(x, cs, n_heads, hd, n_rot, neox):
    x = x.copy().reshape(x.shape[0], n_heads, hd)
    half = n_rot // 2
    i = np.arange(half)
    a, b = (i, i + half) if neox else (2 * i, 2 * i + 1)
    c, s = cs[:, None, 0::2], cs[:, None, 1::2]
    x0, x1 = x[:, :, a].copy(), x[:, :, b].copy()
    x[:, :, a] = x0 * c - x1 * s
    x[:, :, b] = x0 * s + x1 * c
    return x.reshape(x.shape[0], -1)


@pytest.mark.gpu
@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("rows,n_heads,hd,n_rot", [(1, 8, 64, 64), (7, 4, 128, 64), (33, 3, 80, 80)])
def test_rope(neox, rows, n_heads, hd, n_rot):
    inv_freq = 10000.0 ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    pos0 = 1000
    cs = Dev(4 * rows * n_rot)
    check(LIB.lmc_rope_cs(cs.ptr, Dev.of(inv_freq), n_rot, pos0, rows))
    cs_host = cs.down(np.float32, (rows, n_rot))
    want = rope_cs_ref(inv_freq, pos0, rows)
    # the device's double cos/sin may differ from libm's in the last double
    # bit, which survives the rounding to float at most as one ulp
    assert np.max(np.abs(cs_host.view(np.int32) - want.view(np.int32))) <= 1
    x = make("normal", rows, n_heads * hd, 4)
    d = Dev.of(x)
    check(LIB.lmc_rope(d.ptr, rows, n_heads, hd, n_rot, cs.ptr, ROPE_NEOX if neox else ROPE_NORMAL))
    np.testing.assert_array_equal(d.down(np.float32, x.shape), rope_ref(x, cs_host, n_heads, hd, n_rot, neox))


def _pos_dev(pos: int) -> Dev:
    """a position in device memory, as the _dev ops read it"""
    return Dev.of(np.array([pos], np.int32))


# the positions the _dev ops are compared with their by-value twins at: the
# first, small ones, one past a chunk of the attention kernel (128 keys), far
DEV_POSITIONS = [0, 1, 7, 128, 129, 1000]


@pytest.mark.gpu
@pytest.mark.parametrize("n_rot,n_tokens", [(64, 1), (80, 5), (128, 33)])
def test_rope_cs_dev_writes_the_bytes_of_rope_cs(n_rot, n_tokens):
    inv_freq = Dev.of(10000.0 ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot))
    a, b = Dev(4 * n_tokens * n_rot), Dev(4 * n_tokens * n_rot)
    pos = _pos_dev(0)
    for pos0 in DEV_POSITIONS:
        pos.up(np.array([pos0], np.int32))
        check(LIB.lmc_rope_cs(a.ptr, inv_freq, n_rot, pos0, n_tokens))
        check(LIB.lmc_rope_cs_dev(b.ptr, inv_freq, n_rot, pos.ptr, n_tokens))
        np.testing.assert_array_equal(
            b.down(np.uint8, (b.nbytes,)), a.down(np.uint8, (a.nbytes,)), err_msg=f"pos0 {pos0}"
        )


# ------------------------------------------------------ KV cache, attention

KV_TYPES = [T.F32, T.F16, T.Q8_0]


def _kv_row_bytes(kv_type, kv_dim):
    from lamina import quants

    return quants.row_bytes(kv_type, kv_dim) + 16  # padded rows: the stride is the caller's


def _cpu_rows(kv_type, src):
    """the bytes the CPU's from_float writes for each row (its KV store: the
    activation quantizer, not the weight one)"""
    from lamina import quants

    if kv_type == T.F32:
        return src.view(np.uint8).reshape(src.shape[0], -1)
    return np.stack([quants.quantize_activations(row, kv_type) for row in src])


@pytest.mark.gpu
@pytest.mark.parametrize("kv_type", KV_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 5, 32])
def test_kv_store_writes_the_cpu_bytes(kv_type, n_tokens):
    kv_dim, n_ctx, pos0 = 256, 64, 7
    rb = _kv_row_bytes(kv_type, kv_dim)
    cache = Dev(n_ctx * rb)
    check(LIB.lmc_memset(cache.ptr, 0xAB, cache.nbytes))
    src = make("heavy_tails", n_tokens, kv_dim, n_tokens)
    check(LIB.lmc_kv_store(int(kv_type), cache.ptr, rb, pos0, Dev.of(src), n_tokens, kv_dim))
    got = cache.down(np.uint8, (n_ctx, rb))
    want = _cpu_rows(kv_type, src)
    np.testing.assert_array_equal(got[pos0 : pos0 + n_tokens, : want.shape[1]], want)
    assert np.all(got[:pos0] == 0xAB) and np.all(got[pos0 + n_tokens :] == 0xAB)
    assert np.all(got[:, want.shape[1] :] == 0xAB), "row padding was written"


@pytest.mark.gpu
@pytest.mark.parametrize("kv_type", KV_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 5])
def test_kv_store_dev_writes_the_bytes_of_kv_store(kv_type, n_tokens):
    kv_dim, n_ctx = 256, 1024 + 8
    rb = _kv_row_bytes(kv_type, kv_dim)
    a, b = Dev(n_ctx * rb), Dev(n_ctx * rb)
    for c in (a, b):
        check(LIB.lmc_memset(c.ptr, 0xAB, c.nbytes))
    pos = _pos_dev(0)
    for i, pos0 in enumerate(DEV_POSITIONS):
        src = Dev.of(make("heavy_tails", n_tokens, kv_dim, 10 + i))
        pos.up(np.array([pos0], np.int32))
        check(LIB.lmc_kv_store(int(kv_type), a.ptr, rb, pos0, src, n_tokens, kv_dim))
        check(LIB.lmc_kv_store_dev(int(kv_type), b.ptr, rb, pos.ptr, src, n_tokens, kv_dim))
        np.testing.assert_array_equal(
            b.down(np.uint8, (n_ctx, rb)), a.down(np.uint8, (n_ctx, rb)), err_msg=f"pos0 {pos0}"
        )


def attention_ref(q, k, v, n_tokens, pos0, n_head, n_head_kv, hd, scale, window):
    """q [T][n_head*hd], k/v [n_pos][n_head_kv*hd] (dequantized cache), float64"""
    group = n_head // n_head_kv
    out = np.zeros((n_tokens, n_head * hd))
    for t in range(n_tokens):
        pos = pos0 + t
        lo = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            kh = k[lo : pos + 1, (h // group) * hd : (h // group + 1) * hd].astype(np.float64)
            vh = v[lo : pos + 1, (h // group) * hd : (h // group + 1) * hd].astype(np.float64)
            s = scale * (kh @ q[t, h * hd : (h + 1) * hd].astype(np.float64))
            p = np.exp(s - s.max())
            out[t, h * hd : (h + 1) * hd] = (p / p.sum()) @ vh
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("kv_type", KV_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens,pos0", [(1, 0), (1, 300), (4, 150), (8, 9), (37, 0), (33, 200)])
@pytest.mark.parametrize("window", [0, 16, 160])
@pytest.mark.parametrize("n_head,n_head_kv,hd", [(8, 2, 64), (4, 4, 128), (6, 3, 96)])
def test_attention(kv_type, n_tokens, pos0, window, n_head, n_head_kv, hd):
    from lamina import quants

    n_pos = pos0 + n_tokens
    kv_dim = n_head_kv * hd
    rb = _kv_row_bytes(kv_type, kv_dim)
    k = make("normal", n_pos, kv_dim, 1)
    v = make("normal", n_pos, kv_dim, 2)
    q = make("normal", n_tokens, n_head * hd, 3)
    kc, vc = Dev(n_pos * rb), Dev(n_pos * rb)
    check(LIB.lmc_kv_store(int(kv_type), kc.ptr, rb, 0, Dev.of(k), n_pos, kv_dim))
    check(LIB.lmc_kv_store(int(kv_type), vc.ptr, rb, 0, Dev.of(v), n_pos, kv_dim))
    # the reference reads what the cache holds: the stored rows, dequantized
    kd = quants.dequantize(_cpu_rows(kv_type, k), kv_type) if kv_type != T.F32 else k
    vd = quants.dequantize(_cpu_rows(kv_type, v), kv_type) if kv_type != T.F32 else v
    out = Dev(q.nbytes)
    scale = 1.0 / np.sqrt(hd)
    check(
        LIB.lmc_attention(
            out.ptr, Dev.of(q), kc.ptr, vc.ptr, int(kv_type), rb, n_tokens, pos0, n_head, n_head_kv, hd, scale, window
        )
    )
    want = attention_ref(q, kd, vd, n_tokens, pos0, n_head, n_head_kv, hd, scale, window)
    err = nmse(out.down(np.float32, q.shape), want)
    assert err <= 1e-10, f"nmse {err:.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("kv_type", KV_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 4])
@pytest.mark.parametrize("window", [0, 16])
def test_attention_dev_gives_the_bytes_of_attention(kv_type, n_tokens, window):
    n_head, n_head_kv, hd = 8, 2, 64
    kv_dim, n_pos = n_head_kv * hd, max(DEV_POSITIONS) + n_tokens
    rb = _kv_row_bytes(kv_type, kv_dim)
    kc, vc = Dev(n_pos * rb), Dev(n_pos * rb)
    check(LIB.lmc_kv_store(int(kv_type), kc.ptr, rb, 0, Dev.of(make("normal", n_pos, kv_dim, 1)), n_pos, kv_dim))
    check(LIB.lmc_kv_store(int(kv_type), vc.ptr, rb, 0, Dev.of(make("normal", n_pos, kv_dim, 2)), n_pos, kv_dim))
    q = Dev.of(make("normal", n_tokens, n_head * hd, 3))
    a, b = Dev(4 * n_tokens * n_head * hd), Dev(4 * n_tokens * n_head * hd)
    pos = _pos_dev(0)
    for pos0 in DEV_POSITIONS:
        pos.up(np.array([pos0], np.int32))
        check(
            LIB.lmc_attention(
                a.ptr, q, kc.ptr, vc.ptr, int(kv_type), rb, n_tokens, pos0, n_head, n_head_kv, hd, 0.125, window
            )
        )
        check(
            LIB.lmc_attention_dev(
                b.ptr, q, kc.ptr, vc.ptr, int(kv_type), rb, n_tokens, pos.ptr, n_head, n_head_kv, hd, 0.125, window
            )
        )
        np.testing.assert_array_equal(
            b.down(np.uint8, (b.nbytes,)), a.down(np.uint8, (a.nbytes,)), err_msg=f"pos0 {pos0}"
        )


# ------------------------------------------------------------ the runtime


@pytest.mark.gpu
def test_device_queries_and_copies():
    name = ctypes.create_string_buffer(256)
    check(LIB.lmc_device_name(0, name, 256))
    assert name.value
    free, total = c_sz(), c_sz()
    check(LIB.lmc_device_memory(0, ctypes.byref(free), ctypes.byref(total)))
    assert 0 < free.value <= total.value
    major, minor = c_int(), c_int()
    check(LIB.lmc_device_capability(0, ctypes.byref(major), ctypes.byref(minor)))
    assert major.value >= 7
    assert LIB.lmc_device_name(N_GPU, name, 256) == E_ARG
    a = np.arange(1000, dtype=np.float32)
    d1, d2 = Dev.of(a), Dev(a.nbytes)
    check(LIB.lmc_memcpy_d2d(d2.ptr, d1.ptr, a.nbytes))
    check(LIB.lmc_synchronize())
    np.testing.assert_array_equal(d2.down(np.float32, a.shape), a)
    huge = c_p()
    assert LIB.lmc_malloc(ctypes.byref(huge), 1 << 60) == E_NOMEM and not huge.value
    LIB.lmc_release()  # handles come back on the next GEMM


# ------------------------------------------------------------ CUDA graphs


class DecodeStep:
    """A decode-shaped op sequence on fixed buffers (norm, quantize + mat-vec,
    RoPE, KV store, attention, mat-vec, residual add, a d2d copy): state carries from
    step to step through x and the KV cache, and the position changes every
    step, as in cuda_backend.c's decode."""

    E, N_HEAD, HD, N_CTX = 256, 2, 64, 16

    def __init__(self):
        from lamina import quants

        qd = self.N_HEAD * self.HD
        self.rb = quants.row_bytes(T.F16, qd)
        self.x0 = make("normal", 1, self.E, 1)
        self.wn = Dev.of(make("weights_like", 1, self.E, 2)[0])
        self.wq = Dev.of(quants.quantize(make("weights_like", qd, self.E, 3), T.Q4_K))
        self.wo = Dev.of(quants.quantize(make("weights_like", self.E, qd, 4), T.Q8_0))
        self.inv_freq = Dev.of(10000.0 ** (-np.arange(0, self.HD, 2, dtype=np.float64) / self.HD))
        self.x, self.xb, self.xs = Dev(4 * self.E), Dev(4 * self.E), Dev(4 * self.E)
        self.q, self.att, self.cs = Dev(4 * qd), Dev(4 * qd), Dev(4 * self.HD)
        self.kc, self.vc = Dev(self.N_CTX * self.rb), Dev(self.N_CTX * self.rb)
        self.need = max(
            LIB.lmc_matmul_scratch_bytes(int(T.Q4_K), qd, self.E, 1),
            LIB.lmc_matmul_scratch_bytes(int(T.Q8_0), self.E, qd, 1),
        )
        self.scratch = Dev(self.need)

    def reset(self):
        self.x.up(self.x0)
        for c in (self.kc, self.vc, self.xs):
            check(LIB.lmc_memset(c.ptr, 0, c.nbytes))

    def ops(self, pos, pos_dev=None):
        """pos_dev None: the position-dependent ops take pos by value; else
        their _dev twins read it from pos_dev (a device int32)"""
        qd, f16 = self.N_HEAD * self.HD, int(T.F16)
        check(LIB.lmc_rms_norm(self.xb.ptr, self.x.ptr, self.wn.ptr, 1, self.E, 1e-5, 0.0))
        # x quantized once, then read (cuda_backend.c's q/k/v and gate/up)
        check(LIB.lmc_quantize_activations(int(T.Q4_K), self.xb.ptr, self.E, 1, self.scratch.ptr))
        check(LIB.lmc_matmul_q(int(T.Q4_K), self.wq.ptr, qd, self.E, int(T.Q8_K), self.scratch.ptr, 1, self.q.ptr, qd))
        if pos_dev is None:
            check(LIB.lmc_rope_cs(self.cs.ptr, self.inv_freq.ptr, self.HD, pos, 1))
        else:
            check(LIB.lmc_rope_cs_dev(self.cs.ptr, self.inv_freq.ptr, self.HD, pos_dev.ptr, 1))
        check(LIB.lmc_rope(self.q.ptr, 1, self.N_HEAD, self.HD, self.HD, self.cs.ptr, ROPE_NEOX))
        for cache, src in ((self.kc, self.q), (self.vc, self.xb)):
            if pos_dev is None:
                check(LIB.lmc_kv_store(f16, cache.ptr, self.rb, pos, src.ptr, 1, qd))
            else:
                check(LIB.lmc_kv_store_dev(f16, cache.ptr, self.rb, pos_dev.ptr, src.ptr, 1, qd))
        if pos_dev is None:
            check(
                LIB.lmc_attention(
                    self.att.ptr,
                    self.q.ptr,
                    self.kc.ptr,
                    self.vc.ptr,
                    f16,
                    self.rb,
                    1,
                    pos,
                    self.N_HEAD,
                    self.N_HEAD,
                    self.HD,
                    0.125,
                    0,
                )
            )
        else:
            check(
                LIB.lmc_attention_dev(
                    self.att.ptr,
                    self.q.ptr,
                    self.kc.ptr,
                    self.vc.ptr,
                    f16,
                    self.rb,
                    1,
                    pos_dev.ptr,
                    self.N_HEAD,
                    self.N_HEAD,
                    self.HD,
                    0.125,
                    0,
                )
            )
        check(
            LIB.lmc_matmul(
                int(T.Q8_0),
                self.wo.ptr,
                self.E,
                qd,
                self.att.ptr,
                1,
                self.xb.ptr,
                self.E,
                self.scratch.ptr,
                self.need,
                PATH_AUTO,
            )
        )
        check(LIB.lmc_add(self.x.ptr, self.xb.ptr, self.E))
        check(LIB.lmc_memcpy_d2d(self.xs.ptr, self.x.ptr, 4 * self.E))

    def state(self):
        return (
            self.xs.down(np.uint8, (4 * self.E,)),
            self.kc.down(np.uint8, (self.kc.nbytes,)),
            self.vc.down(np.uint8, (self.vc.nbytes,)),
        )

    def assert_state(self, want, pos):
        for got, w in zip(self.state(), want):
            np.testing.assert_array_equal(got, w, err_msg=f"pos {pos}")

    def uncaptured(self, steps):
        """the state after each of `steps` by-value steps run directly; leaves the buffers reset"""
        self.reset()
        want = []
        for pos in range(steps):
            self.ops(pos)
            want.append(self.state())
        self.reset()
        return want


@pytest.mark.gpu
def test_graph_recaptured_per_step_gives_the_bytes_of_the_uncaptured_ops():
    """the by-value ops captured again every step (the position changes),
    the executable updated in place, replayed: the same bytes as running the
    ops directly (lmc_graph_end's update path)"""
    s = DecodeStep()
    want = s.uncaptured(6)
    exe = c_p()
    try:
        for pos in range(6):
            check(LIB.lmc_graph_begin())
            s.ops(pos)
            check(LIB.lmc_graph_end(ctypes.byref(exe)))
            assert exe.value
            before = s.xs.down(np.uint8, (4 * s.E,))
            # captured, not run: the launch is what runs them
            np.testing.assert_array_equal(before, want[pos - 1][0] if pos else np.zeros_like(before))
            check(LIB.lmc_graph_launch(exe))
            s.assert_state(want[pos], pos)
    finally:
        check(LIB.lmc_graph_free(exe))


@pytest.mark.gpu
def test_a_graph_captured_once_replays_at_every_position_written_to_device_memory():
    """cuda_backend.c's decode: the position-dependent ops read the position
    from device memory, the step is captured once, and the same executable
    is relaunched with a new position written between launches: the bytes
    of the uncaptured by-value ops, step after step"""
    s = DecodeStep()
    want = s.uncaptured(6)
    pos_dev = _pos_dev(0)
    exe = c_p()
    try:
        check(LIB.lmc_graph_begin())
        s.ops(-1, pos_dev)  # by-value position unused: a wrong one would show
        check(LIB.lmc_graph_end(ctypes.byref(exe)))
        assert exe.value
        for pos in range(6):
            pos_dev.up(np.array([pos], np.int32))  # outside any capture, ordered before the launch
            check(LIB.lmc_graph_launch(exe))
            s.assert_state(want[pos], pos)
    finally:
        check(LIB.lmc_graph_free(exe))


@pytest.mark.gpu
def test_a_failed_capture_leaves_the_stream_usable():
    s = DecodeStep()
    # an op refuses its arguments mid-capture: abort, and the next ops run
    check(LIB.lmc_graph_begin())
    assert LIB.lmc_graph_begin() == E_ARG and "already capturing" in last_error()
    assert LIB.lmc_rms_norm(s.xb.ptr, s.x.ptr, s.wn.ptr, 1, 0, 1e-5, 0.0) == E_SHAPE
    check(LIB.lmc_graph_abort())
    check(LIB.lmc_graph_abort())  # none in progress: a no-op
    exe = c_p()
    assert LIB.lmc_graph_end(ctypes.byref(exe)) == E_ARG and "not capturing" in last_error()
    # a blocking copy cannot be captured: it fails, and so does the capture
    check(LIB.lmc_graph_begin())
    host = np.empty(s.E, np.float32)
    rc_copy = LIB.lmc_memcpy_d2h(host.ctypes.data, s.x.ptr, host.nbytes)
    rc_end = LIB.lmc_graph_end(ctypes.byref(exe))
    assert rc_copy != OK and rc_end != OK and not exe.value, (rc_copy, rc_end, last_error())
    # after both, ops run directly and captured as before
    want = s.uncaptured(1)
    check(LIB.lmc_graph_begin())
    s.ops(0)
    check(LIB.lmc_graph_end(ctypes.byref(exe)))
    try:
        check(LIB.lmc_graph_launch(exe))
        check(LIB.lmc_synchronize())
        s.assert_state(want[0], 0)
    finally:
        check(LIB.lmc_graph_free(exe))


@pytest.mark.gpu
def test_decode_with_and_without_graphs_gives_the_same_logits(tiny, monkeypatch):
    """cuda_backend.c captures the one-token step once and relaunches it at
    each position; with LAMINA_CUDA_GRAPHS=0 it runs the same ops one by one:
    the same bits"""
    from dataclasses import replace

    from lamina.engine.context import Context, Model
    from lamina.engine.offload import load_cuda
    from support.tiny_models import LLAMA, for_block

    if not load_cuda():
        pytest.skip("the core cannot load the CUDA library")
    cfg = replace(for_block(LLAMA, 256), qtype="Q4_K", n_layer=3)
    model = Model.load(tiny(cfg), n_threads=2)
    toks = np.random.default_rng(6).integers(0, cfg.n_vocab, 12)
    out = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("LAMINA_CUDA_GRAPHS", graphs)
        ctx = Context(model, n_ctx=16, n_batch=1, gpu_layers=99, device="cuda", require_gpu=True)
        # steps without logits, then with: one executable per head flag,
        # each captured once and relaunched; the KV the first ones wrote is
        # what the later ones read
        last = ctx.eval(toks[:6])
        out[graphs] = (last, ctx.eval(toks[6:], all_logits=True))
    for a, b in zip(out["1"], out["0"]):
        np.testing.assert_array_equal(a, b)
