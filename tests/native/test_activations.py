"""The gated FFN's activations: the AVX2 kernels compute silu and gelu_tanh
(as v * sigmoid(2u)) with libm's expf (expf_avx2.h) and must give the bits of
the scalar loops on every input, so the faster FFN moves no logit. The scalar
kernels are the oracle for the bits; numpy's tanh form of GELU (what
transformers computes) bounds the error of the sigmoid form."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.native import ffi, lib

pytestmark = pytest.mark.skipif(not lib.lm_impl_available(lib.LM_IMPL_AVX2), reason="no AVX2 on this CPU")
ACTS = {"silu": lib.LM_ACT_SILU, "gelu_tanh": lib.LM_ACT_GELU_TANH}


def act_mul(impl: int, act: int, x: np.ndarray, up: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(x, dtype=np.float32).copy()
    up = np.ascontiguousarray(up, dtype=np.float32)
    rc = lib.lm_act_mul_row(impl, act, ffi.from_buffer("float[]", out), ffi.from_buffer("float[]", up), out.size)
    assert rc == 0
    return out


def assert_same_bits(act: int, x: np.ndarray, up: np.ndarray) -> None:
    a, b = act_mul(lib.LM_IMPL_SCALAR, act, x, up), act_mul(lib.LM_IMPL_AVX2, act, x, up)
    differ = np.flatnonzero(a.view(np.uint32) != b.view(np.uint32))
    assert differ.size == 0, f"first differing inputs {x[differ[:5]]}: {a[differ[:5]]} vs {b[differ[:5]]}"


@pytest.mark.parametrize("act", ACTS.values(), ids=ACTS.keys())
def test_every_exponent_from_minus_to_plus_200(act):
    """About 4 million floats spread evenly by bit pattern over [-200, 200]
    (both signs, tiny to the ranges where expf under- and overflows)."""
    pos = np.arange(0, np.float32(200.0).view(np.uint32), 509, dtype=np.uint32).view(np.float32)
    x = np.concatenate([pos, -pos])
    up = np.random.default_rng(0).standard_normal(x.size).astype(np.float32)
    assert_same_bits(act, x, up)


@pytest.mark.parametrize("act", ACTS.values(), ids=ACTS.keys())
@pytest.mark.parametrize("n", [1, 7, 8, 9, 33, 1000])
def test_lengths_and_special_values(act, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3e38, -3e38, 44.0, -44.0], np.float32)
    x[: min(n, specials.size)] = specials[: min(n, specials.size)]
    assert_same_bits(act, x, rng.standard_normal(n).astype(np.float32))


def test_gelu_as_sigmoid_equals_the_tanh_form():
    x = np.linspace(-12, 12, 100_001, dtype=np.float32)
    ones = np.ones_like(x)
    got = act_mul(lib.LM_IMPL_AVX2, lib.LM_ACT_GELU_TANH, x, ones).astype(np.float64)
    v = x.astype(np.float64)
    want = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3)) < 2e-6


def test_an_unknown_activation_is_refused():
    x = np.zeros(4, np.float32)
    buf = ffi.from_buffer("float[]", x)
    assert lib.lm_act_mul_row(lib.LM_IMPL_SCALAR, 99, buf, buf, 4) != 0
