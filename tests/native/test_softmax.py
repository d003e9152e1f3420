"""Attention's softmax: the AVX2 kernel computes libm's expf itself (glibc's
algorithm in double precision, 8 lanes at a time) and must give the bits of
the scalar loop that calls expf, on every input, so that a faster softmax
moves no logit. The scalar kernel is the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.native import ffi, lib

pytestmark = pytest.mark.skipif(not lib.lm_impl_available(lib.LM_IMPL_AVX2), reason="no AVX2 on this CPU")


def softmax(impl: int, row: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(row, dtype=np.float32).copy()
    assert lib.lm_softmax_row(impl, ffi.from_buffer("float[]", x), x.size) == 0
    return x


def assert_same_bits(row: np.ndarray) -> None:
    a, b = softmax(lib.LM_IMPL_SCALAR, row), softmax(lib.LM_IMPL_AVX2, row)
    differ = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
    assert differ.size == 0, f"first differing indices {differ[:5]}"


def test_every_exponent_of_the_range_softmax_meets():
    """About 18 million floats spread evenly (by bit pattern) over [-104, 0]:
    each row holds a 0, so every value's exp is exp(value) itself."""
    lo, hi = np.float32(-0.0).view(np.uint32), np.float32(-104.0).view(np.uint32)
    values = np.arange(lo, hi, 61, dtype=np.uint32).view(np.float32)
    rows = np.array_split(values, len(values) // 4095)
    for part in range(0, len(rows), 512):
        chunk = np.concatenate([np.concatenate([[0.0], r]) for r in rows[part : part + 512]]).astype(np.float32)
        # rows of the chunk one after another: the same kernel call per row as attention makes
        start = 0
        for r in rows[part : part + 512]:
            assert_same_bits(chunk[start : start + len(r) + 1])
            start += len(r) + 1


@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 64, 1000, 4097])
def test_random_rows_of_every_length(n):
    rng = np.random.default_rng(n)
    for scale in (0.1, 3.0, 30.0, 300.0):
        assert_same_bits((rng.standard_normal(n) * scale).astype(np.float32))


@pytest.mark.parametrize(
    "special",
    [
        [0.0, -np.inf, -1.0, -np.inf, 2.0, -3.0, -np.inf, -np.inf, 1.0],
        [np.nan, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        [-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 0.0, 1e-45, -1e-45],
        [0.0, -87.5, -88.0, -88.5, -100.0, -103.9, -103.97, -103.98, -104.0, -150.0, -1e30, -3e38],
        [100.0] * 17,
    ],
)
def test_special_values(special):
    assert_same_bits(np.array(special, dtype=np.float32))


def test_bad_calls_are_errors():
    x = np.zeros(4, dtype=np.float32)
    assert lib.lm_softmax_row(lib.LM_IMPL_AVX2, ffi.from_buffer("float[]", x), 0) == lib.LM_ERR_ARG
    assert lib.lm_softmax_row(lib.LM_IMPL_AVX2, ffi.NULL, 4) == lib.LM_ERR_ARG
    assert lib.lm_softmax_row(99, ffi.from_buffer("float[]", x), 4) == lib.LM_ERR_IMPL
