"""The few-column AVX2 dots (native/simd/x86/<type>_avx2.c) that matmul uses in
prefill and batched decode: one weight row against 2-4 activation columns at
once, and for the types in XN_HALVES in prefill against up to 32 columns
interleaved eight to a vector (lm_vec_dot_xn_<t>, more than 8 columns; 40 and
70 take two and three column tiles and a partial group of eight, 33 and 63 a
tile and an odd rest).

The float weight types F32, F16 and BF16 have no few-column kernel: from two
columns on they go through lm_vec_dot_xn_<t> (float_xn_avx2.c), the columns
as f32 values of the partner type, two rows by six columns at a time
(lm_vec_dot_xn2r_<t>; an odd last row one row by eight), then 4, 2, 1, in
chunks of 512 values; n = 1000 runs two chunks and a scalar tail of 8 values.

Each column must come out bit-identical to the single-column AVX2 kernel, so a
matmul's result never depends on how many columns it was given (the x4 kernel
takes columns 4 at a time, the rest go one by one): speculative decoding at
temperature 0 verifies k drafted tokens in one call and must give plain
decoding's tokens.

  grouping     matmul of ncols columns == the ncols matmuls of one column each
  kernel       matmul of 4 columns == lm_vec_dot (AVX2) of every row and column
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from lamina import quants
from lamina.native import lib
from support.distributions import make

needs_avx2 = pytest.mark.skipif(not lib.lm_cpu_has_avx2(), reason="CPU lacks AVX2/FMA/F16C: no x4 kernels")

# n per type: the 256-weight types take 8 super-blocks at a time, then the
# rest alone, so 10 super-blocks cover both; the 32-weight types have no batching
X4_TYPES = {
    T.Q2_K: 2560,
    T.Q3_K: 2560,
    T.Q4_K: 2560,
    T.Q5_K: 2560,
    T.Q6_K: 2560,
    T.TQ1_0: 2560,
    T.TQ2_0: 2560,
    T.Q5_0: 544,
    T.Q8_0: 544,
    T.Q4_0: 544,
    T.Q4_1: 544,
    T.Q5_1: 544,
    T.IQ4_NL: 544,
    T.IQ4_XS: 2560,
    T.MXFP4: 544,
    T.NVFP4: 576,  # 64-weight blocks
    T.F32: 1000,
    T.F16: 1000,
    T.BF16: 1000,
}
FLOAT_TYPES = [T.F32, T.F16, T.BF16]
ROWS = 19  # not a multiple of matmul's 16-row tiles
NCOLS = [1, 2, 3, 4, 5, 6, 7, 8, 17, 33, 40, 63, 70]
DISTS = ["normal", "outliers", "heavy_tails", "all_zero", "tiny", "large", "sparse"]


def ids(values):
    return [v.name if isinstance(v, T) else str(v) for v in values]


def weights(qtype, dist):
    return quants.quantize(make(dist, ROWS, X4_TYPES[qtype], seed=1), qtype)


def activations(dist, ncols, n):
    return make(dist, ncols, n, seed=2)


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ncols", NCOLS)
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", list(X4_TYPES), ids=ids(X4_TYPES))
def test_matmul_columns_independent_of_grouping(qtype, dist, ncols, threads):
    w = weights(qtype, dist)
    x = activations(dist, ncols, X4_TYPES[qtype])
    y = quants.matmul(w, qtype, x, n_threads=threads, impl="avx2")
    alone = np.concatenate(
        [quants.matmul(w, qtype, x[c : c + 1], n_threads=threads, impl="avx2") for c in range(ncols)]
    )
    np.testing.assert_array_equal(y, alone)


@needs_avx2
@pytest.mark.parametrize("ncols", [2, 3, 5, 17])
@pytest.mark.parametrize("qtype", list(X4_TYPES), ids=ids(X4_TYPES))
def test_auto_matmul_columns_independent_of_grouping(qtype, ncols):
    """what a model runs (impl auto: the VNNI build where the type has one and
    the CPU runs it, LAMINA_SIMD=avx512vnni its EVEX build) keeps each
    column's bits however the columns are grouped too"""
    w = weights(qtype, "outliers")
    x = activations("outliers", ncols, X4_TYPES[qtype])
    y = quants.matmul(w, qtype, x, n_threads=1)
    alone = np.concatenate([quants.matmul(w, qtype, x[c : c + 1], n_threads=1) for c in range(ncols)])
    np.testing.assert_array_equal(y, alone)


@needs_avx2
@pytest.mark.parametrize("dist", ["normal", "outliers", "weights_like"])
@pytest.mark.parametrize("qtype", list(X4_TYPES), ids=ids(X4_TYPES))
def test_x4_matches_single_column_kernel(qtype, dist):
    n = X4_TYPES[qtype]
    w = weights(qtype, dist)
    x = activations(dist, 4, n)
    y = quants.matmul(w, qtype, x, impl="avx2")
    acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(4)]
    single = np.array(
        [[quants.vec_dot(w[r], qtype, acts[c], impl="avx2") for r in range(ROWS)] for c in range(4)], dtype=np.float32
    )
    np.testing.assert_array_equal(y, single)


@needs_avx2
@pytest.mark.parametrize("impl", ["avx2", "auto"])
@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 95, 512, 544, 1537])
@pytest.mark.parametrize("qtype", FLOAT_TYPES, ids=ids(FLOAT_TYPES))
def test_float_many_column_kernel_matches_one_column_kernel(qtype, n, impl):
    """every n the float types accept: no 32-value step (n < 32), steps and a
    scalar tail, whole chunks of 512 and a partial one; 2..9, 15 and 64
    columns (blocks of 8, 4, 2 and 1) and 70 (two column tiles), as impl
    avx2 and as a model runs them (auto)"""
    w = quants.quantize(make("normal", ROWS, n, seed=3), qtype)
    for ncols in [2, 3, 5, 7, 9, 15, 64, 70]:
        x = activations("outliers", ncols, n)
        y = quants.matmul(w, qtype, x, n_threads=2, impl=impl)
        acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(ncols)]
        single = np.array(
            [[quants.vec_dot(w[r], qtype, acts[c], impl="avx2") for r in range(ROWS)] for c in range(ncols)],
            dtype=np.float32,
        )
        np.testing.assert_array_equal(y, single, err_msg=f"{ncols} columns")


def _rounding_edges(ncols: int, n: int, finite_below: float = np.inf) -> np.ndarray:
    """values where rounding to f16 / bf16 is decided: exact ties (to even, up
    and down), f16 subnormals and underflow, f16 overflow to infinity, the
    largest finite values, infinities, NaN, signed zeros"""
    f16_ties = [1 + 2.0**-11, 1 + 3 * 2.0**-11, -(1 + 2.0**-11), 2048 + 1, 2048 + 3]
    bf16_ties = [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 3 * 2.0**-8), 256 + 1, 2.0**-126 * (1 + 2.0**-8)]
    edges = [6e-8, 2.98e-8, 2.0**-25, 2.0**-24, 1e-5, -1e-7, 65504, 65519, 65520, -70000, 3.4e38, -3.4e38]
    special = [np.inf, -np.inf, np.nan, 0.0, -0.0]
    pool = np.array(f16_ties + bf16_ties + edges + special, np.float32)
    if finite_below < np.inf:
        pool = pool[np.abs(pool) < finite_below]  # drops NaN too
    rng = np.random.default_rng(5)
    return rng.choice(pool, size=(ncols, n)).astype(np.float32)


@needs_avx2
@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=ids([T.F16, T.BF16]))
def test_float_columns_round_as_the_one_column_dot_rounds_them(qtype):
    """matmul widens many columns in one pass (F16C, or bf16's integer
    rounding in AVX2) where the one-column dot quantizes with lm_from_float:
    the same values at every rounding edge, so the same sums (NaN where NaN)"""
    n = 77  # 8-value steps and a scalar tail
    w = quants.quantize(make("normal", ROWS, n, seed=4) * 1e-3, qtype)
    x = _rounding_edges(6, n)
    y = quants.matmul(w, qtype, x, n_threads=1, impl="avx2")
    acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(6)]
    single = np.array(
        [[quants.vec_dot(w[r], qtype, acts[c], impl="avx2") for r in range(ROWS)] for c in range(6)],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(y, single)
    # and the rounded values themselves, through weight rows of one 1 (the
    # values finite in the type: 0 x inf would be NaN)
    x = _rounding_edges(6, n, finite_below=65520 if qtype == T.F16 else 3.39e38)
    eye = np.zeros((n, n), np.float32)
    np.fill_diagonal(eye, 1.0)
    rounded = quants.matmul(quants.quantize(eye, qtype), qtype, x, impl="avx2")
    wide = np.stack([quants.dequantize(quants.quantize_activations(x[c : c + 1], qtype), qtype)[0] for c in range(6)])
    np.testing.assert_array_equal(rounded, wide)


@pytest.mark.parametrize("qtype", list(X4_TYPES), ids=ids(X4_TYPES))
def test_scalar_matmul_is_the_reference_dot(qtype):
    """LM_IMPL_SCALAR keeps one column at a time through vec_dot_ref"""
    n = X4_TYPES[qtype]
    w = weights(qtype, "normal")
    x = activations("normal", 5, n)
    y = quants.matmul(w, qtype, x, impl="scalar")
    acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(5)]
    ref = np.array(
        [[quants.vec_dot(w[r], qtype, acts[c], impl="scalar") for r in range(ROWS)] for c in range(5)], dtype=np.float32
    )
    np.testing.assert_array_equal(y, ref)


TWO_ROW_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.MXFP4]


@needs_avx2
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("ncols", [1, 2, 5, 6])
@pytest.mark.parametrize("dist", ["normal", "outliers", "all_zero"])
@pytest.mark.parametrize("qtype", TWO_ROW_TYPES, ids=ids(TWO_ROW_TYPES))
def test_two_row_kernel_matches_single_row_kernel(qtype, dist, ncols, threads):
    """A column left alone (decode's only one) goes two weight rows at a time
    (lm_vec_dot_2r_<t>_avx2), a group of two columns (decode of two
    sequences) two rows by two columns (lm_vec_dot_2r2c_<t>_avx2); each row
    keeps the one-row kernel's bits, with an odd number of rows per thread,
    so pairs and a last row alone."""
    n = 544
    w = quants.quantize(make(dist, ROWS, n, seed=1), qtype)
    x = activations(dist, ncols, n)
    y = quants.matmul(w, qtype, x, n_threads=threads, impl="avx2")
    acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(ncols)]
    single = np.array(
        [[quants.vec_dot(w[r], qtype, acts[c], impl="avx2") for r in range(ROWS)] for c in range(ncols)],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(y, single)


# the types with a many-column kernel, and the byte offsets of the fp16 fields
# (d, dmin, m) in their blocks
XN_HALVES = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.IQ4_NL: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_XS: [0],
    T.MXFP4: [],  # its scale is the E8M0 exponent byte at offset 0
}


def random_block_weights(qtype):
    """random bytes: every quant and sub-block scale value (Q3_K's -32 scale
    with its -4 weight, Q2_K's 15 x 3), with the fp16 fields set to moderate
    values of either sign (MXFP4's exponents to moderate powers of two)"""
    rng = np.random.default_rng(int(qtype))
    w = rng.integers(0, 256, (ROWS, quants.row_bytes(qtype, X4_TYPES[qtype])), dtype=np.uint8)
    blocks = w.reshape(-1, quants.block_bytes(qtype))
    for off in XN_HALVES[qtype]:
        halves = rng.uniform(-0.05, 0.05, blocks.shape[0]).astype(np.float16)
        blocks[:, off : off + 2] = halves.view(np.uint8).reshape(-1, 2)
    if qtype == T.MXFP4:
        blocks[:, 0] = rng.integers(118, 138, blocks.shape[0])  # 2^-10 .. 2^9
    return w


@needs_avx2
@pytest.mark.parametrize("impl", ["avx2", "auto"])
@pytest.mark.parametrize("ncols", [9, 16, 31, 33, 63, 64])
@pytest.mark.parametrize("qtype", list(XN_HALVES), ids=ids(XN_HALVES))
def test_many_column_kernel_is_the_single_column_kernel(qtype, ncols, impl):
    """prefill's many-column kernel (impl auto: its VNNI build where the CPU
    has one) gives every column the single-column kernel's bits, for blocks of
    random bytes and column counts that leave partial groups of eight and
    partial tiles of 32"""
    n = X4_TYPES[qtype]
    w = random_block_weights(qtype)
    x = activations("outliers", ncols, n)
    y = quants.matmul(w, qtype, x, impl=impl)
    assert np.isfinite(y).all()
    acts = [quants.quantize_activations(x[c : c + 1], qtype) for c in range(ncols)]
    single = np.array(
        [[quants.vec_dot(w[r], qtype, acts[c], impl=impl) for r in range(ROWS)] for c in range(ncols)],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(y, single)
