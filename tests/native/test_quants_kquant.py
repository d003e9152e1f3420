"""K-quants (Q2_K..Q6_K): lamina's quantizers against ggml itself, its
dequantizers against gguf-py and ggml, and the round-trip error bounds of
ggml's tests/test-quantize-fns.cpp."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants as gguf_quants

from lamina import quants
from support.distributions import DISTRIBUTIONS, make, make_imatrix
from support.ggml_oracle import oracle

KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]

# (rows, n): a wide matrix, one long row, and a row count / length that are
# not powers of two
SHAPES = [(128, 1024), (1, 4096), (37, 768)]

# byte ranges of each block's fields (ggml-common.h order), to name what differs
FIELDS = {
    T.Q2_K: {"scales": (0, 16), "qs": (16, 80), "d": (80, 82), "dmin": (82, 84)},
    T.Q3_K: {"hmask": (0, 32), "qs": (32, 96), "scales": (96, 108), "d": (108, 110)},
    T.Q4_K: {"d": (0, 2), "dmin": (2, 4), "scales": (4, 16), "qs": (16, 144)},
    T.Q5_K: {"d": (0, 2), "dmin": (2, 4), "scales": (4, 16), "qh": (16, 48), "qs": (48, 176)},
    T.Q6_K: {"ql": (0, 128), "qh": (128, 192), "scales": (192, 208), "d": (208, 210)},
}
HALF_FIELDS = ("d", "dmin")

# ggml tests/test-quantize-fns.cpp: MAX_QUANTIZATION_TOTAL_ERROR = 0.002f,
# MAX_QUANTIZATION_TOTAL_ERROR_2BITS = 0.0075f (Q2_K),
# MAX_QUANTIZATION_TOTAL_ERROR_3BITS = 0.0040f (Q3_K); the error is its
# array_rmse, sqrt(sum of squared differences) / n.
MAX_TOTAL_ERROR = {T.Q2_K: 0.0075, T.Q3_K: 0.0040, T.Q4_K: 0.002, T.Q5_K: 0.002, T.Q6_K: 0.002}


def imatrices(n: int) -> dict[str, np.ndarray]:
    some_zero = make_imatrix(n, seed=1)
    some_zero[[0, 5, 17, n // 2, n - 1]] = 0.0
    return {"calibrated": make_imatrix(n), "ones": np.ones(n, np.float32), "some_zero": some_zero}


def block_bytes(qtype: T) -> int:
    return FIELDS[qtype][max(FIELDS[qtype], key=lambda f: FIELDS[qtype][f][1])][1]


def assert_same_bytes(qtype: T, ours: np.ndarray, ref: np.ndarray, x: np.ndarray) -> None:
    """Equal bytes, or a message naming the first differing block and its fields."""
    assert ours.shape == ref.shape
    if np.array_equal(ours, ref):
        return
    bb = block_bytes(qtype)
    row = int(np.nonzero((ours != ref).any(axis=1))[0][0])
    blk = int(np.nonzero((ours[row] != ref[row]).reshape(-1, bb).any(axis=1))[0][0])
    a = ours[row, blk * bb : (blk + 1) * bb]
    b = ref[row, blk * bb : (blk + 1) * bb]
    lines = [
        f"{qtype.name}: row {row}, block {blk} differs ({int((ours != ref).any(axis=1).sum())} of {ours.shape[0]} rows)"
    ]
    for name, (lo, hi) in FIELDS[qtype].items():
        if not np.array_equal(a[lo:hi], b[lo:hi]):
            if name in HALF_FIELDS:
                lines.append(f"  {name}: ours {a[lo:hi].view(np.float16)[0]} ggml {b[lo:hi].view(np.float16)[0]}")
            else:
                lines.append(f"  {name}: ours {a[lo:hi].tolist()}\n  {' ' * len(name)}  ggml {b[lo:hi].tolist()}")
    xa, xb = gguf_quants.dequantize(a, qtype), gguf_quants.dequantize(b, qtype)
    xs = x[row, blk * 256 : (blk + 1) * 256]
    lines.append(
        f"  dequantized: max |ours-ggml| {np.abs(xa - xb).max():.6g}, "
        f"sq err ours {float(np.sum((xa - xs) ** 2)):.6g} ggml {float(np.sum((xb - xs) ** 2)):.6g}"
    )
    pytest.fail("\n".join(lines))


def assert_bit_identical(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    ours = np.ascontiguousarray(ours, np.float32).reshape(-1)
    ref = np.ascontiguousarray(ref, np.float32).reshape(-1)
    diff = np.nonzero(ours.view(np.uint32) != ref.view(np.uint32))[0]
    assert diff.size == 0, (
        f"{what}: {diff.size} values differ, first at {diff[0]}: {ours[diff[0]]!r} vs {ref[diff[0]]!r}"
    )


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_quantize_matches_ggml(qtype, dist):
    """ref path (no imatrix) == ggml_quantize_chunk, and its bytes dequantize like gguf-py"""
    for rows, n in SHAPES:
        x = make(dist, rows, n)
        ours = quants.quantize(x, qtype)
        assert_same_bytes(qtype, ours, oracle().quantize_chunk(qtype, x), x)
        assert_bit_identical(
            quants.dequantize(ours, qtype),
            gguf_quants.dequantize(ours, qtype),
            f"{qtype.name} {dist} dequantize vs gguf-py",
        )


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_quantize_imatrix_matches_ggml(qtype, dist):
    """importance-weighted path (ggml's quantize_row_<t>_impl) == ggml_quantize_chunk"""
    for rows, n in SHAPES:
        x = make(dist, rows, n, seed=1)
        for name, im in imatrices(n).items():
            ours = quants.quantize(x, qtype, im)
            ref = oracle().quantize_chunk(qtype, x, im)
            assert_same_bytes(qtype, ours, ref, x)
            assert_bit_identical(
                quants.dequantize(ours, qtype),
                gguf_quants.dequantize(ours, qtype),
                f"{qtype.name} {dist} imatrix={name} dequantize vs gguf-py",
            )


def test_imatrix_changes_the_result():
    """the imatrix path is really taken (same input, different bytes)"""
    x = make("normal", 8, 1024)
    for qtype in KQUANTS:
        assert not np.array_equal(quants.quantize(x, qtype), quants.quantize(x, qtype, make_imatrix(1024)))


def random_blocks(qtype: T, nblocks: int, seed: int) -> np.ndarray:
    """random bytes with every half-precision field replaced by a random finite half"""
    rng = np.random.default_rng(seed)
    bb = block_bytes(qtype)
    data = rng.integers(0, 256, (nblocks, bb), dtype=np.uint8)
    for name in HALF_FIELDS:
        if name in FIELDS[qtype]:
            lo, _ = FIELDS[qtype][name]
            h = rng.integers(0, 1 << 16, nblocks, dtype=np.uint16)
            h[(h & 0x7C00) == 0x7C00] &= 0xBFFF  # inf/NaN exponent -> a finite one
            data[:, lo : lo + 2] = h.view(np.uint8).reshape(nblocks, 2)
    return data.reshape(1, -1)


@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_dequantize_random_bytes(qtype):
    """every bit pattern of the quants and scales, incl. subnormal and huge halves"""
    data = random_blocks(qtype, 2048, seed=int(qtype))
    n = 2048 * 256
    ours = quants.dequantize(data, qtype)
    assert np.isfinite(ours).all()
    assert_bit_identical(ours, gguf_quants.dequantize(data, qtype), f"{qtype.name} vs gguf-py")
    assert_bit_identical(ours, oracle().dequantize_row(qtype, data, n), f"{qtype.name} vs ggml dequantize_row")


def ggml_test_data(n: int, offset: float = 0.0, amplitude: float = 2.0) -> np.ndarray:
    """test-quantize-fns.cpp's generate_data: 0.1 + amplitude*cosf(i + offset)"""
    c = np.cos(np.arange(n, dtype=np.float32) + np.float32(offset))
    return (0.1 + amplitude * c.astype(np.float64)).astype(np.float32)


def array_rmse(a: np.ndarray, b: np.ndarray) -> float:
    """test-quantize-fns.cpp's array_rmse (sqrt of the summed squares, over n)"""
    d = a.astype(np.float64).ravel() - b.astype(np.float64).ravel()
    return float(np.sqrt(np.sum(d * d)) / d.size)


@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
def test_round_trip_error(qtype):
    n = 32 * 128  # test-quantize-fns.cpp's test_size
    for x in (ggml_test_data(n), make("normal", 1, n).ravel()):
        for im in (None, make_imatrix(n)):
            y = quants.dequantize(quants.quantize(x, qtype, im), qtype)
            err = array_rmse(x, y)
            assert err < MAX_TOTAL_ERROR[qtype], f"{qtype.name} imatrix={im is not None}: {err}"


@pytest.mark.parametrize("qtype", KQUANTS, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [128, 300, 1000])
def test_row_length_not_multiple_of_256(qtype, n):
    with pytest.raises(ValueError, match="multiple"):
        quants.quantize(np.zeros((2, n), np.float32), qtype)
    with pytest.raises(ValueError, match="multiple"):
        quants.quantize(np.zeros((2, n), np.float32), qtype, np.ones(n, np.float32))
