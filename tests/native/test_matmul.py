"""matmul = activations quantized once to the dot partner, then tiled vec_dots
over threads. Checked against the float product of the dequantized weights,
and the threaded/tiled/AVX2 paths against the single-thread scalar one."""

import numpy as np
import pytest

from lamina import quants
from lamina.native import lib
from support.distributions import nmse

TYPES = [
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
    "MXFP4",
    "NVFP4",
]
# error of each output against the float product of the dequantized weights,
# relative to sum |w||x| (a single output can cancel to ~0, so relative error
# of the output itself is no measure): only the activations' rounding enters —
# 8-bit blocks for the quantized types, f16/bf16 for those, none for f32
ACT_ERROR = {"F32": 1e-6, "F16": 1e-3, "BF16": 4e-3}


def _weights(qtype, rows, n, seed):
    rng = np.random.default_rng(seed)
    w = quants.quantize(rng.standard_normal((rows, n)).astype(np.float32), qtype)
    return w, quants.dequantize(w, qtype).astype(np.float64)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("rows,ncols", [(1, 1), (37, 1), (100, 7), (64, 33)])
def test_matmul_matches_float_product(qtype, rows, ncols):
    n = 512
    w, wf = _weights(qtype, rows, n, seed=rows * 131 + ncols)
    x = np.random.default_rng(ncols).standard_normal((ncols, n)).astype(np.float32)
    y = quants.matmul(w, qtype, x, n_threads=2)
    assert y.shape == (ncols, rows)
    ref = x.astype(np.float64) @ wf.T
    scale = np.abs(x).astype(np.float64) @ np.abs(wf).T
    assert np.max(np.abs(y - ref) / scale) < ACT_ERROR.get(qtype, 4e-3)


@pytest.mark.parametrize("qtype", TYPES)
def test_threads_tiles_and_simd_agree_with_scalar(qtype):
    n, rows, ncols = 1024, 45, 19  # odd sizes: partial row tiles, partial column tiles
    w, _ = _weights(qtype, rows, n, seed=7)
    x = np.random.default_rng(3).standard_normal((ncols, n)).astype(np.float32)
    ref = quants.matmul(w, qtype, x, n_threads=1, impl="scalar")
    # each output is the same vec_dot, whatever thread or tile computed it
    assert np.array_equal(quants.matmul(w, qtype, x, n_threads=2, impl="scalar"), ref)
    assert np.array_equal(quants.matmul(w, qtype, x, n_threads=3, impl="scalar"), ref)
    # a column of a batch equals the same column alone
    assert np.array_equal(quants.matmul(w, qtype, x[5:6], n_threads=1, impl="scalar"), ref[5:6])
    if lib.lm_cpu_has_avx2():
        assert nmse(quants.matmul(w, qtype, x, n_threads=2, impl="avx2"), ref) < 1e-10


def test_thread_pool_survives_many_small_jobs():
    w, wf = _weights("Q8_0", 8, 64, seed=1)
    x = np.ones((1, 64), np.float32)
    pool = quants.ThreadPool(2)
    first = quants.matmul(w, "Q8_0", x, pool=pool)
    for _ in range(2000):
        assert np.array_equal(quants.matmul(w, "Q8_0", x, pool=pool), first)
    for n_threads in (1, 2, 4, 8):
        quants.ThreadPool(n_threads)  # create and free repeatedly


@pytest.mark.parametrize(
    "bad",
    [
        dict(x=np.zeros((2, 96), np.float32)),  # n does not match the weights
        dict(x=np.zeros((2, 64), np.float64)),  # wrong dtype
        dict(x=np.zeros((2, 2, 64), np.float32)),  # wrong rank
        dict(qtype="Q9_9"),  # unknown type
        dict(impl="sse9"),  # unknown implementation
    ],
)
def test_bad_arguments_raise_value_error(bad):
    w, _ = _weights("Q8_0", 4, 64, seed=2)
    args = dict(w=w, qtype="Q8_0", x=np.zeros((2, 64), np.float32), impl="auto")
    args.update(bad)
    with pytest.raises(ValueError):
        quants.matmul(args["w"], args["qtype"], args["x"], impl=args["impl"])


def test_weights_not_whole_blocks_raise():
    with pytest.raises(ValueError, match="blocks"):
        quants.matmul(np.zeros((4, 35), np.uint8), "Q8_0", np.zeros((1, 32), np.float32))
    with pytest.raises(ValueError):
        quants.quantize(np.zeros((4, 100), np.float32), "Q4_K")
