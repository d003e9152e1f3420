"""GPTQ (convert/gptq/algorithm.py) against a direct float64 re-derivation, against
round-to-nearest, and the ecosystem's INT4 packing (runtime/gptq/pack.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lamina.convert.gptq.algorithm import (
    GPTQConfig,
    GPTQError,
    HessianAccumulator,
    check_bits,
    gptq_quantize,
    minmax_grid,
    output_error,
    quantize_levels,
    quantize_rtn,
)
from lamina.gptq.pack import (
    GPTQPacked,
    GPTQPackError,
    convert_qzeros,
    pack,
    pack_qweight,
    pack_qzeros,
    pack_result,
    unpack_qweight,
    unpack_qzeros,
)


def calibration(rng: np.random.Generator, n_tokens: int, n_in: int) -> np.ndarray:
    """Correlated inputs with uneven column scales, like real activations."""
    mix = rng.standard_normal((n_in, n_in)) / np.sqrt(n_in)
    col_scale = np.exp(rng.normal(0, 0.7, n_in))
    return (rng.standard_normal((n_tokens, n_in)) @ (np.eye(n_in) + 2 * mix)) * col_scale


def hessian(X: np.ndarray) -> np.ndarray:
    acc = HessianAccumulator(X.shape[1])
    acc.add_batch(X)
    return acc.H


# ----------------------------------------------------------------------------
# the direct re-derivation: one column at a time, the explicit inverse Hessian
# shrunk after each column (the OBS update), no Cholesky factor, no lazy blocks


def direct_gptq(W: np.ndarray, H: np.ndarray, cfg: GPTQConfig):
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    rows, cols = W.shape
    gs = cols if cfg.group_size == -1 else cfg.group_size
    n_groups = -(-cols // gs)
    grid = lambda w: minmax_grid(w, cfg.bits, cfg.sym, cfg.scale_dtype)
    params = {}
    if cfg.group_size == -1:
        params[0] = grid(W)  # before dead columns are zeroed
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if cfg.static_groups:
        for g in range(n_groups):
            params[g] = grid(W[:, g * gs : (g + 1) * gs])
    perm = np.argsort(-np.diag(H), kind="stable") if cfg.act_order else np.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv = np.linalg.inv(H + cfg.percdamp * np.mean(np.diag(H)) * np.eye(cols))

    levels = np.zeros((rows, cols))
    snapshot = W.copy()
    for c in range(cols):
        if c % cfg.blocksize == 0:
            # the reference computes a group's grid from the weights as they
            # stood when the enclosing lazy block began
            snapshot = W.copy()
        if cfg.static_groups:
            s, z = params[perm[c] // gs]
        elif cfg.group_size == -1:
            s, z = params[0]
        else:
            if c % gs == 0:
                params[c // gs] = grid(snapshot[:, c : c + gs])
            s, z = params[c // gs]
        lv = quantize_levels(W[:, c], s, z, cfg.maxq)
        q = s * (lv - z)
        levels[:, c] = lv
        # OBS: w_F -= (w_c - q_c) / [H^-1]_cc * [H^-1]_{c,F}; then drop c from H^-1
        err = (W[:, c] - q) / Hinv[c, c]
        W[:, c + 1 :] -= np.outer(err, Hinv[c, c + 1 :])
        W[:, c] = q
        Hinv = Hinv - np.outer(Hinv[:, c], Hinv[c, :]) / Hinv[c, c]
    invperm = np.argsort(perm)
    if cfg.static_groups or not cfg.act_order:
        g_idx = np.arange(cols) // gs
    else:
        g_idx = invperm // gs
    scales = np.stack([params[g][0] for g in range(n_groups)])
    zeros = np.stack([params[g][1] for g in range(n_groups)])
    return levels[:, invperm], scales, zeros, g_idx, perm


CASES = [
    # (rows, cols, group_size, act_order, sym, static_groups, blocksize)
    (16, 96, 32, False, True, False, 128),
    (16, 96, 32, True, True, False, 128),
    (12, 96, 32, False, False, False, 32),
    (12, 160, 32, True, False, False, 64),  # groups start mid-block
    (8, 256, 128, True, True, False, 128),
    (8, 256, 128, False, False, False, 128),
    (8, 80, -1, True, False, False, 128),
    (8, 80, -1, False, True, False, 16),
    (8, 96, 32, True, True, True, 128),  # static groups + act-order
    (8, 96, 32, True, False, True, 48),
]


@pytest.mark.parametrize("rows,cols,gs,act,sym,static,bs", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_direct_rederivation(rows, cols, gs, act, sym, static, bs, seed):
    rng = np.random.default_rng(1000 * seed + cols + rows + gs)
    W = rng.standard_normal((rows, cols))
    X = calibration(rng, 4 * cols, cols)
    X[:, 5] = 0.0  # a dead input
    H = hessian(X)
    cfg = GPTQConfig(group_size=gs, act_order=act, sym=sym, static_groups=static, blocksize=bs)
    res = gptq_quantize(W, H, cfg)
    levels, scales, zeros, g_idx, perm = direct_gptq(W, H, cfg)
    np.testing.assert_array_equal(res.perm, perm)
    np.testing.assert_array_equal(res.g_idx, g_idx)
    np.testing.assert_allclose(res.scales, scales, rtol=1e-6)
    np.testing.assert_array_equal(res.zeros, zeros)
    # levels are discrete: equal except where float noise sits on a rounding tie
    assert np.mean(res.levels == levels) == 1.0
    assert res.levels.dtype == np.uint8 and res.zeros.dtype == np.int32 and res.g_idx.dtype == np.int32
    deq = res.dequantize()
    assert np.all(deq[:, 5] == pytest.approx(0.0, abs=float(np.max(np.abs(res.scales))) * 8))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gs", [32, 128, -1])
@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("sym", [True, False])
def test_beats_round_to_nearest(seed, gs, act, sym):
    rng = np.random.default_rng(seed)
    rows, cols = 24, 256
    W = rng.standard_normal((rows, cols)) * 0.05
    X = calibration(rng, 1024, cols)
    cfg = GPTQConfig(group_size=gs, act_order=act, sym=sym)
    gptq = gptq_quantize(W, hessian(X), cfg)
    rtn = quantize_rtn(W, cfg)
    e_gptq = output_error(W, gptq.dequantize(), X)
    e_rtn = output_error(W, rtn.dequantize(), X)
    assert e_gptq <= e_rtn, (e_gptq, e_rtn)
    assert e_gptq < 0.9 * e_rtn  # not just barely


def test_identity_hessian_is_round_to_nearest():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((8, 64))
    for gs in (16, -1):
        cfg = GPTQConfig(group_size=gs, percdamp=0.0)
        a = gptq_quantize(W, np.eye(64), cfg)
        b = quantize_rtn(W, cfg)
        np.testing.assert_array_equal(a.levels, b.levels)
        np.testing.assert_array_equal(a.scales, b.scales)


def test_hessian_accumulator_batches():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 10, 16))
    one = HessianAccumulator(16)
    one.add_batch(X)  # 3 samples at once
    many = HessianAccumulator(16)
    for x in X:
        many.add_batch(x)  # one sample each
    assert one.nsamples == many.nsamples == 3
    np.testing.assert_allclose(one.H, many.H, rtol=1e-12)
    flat = X.reshape(-1, 16)
    np.testing.assert_allclose(one.H, 2 / 3 * flat.T @ flat, rtol=1e-12)
    with pytest.raises(GPTQError, match=r"\[\.\.\., 16\]"):
        one.add_batch(np.zeros((4, 15)))
    with pytest.raises(GPTQError, match="no calibration samples"):
        _ = HessianAccumulator(4).H


def test_custom_grid_q4_0_style():
    """A Q4_0-style grid (negative scale d = max/-8, zero 8) goes through the same path."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((8, 64))
    X = calibration(rng, 256, 64)

    def q4_0(w, g):
        idx = np.argmax(np.abs(w), axis=1)
        d = (w[np.arange(w.shape[0]), idx] / -8).astype(np.float16).astype(np.float64)
        return d, np.full(w.shape[0], 8.0)

    cfg = GPTQConfig(group_size=32)
    res = gptq_quantize(W, hessian(X), cfg, grid=q4_0)
    rtn = quantize_rtn(W, cfg, grid=q4_0)
    assert np.all(res.scales < 0) or np.any(res.scales < 0)
    assert output_error(W, res.dequantize(), X) < output_error(W, rtn.dequantize(), X)


def test_fractional_zero_grid():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((8, 64))
    res = gptq_quantize(
        W,
        hessian(calibration(rng, 256, 64)),
        GPTQConfig(group_size=32),
        grid=lambda w, g: (np.full(w.shape[0], 0.25), np.full(w.shape[0], 7.5)),
    )
    assert res.zeros.dtype == np.float32 and np.all(res.zeros == 7.5)


@pytest.mark.parametrize("bits", [2, 3, 8, 5, "4"])
def test_unsupported_bits(bits):
    """INT4 files take 4 bits only; the algorithm also runs at 5 (Q5_0's grid)"""
    with pytest.raises(GPTQError, match=r"lamina supports bits=4"):
        check_bits(bits)
    if bits == 5:
        assert GPTQConfig(bits=5).maxq == 31
    else:
        with pytest.raises(GPTQError, match=r"lamina supports bits=4 for GPTQ INT4 files"):
            GPTQConfig(bits=bits)


def test_bad_inputs():
    W = np.zeros((8, 16))
    with pytest.raises(GPTQError, match=r"Hessian must be \[16, 16\]"):
        gptq_quantize(W, np.eye(8))
    with pytest.raises(GPTQError, match="2-D"):
        gptq_quantize(np.zeros(16), np.eye(16))
    with pytest.raises(GPTQError, match="NaN"):
        gptq_quantize(np.full((8, 16), np.nan), np.eye(16))
    with pytest.raises(GPTQError, match="group_size"):
        GPTQConfig(group_size=0)
    with pytest.raises(GPTQError, match="percdamp"):
        GPTQConfig(percdamp=-0.1)
    with pytest.raises(GPTQError, match="positive definite"):
        H = -np.eye(16)
        gptq_quantize(W + 1, H, GPTQConfig(percdamp=0.0, group_size=-1))


# ----------------------------------------------------------------------------
# packing


def test_qweight_layout_matches_the_ecosystem():
    """Nibble j of qweight[r, o] is the level of input 8r + j of output o."""
    levels = np.zeros((8, 16), dtype=np.uint8)
    levels[3, 9] = 0xA  # output 3, input 9 -> row 1, nibble 1
    levels[7, 15] = 0xF  # output 7, input 15 -> row 1, nibble 7 (sign bit)
    qw = pack_qweight(levels)
    assert qw.shape == (2, 8) and qw.dtype == np.int32
    assert qw[1, 3] == 0xA0
    assert qw[1, 7].view(np.uint32) == 0xF0000000 and qw[1, 7] < 0
    assert np.count_nonzero(qw) == 2
    np.testing.assert_array_equal(unpack_qweight(qw), levels)


def test_qzeros_layout_v1_and_v2():
    zeros = np.full((2, 16), 8, dtype=np.int32)
    zeros[1, 10] = 3  # group 1, output 10 -> column 1, nibble 2
    v2 = pack_qzeros(zeros, "v2")
    v1 = pack_qzeros(zeros, "v1")
    assert v2.shape == v1.shape == (2, 2)
    assert v2[0, 0].view(np.uint32) == 0x88888888
    assert v1[0, 0].view(np.uint32) == 0x77777777  # zero minus one
    assert v2[1, 1].view(np.uint32) == 0x88888388
    assert v1[1, 1].view(np.uint32) == 0x77777277
    np.testing.assert_array_equal(unpack_qzeros(v1, "v1"), zeros)
    np.testing.assert_array_equal(unpack_qzeros(v2, "v2"), zeros)
    np.testing.assert_array_equal(convert_qzeros(v1, "v1", "v2"), v2)
    np.testing.assert_array_equal(convert_qzeros(v2, "v2", "v1"), v1)


@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize("act,sym", [(False, True), (True, False), (True, True)])
def test_pack_round_trip(fmt, act, sym):
    rng = np.random.default_rng(7)
    out_f, in_f = 24, 128
    W = rng.standard_normal((out_f, in_f))
    X = calibration(rng, 512, in_f)
    res = gptq_quantize(W, hessian(X), GPTQConfig(group_size=32, act_order=act, sym=sym))
    if fmt == "v1" and np.any(res.zeros == 0):
        res.zeros[res.zeros == 0] = 1  # v1 cannot store zero 0 (tested below)
    p = pack_result(res, fmt)
    assert p.qweight.shape == (in_f // 8, out_f) and p.qweight.dtype == np.int32
    assert p.qzeros.shape == (4, out_f // 8) and p.qzeros.dtype == np.int32
    assert p.scales.shape == (4, out_f) and p.scales.dtype == np.float16
    assert p.g_idx.shape == (in_f,) and p.g_idx.dtype == np.int32
    levels, scales, zeros, g_idx = p.unpack()
    np.testing.assert_array_equal(levels, res.levels)
    np.testing.assert_array_equal(zeros, res.zeros)
    np.testing.assert_array_equal(g_idx, res.g_idx)
    np.testing.assert_array_equal(scales, res.scales)  # scales were f16 already
    np.testing.assert_array_equal(p.dequantize(), res.dequantize())
    other = p.to_format("v2" if fmt == "v1" else "v1")
    np.testing.assert_array_equal(other.dequantize(), p.dequantize())


def test_v1_rejects_zero_point_zero():
    zeros = np.full((1, 8), 5)
    zeros[0, 3] = 0
    with pytest.raises(GPTQPackError, match=r"zero point 0 \(group 0, output 3\).*v2"):
        pack_qzeros(zeros, "v1")
    assert unpack_qzeros(pack_qzeros(zeros, "v2"), "v2")[0, 3] == 0
    # ... and v1 can hold 16, which v2 cannot
    zeros[0, 3] = 16
    assert unpack_qzeros(pack_qzeros(zeros, "v1"), "v1")[0, 3] == 16
    with pytest.raises(GPTQPackError, match=r"zeros \(v2\) must be in \[0, 15\]"):
        pack_qzeros(zeros, "v2")


@pytest.mark.parametrize(
    "shape,what", [((8, 12), "in_features"), ((12, 8), "out_features"), ((6, 20), "multiples of 8")]
)
def test_odd_shapes_rejected(shape, what):
    out_f, in_f = shape
    levels = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(GPTQPackError, match=what):
        pack(levels, np.ones((1, out_f)), np.full((1, out_f), 8), np.zeros(in_f, dtype=np.int32))


def test_pack_rejects_bad_values_and_shapes():
    levels = np.zeros((8, 16), dtype=np.int32)
    sc, z, gi = np.ones((2, 8)), np.full((2, 8), 8), np.repeat([0, 1], 8)
    pack(levels, sc, z, gi)
    with pytest.raises(GPTQPackError, match=r"levels must be in \[0, 15\]"):
        pack(levels + 16, sc, z, gi)
    with pytest.raises(GPTQPackError, match="g_idx"):
        pack(levels, sc, z, gi + 1)
    with pytest.raises(GPTQPackError, match="zeros must have the shape"):
        pack(levels, sc, z[:1], gi)
    with pytest.raises(GPTQPackError, match="format"):
        pack(levels, sc, z, gi, fmt="v3")
    with pytest.raises(GPTQPackError, match="bits=4"):
        pack(levels, sc, z, gi, bits=8)
    p = pack(levels, sc, z, gi)
    bad = GPTQPacked(p.qweight, p.qzeros[:1], p.scales, p.g_idx)
    with pytest.raises(GPTQPackError, match=r"blk\.0\.ffn_up\.qzeros must be \[2, 1\]"):
        bad.validate("blk.0.ffn_up")
    with pytest.raises(GPTQPackError, match="int32"):
        unpack_qweight(p.qweight.astype(np.int64))


def test_unpack_matches_autogptq_torch_reference():
    """Dequantize the way AutoGPTQ's torch fallback does (shift, mask, +1 on
    zeros for v1, scales * (w - z)) and compare with GPTQPacked.dequantize."""
    rng = np.random.default_rng(8)
    out_f, in_f, gs = 16, 64, 16
    levels = rng.integers(0, 16, (out_f, in_f))
    zeros = rng.integers(1, 16, (in_f // gs, out_f))
    scales = rng.uniform(0.01, 0.1, (in_f // gs, out_f)).astype(np.float16)
    g_idx = np.arange(in_f) // gs
    p = pack(levels, scales, zeros, g_idx, "v1")
    wf = np.arange(0, 32, 4, dtype=np.uint32)
    qz = p.qzeros.view(np.uint32)
    z = ((qz[:, :, None] >> wf[None, None, :]) & 15).astype(np.int32) + 1
    z = z.reshape(z.shape[0], -1)  # [G, out]
    qw = p.qweight.view(np.uint32)
    w = ((qw[:, None, :] >> wf[None, :, None]) & 15).reshape(in_f, out_f)  # [in, out]
    ref = scales.astype(np.float32)[g_idx] * (w - z[g_idx])  # [in, out]
    np.testing.assert_array_equal(p.dequantize(), ref.T)


def test_all_combinations_small():
    """Every switch combination runs and dequantizes close to W."""
    rng = np.random.default_rng(9)
    W = rng.standard_normal((8, 64)) * 0.1
    H = hessian(calibration(rng, 256, 64))
    for gs, act, sym, static in itertools.product([16, 64, -1], [False, True], [False, True], [False, True]):
        if static and gs == -1:
            continue
        res = gptq_quantize(W, H, GPTQConfig(group_size=gs, act_order=act, sym=sym, static_groups=static))
        assert np.max(np.abs(res.dequantize() - W)) < 0.2
