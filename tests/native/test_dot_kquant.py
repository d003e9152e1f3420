"""The decode hot path: Q2_K..Q6_K, TQ1_0 and TQ2_0 weight rows times activations in Q8_K.

Oracles: ggml itself (its quantize_row_q8_K_ref, dequantize_row_q8_K and
*_generic dots, through ctypes), gguf-py's dequantizers for the weights, and
the float dot of the dequantized weights with the original activations. Weight
bytes come from ggml's own quantizer, so these tests do not depend on lamina's.
"""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from lamina import quants
from lamina.native import lib
from support.distributions import DISTRIBUTIONS, make, nmse
from support.ggml_oracle import oracle

KTYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.TQ1_0, T.TQ2_0]
N = 2560  # 10 super-blocks: the SIMD dots take 8 at a time, then 2 alone
ROWS = 32  # per distribution: 12 * 32 = 384 rows per type

HAS_AVX2 = bool(lib.lm_cpu_has_avx2())
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="CPU or build lacks AVX2/FMA/F16C")

# ggml's tests/test-quantize-fns.cpp: MAX_DOT_PRODUCT_ERROR = 0.02f and
# MAX_DOT_PRODUCT_ERROR_LOWBIT = 0.04f (Q2_K), bounds on |dot - ref| / n for
# its synthetic vectors 0.1 + A*cos(i) (A = 2: RMS ~1.42 each). Our inputs
# have any scale, so the bound is rescaled by rms(w)*rms(x) / 1.42^2.
MAX_DOT_ERROR = {T.Q2_K: 0.04}
# its MAX_DOT_PRODUCT_ERROR_TERNARY: on its synthetic rows the ternary weights'
# own rounding dominates (the rescaled bound above only covers the activations')
SYNTHETIC_DOT_ERROR = {**MAX_DOT_ERROR, T.TQ1_0: 0.15, T.TQ2_0: 0.15}
GGML_TEST_RMS2 = 0.01 + 2.0  # mean of (0.1 + 2 cos i)^2

# bytes of each block that hold the quants (zeroed to read back the min term)
QUANT_BYTES = {T.Q2_K: slice(16, 80), T.Q4_K: slice(16, 144), T.Q5_K: slice(16, 176)}
BLOCK_BYTES = {T.Q2_K: 84, T.Q3_K: 110, T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210, T.TQ1_0: 54, T.TQ2_0: 66}


def q8_K(x_row):
    return oracle().quantize_row_ref(T.Q8_K, x_row)


def dequant_q8_K(y_bytes, n):
    return oracle().dequantize_row(T.Q8_K, y_bytes, n).astype(np.float64)


def min_terms(qtype, w_row):
    """per weight, the dmin*min part that types with mins subtract (0 otherwise):
    the dequantized value of the same block with every quant set to zero"""
    if qtype not in QUANT_BYTES:
        return np.zeros(N)
    blocks = w_row.reshape(-1, BLOCK_BYTES[qtype]).copy()
    blocks[:, QUANT_BYTES[qtype]] = 0
    return -gguf_dequantize(blocks.reshape(-1), qtype).astype(np.float64)


def float_dot_bound(qtype, wf, x):
    """ggml's per-element dot error bound, scaled to the magnitude of w and x"""
    rms = np.sqrt(np.mean(wf * wf) * np.mean(np.asarray(x, np.float64) ** 2))
    return MAX_DOT_ERROR.get(qtype, 0.02) * N * rms / GGML_TEST_RMS2


# ------------------------------------------------------------------ Q8_K
# the scalar quantizer and the AVX2 one (the matmuls' choice on this CPU)
ACT_IMPLS = ["scalar", "auto"]


@pytest.mark.parametrize("impl", ACT_IMPLS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_q8_K_quantize_is_bit_exact(dist, impl):
    x = make(dist, 8, N, seed=5)
    for row in x:
        assert np.array_equal(quants.quantize_activations(row, "Q4_K", impl), q8_K(row))
    expected = np.stack([q8_K(row) for row in x])
    assert np.array_equal(quants.quantize(x, "Q8_K"), expected)


@pytest.mark.parametrize("impl", ACT_IMPLS)
def test_q8_K_first_largest_magnitude_sets_the_sign(impl):
    # equal |x| with opposite signs: ggml keeps the first one as max and
    # scales by -127/max, so the sign of d flips with the order; an all-zero
    # block is all zeros, bsums included, whatever the buffer held
    x = np.zeros(512, np.float32)
    assert not quants.quantize_activations(x, "Q6_K", impl).any()
    for first, d_sign in ((-2.0, 1.0), (2.0, -1.0)):
        x = np.zeros(256, np.float32)
        x[3], x[200] = first, -first
        got = quants.quantize_activations(x, "Q6_K", impl)
        assert np.array_equal(got, q8_K(x))
        assert np.sign(got[:4].copy().view(np.float32)[0]) == d_sign
        assert got[4 + 3].view(np.int8) == -127


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_q8_K_dequantize_matches_ggml(dist):
    # gguf-py has no Q8_K dequantizer (it is never stored in files): ggml's own
    # dequantize_row_q8_K and the layout decoded here are the oracles
    x = make(dist, 4, N, seed=6)
    q = np.stack([q8_K(row) for row in x])
    got = quants.dequantize(q, "Q8_K")
    for r in range(len(x)):
        assert np.array_equal(got[r], oracle().dequantize_row(T.Q8_K, q[r], N))
        blocks = q[r].reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        qs = blocks[:, 4:260].view(np.int8).astype(np.float32)
        assert np.array_equal(got[r], (d * qs).reshape(-1))
        bsums = blocks[:, 260:].copy().view(np.int16)
        assert np.array_equal(bsums, qs.reshape(-1, 16, 16).sum(axis=2))


# ------------------------------------------------------------- vec_dot
def _case(qtype, dist):
    w = make(dist, ROWS, N, seed=0)
    x = make(dist, ROWS, N, seed=1)
    wq = oracle().quantize_chunk(qtype, w)
    return wq, x, [q8_K(row) for row in x]


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("qtype", KTYPES, ids=lambda t: t.name)
def test_scalar_dot_matches_ggml_generic(qtype, dist):
    # Integer sums are exact on both sides; only the float scaling order
    # differs (ggml's lanes split by weight index, ours by block, and its build
    # contracts to FMA),
    # so each rounding is ~6e-8 of a partial sum, itself bounded by
    # M = sum_i (|w_i| + 2|min_i|) * |y_i|; ~10 roundings stay under 1e-6 * M.
    wq, _, ys = _case(qtype, dist)
    exact = 0
    for r in range(ROWS):
        ours = quants.vec_dot(wq[r], qtype, ys[r], impl="scalar")
        ref = oracle().vec_dot(qtype, T.Q8_K, N, wq[r], ys[r], generic=True)
        wf = gguf_dequantize(wq[r], qtype).astype(np.float64)
        mag = np.sum((np.abs(wf) + 2 * np.abs(min_terms(qtype, wq[r]))) * np.abs(dequant_q8_K(ys[r], N)))
        assert abs(ours - ref) <= 1e-6 * mag, (r, ours, ref, mag)
        exact += ours == ref
    if dist == "all_zero":
        assert exact == ROWS


@needs_avx2
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("qtype", KTYPES, ids=lambda t: t.name)
def test_avx2_dot_matches_scalar(qtype, dist):
    wq, _, ys = _case(qtype, dist)
    scalar = [quants.vec_dot(wq[r], qtype, ys[r], impl="scalar") for r in range(ROWS)]
    avx2 = [quants.vec_dot(wq[r], qtype, ys[r], impl="avx2") for r in range(ROWS)]
    assert nmse(avx2, scalar) <= 1e-10
    # stronger, by construction (simd/x86/kquant_avx2.h): the same roundings as the scalar dot
    assert avx2 == scalar


@pytest.mark.parametrize("impl", ["scalar", pytest.param("avx2", marks=needs_avx2)])
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("qtype", KTYPES, ids=lambda t: t.name)
def test_dot_matches_float_reference(qtype, dist, impl):
    wq, x, ys = _case(qtype, dist)
    for r in range(ROWS):
        ours = quants.vec_dot(wq[r], qtype, ys[r], impl=impl)
        wf = gguf_dequantize(wq[r], qtype).astype(np.float64)
        ref = float(wf @ x[r].astype(np.float64))
        assert abs(ours - ref) <= float_dot_bound(qtype, wf, x[r]), (r, ours, ref)


@pytest.mark.parametrize("impl", ["scalar", pytest.param("avx2", marks=needs_avx2)])
@pytest.mark.parametrize("qtype", KTYPES, ids=lambda t: t.name)
def test_ggml_synthetic_dot_error(qtype, impl):
    # test-quantize-fns.cpp's own case, where the bound is tight: correlated
    # vectors (dot ~ n), reference = float dot of the unquantized data
    n = 32 * 128
    i = np.arange(n, dtype=np.float32)
    w = (0.1 + 2.0 * np.cos(i)).astype(np.float32)
    x = (0.1 + 2.0 * np.cos(i + 1.0)).astype(np.float32)
    ours = quants.vec_dot(oracle().quantize_chunk(qtype, w[None])[0], qtype, q8_K(x), impl=impl)
    ref = float(np.dot(w.astype(np.float64), x.astype(np.float64)))
    assert abs(ours - ref) / n < SYNTHETIC_DOT_ERROR.get(qtype, 0.02)


# --------------------------------------------------------------- matmul
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("impl", ["scalar", pytest.param("avx2", marks=needs_avx2)])
@pytest.mark.parametrize("qtype", KTYPES, ids=lambda t: t.name)
def test_matmul_with_kquant_kernels(qtype, impl, n_threads):
    rows = 37  # not a multiple of the 16-row tiles
    wq = oracle().quantize_chunk(qtype, make("weights_like", rows, N, seed=2))
    wf = gguf_dequantize(wq, qtype).astype(np.float64)
    for ncols in (1, 7, 33):
        x = make("normal", ncols, N, seed=ncols)
        y = quants.matmul(wq, qtype, x, n_threads=n_threads, impl=impl)
        assert y.shape == (ncols, rows)
        ref = x.astype(np.float64) @ wf.T
        for c in range(ncols):
            ya = quants.quantize_activations(x[c], qtype)
            for r in range(rows):
                # the same kernel on the same activations: the same float
                assert y[c, r] == quants.vec_dot(wq[r], qtype, ya, impl=impl)
                assert abs(y[c, r] - ref[c, r]) <= float_dot_bound(qtype, wf[r], x[c])
