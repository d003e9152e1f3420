"""Float (F32, F16, BF16), legacy (Q4_0 .. Q8_0), IQ4 (IQ4_NL, IQ4_XS), ternary
(TQ1_0, TQ2_0), MXFP4 and NVFP4 block formats, and the activation formats Q8_0 /
Q8_1, against ggml and gguf-py.

  quantize     bytes == ggml_quantize_chunk, without and with an importance matrix
  dequantize   == gguf.quants.dequantize bit for bit (NaN-safe), also on random bytes
  Q8_0, Q8_1   activation bytes == ggml-cpu's (x86) quantize_row_q8_{0,1}
  vec_dot      scalar ~ ggml's own dot (tight); AVX2 ~ scalar (NMSE <= 1e-10);
               both ~ the float dot, within test-quantize-fns' bounds
  bad input    ValueError
"""

from __future__ import annotations

import functools

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from lamina import quants
from lamina.native import lib
from support.distributions import DISTRIBUTIONS, make, make_imatrix, nmse
from support.ggml_oracle import oracle

# weight type -> its dot partner (ggml's vec_dot_type)
PARTNER = {
    T.F32: T.F32,
    T.F16: T.F16,
    T.BF16: T.BF16,
    T.Q4_0: T.Q8_0,
    T.Q4_1: T.Q8_1,
    T.Q5_0: T.Q8_0,
    T.Q5_1: T.Q8_1,
    T.Q8_0: T.Q8_0,
    T.IQ4_NL: T.Q8_0,
    T.IQ4_XS: T.Q8_K,
    T.TQ1_0: T.Q8_K,
    T.TQ2_0: T.Q8_K,
    T.MXFP4: T.Q8_0,
    T.NVFP4: T.Q8_0,  # two Q8_0 blocks per 64-weight block
}
WEIGHT_TYPES = list(PARTNER)
FLOAT_TYPES = {T.F32, T.F16, T.BF16}
# ggml_quantize_chunk ignores the importance matrix for these
IMATRIX_IGNORED = FLOAT_TYPES | {T.Q8_0, T.TQ1_0, T.TQ2_0, T.MXFP4, T.NVFP4}

ROWS, N = 256, 512
DISTS = list(DISTRIBUTIONS)

HAS_AVX2 = bool(lib.lm_cpu_has_avx2())
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="CPU lacks AVX2/FMA/F16C: no AVX2 kernels to check")

# tests/test-quantize-fns.cpp (llama.cpp): MAX_QUANTIZATION_TOTAL_ERROR = 0.002f
# bounds sqrt(sum (x - deq)^2) / n, and MAX_DOT_PRODUCT_ERROR = 0.02f bounds
# |vec_dot - float dot| / n, both on its synthetic 0.1 + 2*cos(i + offset) rows
# of 4096 values (rms ~1.42, so rms_w * rms_a ~2.0).
GGML_MAX_QUANTIZATION_TOTAL_ERROR = 0.002
GGML_MAX_DOT_PRODUCT_ERROR = 0.02
# its looser bounds for ternary weights (MAX_*_TERNARY) and 4-bit floats (MAX_*_FP4)
GGML_MAX_QUANTIZATION_TOTAL_ERROR_BY_TYPE = {T.TQ1_0: 0.01, T.TQ2_0: 0.01, T.MXFP4: 0.003, T.NVFP4: 0.003}
GGML_MAX_DOT_PRODUCT_ERROR_BY_TYPE = {T.TQ1_0: 0.15, T.TQ2_0: 0.15, T.MXFP4: 0.03, T.NVFP4: 0.03}
GGML_SYNTHETIC_RMS_PRODUCT = 2.0
# scalar kernel vs ggml's own: float sums of the same terms, maybe FMA-fused
# there, differ by a few ulps of sum |w_i a_i| <= |w| |a|
DOT_REL_TOL = 1e-5
AVX2_MAX_NMSE = 1e-10
FLT_MIN = float(np.finfo(np.float32).tiny)


def ids(values):
    return [v.name if isinstance(v, T) else str(v) for v in values]


def assert_same_floats(a: np.ndarray, b: np.ndarray) -> None:
    """identical float32 bit patterns, except that any NaN matches any NaN"""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), f"NaN at different places ({nan_a.sum()} vs {nan_b.sum()})"
    diff = a.view(np.uint32)[~nan_a] != b.view(np.uint32)[~nan_b]
    assert not diff.any(), f"{diff.sum()} values differ, e.g. {a[~nan_a][diff][:4]} vs {b[~nan_b][diff][:4]}"


def oracle_activations(partner: T, a: np.ndarray) -> np.ndarray:
    """ggml-cpu's own quantization of activation rows into the dot partner
    format (its x86 quantize_row_q8_{0,1}, not ggml's _ref: see test_activation_ties)"""
    if partner in FLOAT_TYPES:
        return oracle().quantize_chunk(partner, a)
    # ggml writes row_bytes; the oracle sizes its buffer by gguf-py's
    # GGML_QUANT_SIZES, whose Q8_1 entry (40 bytes) predates ggml's half-d/half-s
    # block of 36, so keep only what ggml wrote
    rb = quants.row_bytes(partner, a.shape[1])
    return np.stack([oracle().quantize_row_cpu(partner, row)[:rb] for row in a])


@functools.cache
def weights(qtype: T, dist: str, rows: int = ROWS, n: int = N):
    """(float rows, lamina's quantized bytes, its dequantized rows)"""
    x = make(dist, rows, n, seed=0)
    q = quants.quantize(x, qtype)
    return x, q, quants.dequantize(q, qtype)


@functools.cache
def activations(qtype: T, dist: str, rows: int = ROWS, n: int = N):
    """(float activation rows from the same distribution, ggml's partner bytes)"""
    a = make(dist, rows, n, seed=1)
    return a, oracle_activations(PARTNER[qtype], a)


def dots(qtype: T, q: np.ndarray, aq: np.ndarray, impl: str) -> np.ndarray:
    return np.array([quants.vec_dot(q[r], qtype, aq[r], impl) for r in range(len(q))])


def ggml_dots(qtype: T, q: np.ndarray, aq: np.ndarray, n: int) -> np.ndarray:
    """ggml's scalar _generic dot; for the float types (which have none) its SIMD one"""
    generic = qtype not in FLOAT_TYPES
    return np.array([oracle().vec_dot(qtype, PARTNER[qtype], n, q[r], aq[r], generic=generic) for r in range(len(q))])


def finite_rows(qtype: T, dist: str, *results: np.ndarray) -> np.ndarray:
    """rows where the dot is finite, the same rows in every result. Q8_1 keeps
    s = d * sum(q) as a half, which overflows for activations of ~1e4 (the
    'large' distribution): ggml's dot is inf/NaN there too."""
    fin = np.isfinite(results[0])
    for r in results[1:]:
        assert np.array_equal(fin, np.isfinite(r)), "implementations disagree on which dots are finite"
    if not (PARTNER[qtype] == T.Q8_1 and dist == "large"):
        assert fin.all(), f"{(~fin).sum()} non-finite dots"
    return fin


def norm_bound(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """|w| |a| per row: bounds |dot(w, a)| and the float sum of |w_i a_i|"""
    w, a = w.astype(np.float64), a.astype(np.float64)
    return np.sqrt((w * w).sum(1) * (a * a).sum(1))


# -------------------------------------------------------------------- quantize


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_quantize_matches_ggml(qtype, dist):
    x, q, _ = weights(qtype, dist)
    assert q.shape == (ROWS, quants.row_bytes(qtype, N))
    np.testing.assert_array_equal(q, oracle().quantize_chunk(qtype, x))


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_quantize_imatrix_matches_ggml(qtype, dist):
    x, q_plain, _ = weights(qtype, dist)
    im = make_imatrix(N, seed=3)
    q = quants.quantize(x, qtype, imatrix=im)
    np.testing.assert_array_equal(q, oracle().quantize_chunk(qtype, x, im))
    if qtype in IMATRIX_IGNORED:
        np.testing.assert_array_equal(q, q_plain)
    elif dist not in ("all_zero", "tiny", "constant"):
        # the weighted search must actually run (and choose differently somewhere)
        assert not np.array_equal(q, q_plain)


# odd row counts, long rows, and for the float types a length that leaves an
# AVX2 tail
ODD_SHAPES = {t: (37, 4097 if t in FLOAT_TYPES else 4096) for t in WEIGHT_TYPES}


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_quantize_dequantize_odd_shapes(qtype):
    rows, n = ODD_SHAPES[qtype]
    im = make_imatrix(n, seed=4)
    for dist in ("normal", "weights_like", "outliers", "heavy_tails"):
        x = make(dist, rows, n, seed=2)
        for imatrix in (None, im):
            q = quants.quantize(x, qtype, imatrix=imatrix)
            np.testing.assert_array_equal(q, oracle().quantize_chunk(qtype, x, imatrix))
            assert_same_floats(quants.dequantize(q, qtype), gguf.quants.dequantize(q, qtype))


@pytest.mark.parametrize("qtype", [T.F32, T.F16, T.BF16], ids=ids([T.F32, T.F16, T.BF16]))
def test_float_conversion_special_values(qtype):
    """every float32 bit pattern class: NaN payloads, infinities, subnormals,
    values that round past the largest half"""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2**32, size=(16, 1024), dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            -np.nan,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            6e-8,
            2.9e-8,
            3e-8,
            1e-45,
            -1e-40,
            1.17e-38,
        ],
        np.float32,
    )
    x[0, : special.size] = special
    np.testing.assert_array_equal(quants.quantize(x, qtype), oracle().quantize_chunk(qtype, x))


@pytest.mark.parametrize("qtype", [T.MXFP4, T.NVFP4], ids=ids([T.MXFP4, T.NVFP4]))
def test_fp4_quantize_special_values(qtype):
    """the shared scale across its whole range (NVFP4: UE4M3 subnormals, the
    round-up carry into the exponent, the clamp at 448; MXFP4: E8M0 from
    2^-127 up), and NaN, Inf and huge values in a block"""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 1024)) * 10.0 ** rng.uniform(-9, 5, (64, 1))
    x[:, ::7] *= 10.0 ** rng.uniform(-3, 3, (64, 147))  # sub-blocks of different ranges
    x = x.astype(np.float32)
    special = [np.nan, np.inf, -np.inf, 3e38, -0.0, 1e-45, 2688.0, 2700.0, 0.0117, 0.01171875]
    for r, v in enumerate(special):
        x[r, r * 64 + 3] = v
    np.testing.assert_array_equal(quants.quantize(x, qtype), oracle().quantize_chunk(qtype, x))


# ------------------------------------------------------------------ dequantize


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_dequantize_matches_gguf(qtype, dist):
    _, q, deq = weights(qtype, dist)
    assert deq.shape == (ROWS, N)
    assert_same_floats(deq, gguf.quants.dequantize(q, qtype))


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_dequantize_random_bytes(qtype):
    """any byte pattern is a valid block of these types, NaN/Inf half scales included"""
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, size=(64, quants.row_bytes(qtype, 2048)), dtype=np.uint8)
    # inf * 0 in gguf-py's numpy, as in ours; MXFP4's e = 255 (2^127) times 12 overflows
    with np.errstate(invalid="ignore", over="ignore"):
        expect = gguf.quants.dequantize(data, qtype)
    assert_same_floats(quants.dequantize(data, qtype), expect)


# ------------------------------------------------------- activation formats

ACT_PARTNERS = {T.Q8_0: T.Q4_0, T.Q8_1: T.Q4_1}  # partner -> a weight type that uses it


IMPLS = ["scalar", pytest.param("avx2", marks=needs_avx2)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("partner", list(ACT_PARTNERS), ids=ids(list(ACT_PARTNERS)))
def test_activation_quantizer_matches_ggml(partner, dist, impl):
    a = make(dist, ROWS, N, seed=1)
    # the path matmul takes: activations quantized into a weight type's partner
    weight_type = ACT_PARTNERS[partner]
    assert quants.vec_dot_type(weight_type) == partner
    q = np.stack([quants.quantize_activations(row, weight_type, impl) for row in a])
    np.testing.assert_array_equal(q, oracle_activations(partner, a))
    # values: qs * d (Q8_1's s only feeds the dot); gguf-py has no Q8_1, so spell it out
    blocks = q.reshape(-1, quants.block_bytes(partner))
    hdr = 4 if partner == T.Q8_1 else 2
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    expect = (blocks[:, hdr:].copy().view(np.int8).astype(np.float32) * d).reshape(ROWS, N)
    assert_same_floats(quants.dequantize(q, partner), expect)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("partner", list(ACT_PARTNERS), ids=ids(list(ACT_PARTNERS)))
def test_activation_ties(partner, impl):
    """amax 127 makes the scale exactly 1, so x.5 values are exact ties:
    activations round them half to even as ggml-cpu does on x86 (llama.cpp's
    logits depend on it), Q8_0 weights half away from zero as ggml's _ref"""
    x = np.zeros(32, np.float32)
    x[:8] = [127, 0.5, 1.5, 2.5, -2.5, -0.5, 3.5, 100.5]
    got = quants.quantize_activations(x, ACT_PARTNERS[partner], impl)
    np.testing.assert_array_equal(got, oracle_activations(partner, x[None])[0])
    hdr = 4 if partner == T.Q8_1 else 2
    assert got[hdr : hdr + 8].view(np.int8).tolist() == [127, 0, 2, 2, -2, 0, 4, 100]
    ref = oracle().quantize_row_ref(partner, x)[: got.size]
    assert ref[hdr : hdr + 8].view(np.int8).tolist() == [127, 1, 2, 3, -3, -1, 4, 101]
    if partner == T.Q8_0:
        assert np.array_equal(quants.quantize(x[None], T.Q8_0)[0], ref)


# ---------------------------------------------------------------------- vec_dot


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_vec_dot_scalar(qtype, dist):
    _, q, deq = weights(qtype, dist)
    a, aq = activations(qtype, dist)
    scalar = dots(qtype, q, aq, "scalar")
    ref_ggml = ggml_dots(qtype, q, aq, N)
    fin = finite_rows(qtype, dist, scalar, ref_ggml)
    bound = norm_bound(deq, a)
    # 1. ggml's own kernel on the same bytes
    err = np.abs(scalar[fin] - ref_ggml[fin])
    assert (err <= DOT_REL_TOL * bound[fin]).all(), f"worst {np.max(err / np.maximum(bound[fin], 1e-300))}"
    # 2. the float dot of the dequantized weights with the unquantized
    # activations: what is left is the activation rounding, held to ggml's
    # MAX_DOT_PRODUCT_ERROR rescaled to rows of unit rms. FLT_MIN absorbs rows
    # whose float32 products underflow ('tiny').
    exact = (deq.astype(np.float64) * a.astype(np.float64)).sum(1)
    rms = bound / N
    err = np.abs(scalar[fin] - exact[fin]) / N
    limit = GGML_MAX_DOT_PRODUCT_ERROR / GGML_SYNTHETIC_RMS_PRODUCT * rms[fin] + FLT_MIN
    assert (err <= limit).all(), f"worst {np.max(err / limit)} of the allowed error"


@needs_avx2
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_vec_dot_avx2_matches_scalar(qtype, dist):
    _, q, deq = weights(qtype, dist)
    a, aq = activations(qtype, dist)
    scalar = dots(qtype, q, aq, "scalar")
    avx2 = dots(qtype, q, aq, "avx2")
    fin = finite_rows(qtype, dist, scalar, avx2)
    assert nmse(avx2[fin], scalar[fin]) <= AVX2_MAX_NMSE
    exact = (deq.astype(np.float64) * a.astype(np.float64)).sum(1)
    limit = GGML_MAX_DOT_PRODUCT_ERROR / GGML_SYNTHETIC_RMS_PRODUCT * norm_bound(deq, a)[fin] / N + FLT_MIN
    assert (np.abs(avx2[fin] - exact[fin]) / N <= limit).all()


@pytest.mark.parametrize("impl", ["scalar", pytest.param("avx2", marks=needs_avx2)])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_vec_dot_odd_shapes(qtype, impl):
    rows, n = ODD_SHAPES[qtype]
    _, q, deq = weights(qtype, "weights_like", rows, n)
    a, aq = activations(qtype, "normal", rows, n)
    got = dots(qtype, q, aq, impl)
    ref_ggml = ggml_dots(qtype, q, aq, n)
    if impl == "scalar":
        assert (np.abs(got - ref_ggml) <= DOT_REL_TOL * norm_bound(deq, a)).all()
    else:
        assert nmse(got, dots(qtype, q, aq, "scalar")) <= AVX2_MAX_NMSE


def ggml_synthetic(offset: float, n: int, amplitude: float = 2.0) -> np.ndarray:
    """test-quantize-fns' generate_data: 0.1 + amplitude * cos(i + offset)"""
    i = np.arange(n, dtype=np.float32)
    return (0.1 + amplitude * np.cos(i + np.float32(offset))).astype(np.float32)


@pytest.mark.parametrize("impl", ["scalar", pytest.param("avx2", marks=needs_avx2)])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=ids(WEIGHT_TYPES))
def test_ggml_quantize_fns_bounds(qtype, impl):
    """test-quantize-fns' own checks, on its own data (4096 values)"""
    n = 32 * 128
    w, a = ggml_synthetic(0.0, n), ggml_synthetic(1.0, n)
    q = quants.quantize(w[None], qtype)
    deq = quants.dequantize(q, qtype)[0]
    total_error = np.sqrt(np.sum((w.astype(np.float64) - deq) ** 2)) / n
    assert total_error < GGML_MAX_QUANTIZATION_TOTAL_ERROR_BY_TYPE.get(qtype, GGML_MAX_QUANTIZATION_TOTAL_ERROR)
    aq = oracle_activations(PARTNER[qtype], a[None])[0]
    result = quants.vec_dot(q[0], qtype, aq, impl)
    dot_ref = float(np.dot(w.astype(np.float64), a.astype(np.float64)))
    assert abs(result - dot_ref) / n < GGML_MAX_DOT_PRODUCT_ERROR_BY_TYPE.get(qtype, GGML_MAX_DOT_PRODUCT_ERROR)


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize("impl", IMPLS)
def test_nvfp4_dot_random_bytes(impl):
    """every UE4M3 scale byte (0x7F, E4M3's NaN, reads as 0; bit 7 is
    ignored), which ggml's quantizer never writes but a file may hold: the
    scalar dot is ggml's _generic one, the AVX2 dot within NMSE of it"""
    rng = np.random.default_rng(12)
    q = rng.integers(0, 256, size=(ROWS, quants.row_bytes(T.NVFP4, N)), dtype=np.uint8)
    _, aq = activations(T.NVFP4, "normal")
    got, ref = dots(T.NVFP4, q, aq, impl), ggml_dots(T.NVFP4, q, aq, N)
    if impl == "scalar":
        np.testing.assert_array_equal(got.astype(np.float32), ref.astype(np.float32))
    else:
        assert nmse(got, ref) <= AVX2_MAX_NMSE


def test_bad_inputs_raise_value_error():
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="block size"):
        quants.quantize(np.zeros((2, 48), np.float32), T.Q4_0)
    with pytest.raises(ValueError, match="block size"):
        quants.quantize(np.zeros((1, 512 + 32), np.float32), T.IQ4_XS)
    with pytest.raises(ValueError, match="float32"):
        quants.quantize(x.astype(np.float64), T.Q8_0)
    with pytest.raises(ValueError, match="unknown ggml type name"):
        quants.quantize(x, "Q4_9")
    with pytest.raises(ValueError, match="unknown ggml type id"):
        quants.quantize(x, 1000)
    with pytest.raises(ValueError, match="imatrix"):
        quants.quantize(x, T.Q4_0, imatrix=np.ones(32, np.float32))
    with pytest.raises(ValueError, match="uint8"):
        quants.dequantize(np.zeros((2, 36), np.int8), T.Q4_1)
    with pytest.raises(ValueError, match="whole number"):
        quants.dequantize(np.zeros((2, 19), np.uint8), T.Q4_0)
    with pytest.raises(ValueError, match="unknown ggml type name"):
        quants.dequantize(np.zeros((2, 18), np.uint8), "IQ4_ZZ")
    q = quants.quantize(x, T.Q5_1)
    with pytest.raises(ValueError, match="activations hold"):
        quants.vec_dot(q[0], T.Q5_1, np.zeros(quants.row_bytes(T.Q8_1, 64) - 1, np.uint8))
