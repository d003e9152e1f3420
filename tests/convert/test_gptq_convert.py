"""`bin/convert --gptq`: calibration windows, GPTQ into ggml's Q4_0/Q4_K grids,
the layer-by-layer driver on lamina's engine, and the written files.

The models are tiny random llama checkpoints (tests/convert/test_convert_errors.py's,
with SmolLM2's tokenizer); the grids are checked against lamina's bit-exact
native quantizer and gguf-py's independent dequantizers.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize

from lamina.convert.encode import Encoder
from lamina.convert.gptq.algorithm import AffineGrid, GPTQConfig, GPTQError, gptq_quantize, quantize_rtn
from lamina.convert.gptq.calibrate import (
    DEFAULT_CALIBRATION,
    CalibrationError,
    LinearOutcome,
    calibrate,
    calibration_windows,
    output_error,
    window_starts,
)
from lamina.convert.gptq.convert import GPTQOptions, plan_gptq
from lamina.convert.gptq.grids import (
    GGMLGridError,
    block_d,
    encode_block,
    gptq_ggml,
    q4_k_reference,
    q4_k_scales,
    rtn_ggml,
)
from lamina.convert.pipeline import run_job
from lamina.quants import dequantize, quantize

CALIBRATION = DEFAULT_CALIBRATION  # the text shipped with the package
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def correlated(rng: np.random.Generator, n_tokens: int, n_in: int) -> np.ndarray:
    mix = rng.standard_normal((n_in, n_in)) / np.sqrt(n_in)
    return (
        (rng.standard_normal((n_tokens, n_in)) @ (np.eye(n_in) + 2 * mix)) * np.exp(rng.normal(0, 0.7, n_in))
    ).astype(np.float32)


def weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    W[1, :40] *= 8  # outliers: uneven scales across blocks
    W[2, 37] = -1.0
    return W


# ----------------------------------------------------------------------------
# calibration windows


def test_windows_disjoint_when_the_text_is_long_enough():
    tokens = np.arange(1000, dtype=np.int32)
    w = calibration_windows(tokens, 4, 100, None)
    assert w.shape == (4, 100)
    starts = w[:, 0]
    assert starts[0] == 0 and starts[-1] == 900  # spread over the whole text
    assert np.all(np.diff(starts) >= 100)  # no overlap
    np.testing.assert_array_equal(w[1], np.arange(starts[1], starts[1] + 100))


def test_windows_overlap_evenly_when_the_text_is_short():
    starts = window_starts(250, 8, 100)
    assert starts[0] == 0 and starts[-1] == 150
    assert len(starts) == 8 and np.all(np.diff(starts) > 0)
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    w = calibration_windows(np.arange(250), 8, 100, bos_id=7)
    assert np.all(w[:, 0] == 7)  # BOS replaces the first token
    np.testing.assert_array_equal(w[-1, 1:], np.arange(151, 250))
    assert window_starts(100, 3, 100).tolist() == [0, 0, 0]  # exactly one window's worth
    assert window_starts(5000, 1, 100).tolist() == [0]


def test_windows_need_one_window_of_text():
    with pytest.raises(
        CalibrationError,
        match=r"calib\.txt: tokenizes to 99 tokens, fewer than one calibration "
        r"window of --seqlen 100",
    ):
        calibration_windows(np.arange(99), 4, 100, None, "calib.txt")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(CalibrationError, match="positive integer"):
            calibration_windows(np.arange(99), bad, 10, None)
        with pytest.raises(CalibrationError, match="positive integer"):
            calibration_windows(np.arange(99), 2, bad, None)


# ----------------------------------------------------------------------------
# ggml grids


def test_q4_k_grid_read_back_is_ggml_dequantization():
    rng = np.random.default_rng(0)
    W = weights(rng, 16, 512)
    ref = q4_k_reference(W)
    scale, offset = q4_k_scales(ref, 16)
    # rebuild the weights from the grids and the reference's own levels
    lv = np.empty((16, 512), dtype=np.float32)
    qs = ref.reshape(16, 2, 144)[:, :, 16:].reshape(16, 2, 4, 32)
    lv.reshape(16, 2, 4, 2, 32)[:, :, :, 0] = qs & 0xF
    lv.reshape(16, 2, 4, 2, 32)[:, :, :, 1] = qs >> 4
    rebuilt = np.repeat(scale, 32, axis=1) * lv - np.repeat(offset, 32, axis=1)
    np.testing.assert_array_equal(rebuilt, dequantize(ref, Q.Q4_K))


@pytest.mark.parametrize("qtype,nbytes", [(Q.Q4_0, 18), (Q.Q5_0, 22)])
def test_round_to_nearest_on_the_fixed_grids_is_ggml(qtype, nbytes):
    """RTN on the Q4_K grids reproduces ggml's Q4_K bytes; Q4_0's and Q5_0's
    only differ where ggml rounds with the f32 d it does not store."""
    rng = np.random.default_rng(1)
    W = weights(rng, 32, 512)
    np.testing.assert_array_equal(rtn_ggml("w", W, Q.Q4_K).data, quantize(W, Q.Q4_K))
    ours = rtn_ggml("w", W, qtype).data
    ggml = quantize(W, qtype)
    blocks = ours.reshape(32, -1, nbytes)
    np.testing.assert_array_equal(blocks[:, :, :2], ggml.reshape(32, -1, nbytes)[:, :, :2])  # the same d
    assert np.mean(ours == ggml) > 0.99
    np.testing.assert_array_equal(
        blocks[:, :, :2].copy().view(np.float16)[:, :, 0].T.astype(np.float64),
        np.stack([block_d(W[:, g * 32 : (g + 1) * 32], qtype) for g in range(16)]),
    )


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q5_0, Q.Q4_K])
@pytest.mark.parametrize("act_order,block_grid", [(False, "original"), (True, "original"), (False, "feedback")])
def test_gptq_into_ggml_blocks(qtype, act_order, block_grid):
    """Valid blocks (gguf-py reads them), dequantizing exactly to what GPTQ
    committed; Q4_K keeps ggml's scales; better than ggml's own rounding."""
    rng = np.random.default_rng(2)
    W = weights(rng, 32, 256)
    X = correlated(rng, 1024, 256)
    H = X.T.astype(np.float64) @ X
    gq = gptq_ggml("blk.0.ffn_up.weight", W, H, qtype, act_order=act_order, block_grid=block_grid)
    assert gq.data.dtype == np.uint8 and gq.data.shape == quantize(W, qtype).shape
    committed = gq.result.dequantize()
    np.testing.assert_array_equal(dequantize(gq.data, qtype), committed)
    np.testing.assert_array_equal(gguf_dequantize(gq.data, qtype).reshape(W.shape), committed)
    ggml = quantize(W, qtype)
    if qtype == Q.Q4_K:
        np.testing.assert_array_equal(gq.data.reshape(32, 144)[:, :16], ggml.reshape(32, 144)[:, :16])
    else:
        assert np.all(gq.result.g_idx == np.arange(256) // 32)
    e_gptq = output_error(W, committed, H)
    e_ggml = output_error(W, dequantize(ggml, qtype), H)
    assert e_gptq < 0.95 * e_ggml


def test_q4_k_sub_block_whose_scale_rounds_to_zero():
    """A sub-block far smaller than its neighbours gets sc = 0: every level
    means -dmin*m, GPTQ must commit to exactly that."""
    rng = np.random.default_rng(3)
    W = weights(rng, 8, 256)
    W[:, :32] *= 1e-4
    ref = q4_k_reference(W)
    scale, _ = q4_k_scales(ref, 8)
    assert np.any(scale[:, 0] == 0)
    X = correlated(rng, 512, 256)
    gq = gptq_ggml("w", W, X.T.astype(np.float64) @ X, Q.Q4_K)
    np.testing.assert_array_equal(dequantize(gq.data, Q.Q4_K), gq.result.dequantize())


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q5_0])
def test_all_zero_block(qtype):
    W = np.zeros((8, 64), dtype=np.float32)
    W[:, 32:] = np.random.default_rng(4).standard_normal((8, 32))
    gq = gptq_ggml("w", W, np.eye(64), qtype)
    out = dequantize(gq.data, qtype)
    assert np.all(out[:, :32] == 0)
    np.testing.assert_array_equal(out, gq.result.dequantize())


def test_affine_grid_in_gptq():
    """gptq.py's AffineGrid: RTN with an identity Hessian, committed values in float32."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((4, 64))
    grid = lambda w, g: AffineGrid(np.full(4, 0.25), np.full(4, 2.0))
    cfg = GPTQConfig(group_size=32, percdamp=0.0, static_groups=True)
    a = gptq_quantize(W, np.eye(64), cfg, grid=grid)
    b = quantize_rtn(W, cfg, grid=grid)
    np.testing.assert_array_equal(a.levels, b.levels)
    np.testing.assert_array_equal(a.dequantize(), np.float32(0.25) * a.levels - np.float32(2.0))
    assert a.offsets is not None and np.all(a.zeros == 8.0)
    with pytest.raises(GPTQError, match="mixes AffineGrid"):
        quantize_rtn(W, cfg, grid=lambda w, g: AffineGrid(np.ones(4), np.zeros(4)) if g else (np.ones(4), 8))


def test_ggml_grid_bad_input():
    with pytest.raises(
        GGMLGridError, match=r"blk\.0\.attn_q\.weight: GPTQ rounds into Q4_0, Q5_0, Q4_K only, not Q8_0"
    ):
        gptq_ggml("blk.0.attn_q.weight", np.zeros((8, 256)), np.eye(256), Q.Q8_0)
    with pytest.raises(GGMLGridError, match=r"w: row length 96 is not a multiple of Q4_K's block size 256"):
        gptq_ggml("w", np.zeros((8, 96)), np.eye(96), Q.Q4_K)
    with pytest.raises(GGMLGridError, match="2-D"):
        rtn_ggml("w", np.zeros(256), Q.Q4_0)
    with pytest.raises(GPTQError, match=r"Hessian must be \[64, 64\]"):
        gptq_ggml("w", np.zeros((8, 64)), np.eye(32), Q.Q4_0)
    assert encode_block(np.full((1, 32), 8, np.uint8), np.zeros((1, 1)), Q.Q4_0).tobytes()[2:] == bytes([0x88] * 16)
    # Q5_0: level 17 everywhere = low nibble 1, every 5th bit set
    assert encode_block(np.full((1, 32), 17, np.uint8), np.zeros((1, 1)), Q.Q5_0).tobytes()[2:] == bytes(
        [0xFF] * 4 + [0x11] * 16
    )


# ----------------------------------------------------------------------------
# the driver and the files, on a tiny llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from support.hf_checkpoints import hf_checkpoint
    from support.tiny_checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("gptq") / "tiny", hf_checkpoint("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def encoder():
    enc = Encoder(2)
    yield enc
    enc.close()


SMALL = {"nsamples": 4, "seqlen": 64}


@pytest.fixture(scope="module")
def f32_file(tiny: Path, tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Path:
    from lamina.convert.hf.convert import plan_hf
    from lamina.convert.recipes import get_mix

    return run_job(plan_hf(tiny, get_mix("f32"), encoder, tmp_path_factory.mktemp("f32") / "tiny-f32.gguf")).path


@pytest.fixture(scope="module")
def q4_k_file(tiny: Path, tmp_path_factory: pytest.TempPathFactory, encoder: Encoder):
    out = tmp_path_factory.mktemp("q4k") / "tiny-gptq-q4_k.gguf"
    stats: list = []
    run_job(plan_gptq(tiny, GPTQOptions(mix="q4_k", **SMALL), encoder, out, stats=stats))
    return out, stats


def _windows(f32_file: Path) -> np.ndarray:
    from lamina.convert.gptq.convert import _windows as windows

    return windows(f32_file, CALIBRATION, GPTQOptions(**SMALL))[0]


def test_gptq_beats_round_to_nearest_for_every_linear(q4_k_file):
    _, stats = q4_k_file
    assert [s.il for s in stats] == [0, 1]
    seen = 0
    for layer in stats:
        assert [s.name.split(".")[2] for s in layer.linears] == list(LINEARS)
        for s in layer.linears:
            if s.method.startswith("gptq"):
                assert s.err <= s.err_baseline, (s.name, s.err, s.err_baseline)
                assert 0 < s.rel_err < 0.1
                seen += 1
            else:
                assert s.method == "rtn Q6_K"  # the q4_k_m recipe's attn_v / ffn_down of layer 1
    assert seen == 12


def test_q4_k_file_is_plain_q4_k_m_with_gptq_levels(q4_k_file, tiny: Path, tmp_path: Path, encoder: Encoder):
    """Same table, types and non-GPTQ bytes as plain --q4_k; the GPTQ'd tensors
    keep ggml's scales (the first 16 bytes of each block), change levels."""
    from lamina.convert.hf.convert import plan_hf
    from lamina.convert.recipes import get_mix
    from lamina.gguf.reader import GGUFFile

    out, _ = q4_k_file
    plain = run_job(plan_hf(tiny, get_mix("q4_k"), encoder, tmp_path / "plain.gguf")).path
    a, b = GGUFFile(out), GGUFFile(plain)
    assert [(t.name, t.ggml_type, t.ne) for t in a.tensors] == [(t.name, t.ggml_type, t.ne) for t in b.tensors]
    n_gptq = 0
    for t in a.tensors:
        x, y = a.tensor_bytes(t.name), b.tensor_bytes(t.name)
        if t.ggml_type == Q.Q4_K and t.name.startswith("blk."):
            x, y = x.reshape(-1, 144), y.reshape(-1, 144)
            np.testing.assert_array_equal(x[:, :16], y[:, :16])
            assert not np.array_equal(x[:, 16:], y[:, 16:]), t.name
            n_gptq += 1
        else:
            np.testing.assert_array_equal(x, y, err_msg=t.name)
    assert n_gptq == 12
    assert a.metadata["general.file_type"] == b.metadata["general.file_type"]
    assert list(a.metadata)[-2:] == ["general.quantization_version", "general.file_type"]
    assert a.metadata["quantize.gptq.nsamples"] == 4 and a.metadata["quantize.gptq.seqlen"] == 64
    assert a.metadata["quantize.gptq.dataset"].startswith("asyoulik.txt: ")
    assert a.metadata["quantize.gptq.tensors_count"] == 12
    assert not any(k.startswith("lamina.gptq.") for k in a.metadata)


def test_grid_plan_rounds_every_type_gptq_has_a_grid_for(encoder: Encoder):
    """q4_k_m gives rows that are not a multiple of 256 Q5_0 (and some attn_v
    Q6_K/Q8_0): GPTQ rounds the Q4_0/Q5_0/Q4_K ones, the rest stay RTN."""
    from lamina.convert.gptq.convert import _GridPlan

    types = {
        "blk.0.attn_q.weight": Q.Q5_0,
        "blk.0.ffn_down.weight": Q.Q4_K,
        "blk.0.attn_v.weight": Q.Q6_K,
        "blk.1.attn_v.weight": Q.Q8_0,
    }
    plan = _GridPlan(types, GPTQOptions(mix="q4_k", **SMALL), encoder)
    assert [n for n in types if plan.needs_hessian(n)] == ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"]
    rng = np.random.default_rng(7)
    W = weights(rng, 64, 256)
    X = correlated(rng, 512, 256)
    H = X.T.astype(np.float64) @ X
    got = plan.quantize("blk.0.attn_q.weight", W, H)
    assert got.method == "gptq Q5_0"
    np.testing.assert_array_equal(dequantize(plan.data["blk.0.attn_q.weight"], Q.Q5_0), got.committed)
    assert output_error(W, got.committed, H) < output_error(W, got.baseline, H)
    assert plan.quantize("blk.0.attn_v.weight", W, None).method == "rtn Q6_K"
    assert "blk.0.attn_v.weight" not in plan.data


def test_true_sequential_calibration_sees_quantized_earlier_layers(f32_file: Path):
    """The Hessian of layer 1's q/k/v input is what the numpy reference model
    gives with layer 0 quantized (as committed), not with layer 0 in float."""
    from lamina.engine.loader import read_hparams
    from lamina.engine.reference import forward, load_reference_weights
    from lamina.gguf.reader import GGUFFile

    windows = _windows(f32_file)
    committed: dict[str, np.ndarray] = {}
    hessians: dict[tuple[int, str], np.ndarray] = {}

    class Plan:
        def needs_hessian(self, name):
            return True

        def quantize(self, name, W, H):
            res = gptq_quantize(W, H, GPTQConfig(group_size=64))
            committed[name] = res.dequantize()
            return LinearOutcome(committed[name], quantize_rtn(W, GPTQConfig(group_size=64)).dequantize())

    stats = calibrate(
        f32_file, windows, Plan(), n_threads=2, on_hessian=lambda il, point, H: hessians.__setitem__((il, point), H)
    )
    assert sorted(hessians) == [(il, p) for il in (0, 1) for p in ("attn_in", "down_in", "ffn_in", "wo_in")]
    assert all(s.err <= s.err_baseline for layer in stats for s in layer.linears)

    g = GGUFFile(f32_file)
    hp = read_hparams(g)
    W = load_reference_weights(g)
    E = hp.n_embd
    # one layer, whose "output head" is layer 1's attention norm and an identity matrix
    hp1 = dataclasses.replace(hp, n_layer=1, layers=hp.layers[:1], tied_output=False, n_vocab=E)

    def hessian_after_layer0(weights: dict[str, np.ndarray], norm: str) -> np.ndarray:
        """sum X^T X of norm(stream after layer 0) over the windows."""
        w = dict(weights, **{"output_norm.weight": weights[norm], "output.weight": np.eye(E)})
        H = np.zeros((E, E))
        for toks in windows:
            X = forward(hp1, w, toks, kv_type="f32")
            H += X.T @ X
        return H

    quant0 = {n: v.astype(np.float64) for n, v in committed.items() if n.startswith("blk.0.")}
    got = hessians[1, "attn_in"]
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    h_quant = hessian_after_layer0(dict(W, **quant0), "blk.1.attn_norm.weight")
    h_float = hessian_after_layer0(W, "blk.1.attn_norm.weight")
    assert rel(got, h_quant) < 1e-4
    assert rel(got, h_float) > 20 * rel(got, h_quant)

    # within layer 0: the gate/up input came after q/k/v/o were quantized
    # (the reference with layer 0's FFN zeroed leaves the stream after attention)
    no_ffn = {f"blk.0.{n}.weight": np.zeros_like(W[f"blk.0.{n}.weight"]) for n in ("ffn_gate", "ffn_up", "ffn_down")}
    got = hessians[0, "ffn_in"]
    h_quant = hessian_after_layer0({**W, **quant0, **no_ffn}, "blk.0.ffn_norm.weight")
    h_float = hessian_after_layer0({**W, **no_ffn}, "blk.0.ffn_norm.weight")
    assert rel(got, h_quant) < 1e-4
    assert rel(got, h_float) > 20 * rel(got, h_quant)


def test_pure_gptq_file_reads_back(tiny: Path, tmp_path: Path, encoder: Encoder):
    from lamina.gguf.reader import GGUFFile
    from lamina.gptq.format import gptq_file_config, read_gptq_linear

    out = tmp_path / "tiny-gptq.gguf"
    stats: list = []
    run_job(
        plan_gptq(
            tiny, GPTQOptions(group_size=64, act_order=True, sym=False, damp=0.02, **SMALL), encoder, out, stats=stats
        )
    )
    g = GGUFFile(out)
    cfg = gptq_file_config(g)
    assert cfg["bits"] == 4 and cfg["group_size"] == 64 and cfg["sym"] is False and cfg["desc_act"] is True
    assert cfg["source"] == "lamina" and abs(cfg["damp"] - 0.02) < 1e-7
    assert cfg["calibration"].startswith("asyoulik.txt: ") and "4 windows of 64" in cfg["calibration"]
    assert "general.file_type" not in g.metadata
    names = {t.name for t in g.tensors}
    f32 = {s.name: s for layer in stats for s in layer.linears}
    for il in range(2):
        for lin in LINEARS:
            name = f"blk.{il}.{lin}.weight"
            assert name not in names
            linear = read_gptq_linear(g, name)
            assert linear is not None and linear.g_idx is not None  # act-order: a permuted g_idx
            assert linear.group_size == 64 and linear.n_groups == -(-linear.n_in // 64)
            assert f32[name].err <= f32[name].err_baseline
    # the rest is what the q4_k_m recipe gives: the tied embedding in Q6_K, norms F32
    assert g.tensor("token_embd.weight").ggml_type == Q.Q6_K
    assert g.tensor("blk.0.attn_norm.weight").ggml_type == Q.F32


def test_pure_gptq_weights_are_what_gptq_committed(
    tiny: Path, f32_file: Path, tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
):
    """read_gptq_linear(...).dequantize() of the written file equals the
    weights the calibration ran the engine with, and lamina runs the file."""
    from lamina.convert.gptq.convert import _PurePlan
    from lamina.gguf.reader import GGUFFile
    from lamina.gptq.format import read_gptq_linear

    committed: dict[str, np.ndarray] = {}
    inner = _PurePlan.quantize

    def quantize(self, name, W, H):
        outcome = inner(self, name, W, H)
        committed[name] = outcome.committed
        return outcome

    monkeypatch.setattr(_PurePlan, "quantize", quantize)
    out = tmp_path / "direct.gguf"
    run_job(plan_gptq(tiny, GPTQOptions(group_size=32, **SMALL), encoder, out))
    g = GGUFFile(out)
    assert len(committed) == 14
    for name, w in committed.items():
        linear = read_gptq_linear(g, name)
        assert linear.g_idx is None  # no act-order: i // 32
        np.testing.assert_array_equal(linear.dequantize(), w, err_msg=name)

    # lamina runs the file: its logits are the f32 model's with the committed weights
    from lamina.engine.context import Context, Model

    tokens = [1, 500, 600, 700, 800, 900]
    ours = Context(Model.load(out, n_threads=2), n_ctx=16, kv_type="f32").eval(tokens, all_logits=True)
    embd = dequantize(g.tensor_bytes("token_embd.weight"), Q.Q6_K)  # tied: Q6_K, as q4_k_m gives it
    ref_model = Model.load(f32_file, n_threads=2, overrides={**committed, "token_embd.weight": embd})
    ref = Context(ref_model, n_ctx=16, kv_type="f32").eval(tokens, all_logits=True)
    flt = Context(
        Model.load(f32_file, n_threads=2, overrides={"token_embd.weight": embd}), n_ctx=16, kv_type="f32"
    ).eval(tokens, all_logits=True)
    dist = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    # ~1% apart (the engine rounds activations to 8 bits for these dots), ~10% from the float model
    assert dist(ours, ref) < 0.25 * dist(ref, flt)


# ----------------------------------------------------------------------------
# the command line: bad input is one line on stderr and nothing written


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lamina", "convert", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--gptq", "--bits", "3"], r"GPTQ bits=3 is not supported: lamina supports bits=4"),
        (["--act-order"], r"--act-order only apply with --gptq"),
        (["--q4_k", "--damp", "0.1", "--nsamples", "4"], r"--damp, --nsamples only apply with --gptq"),
        (["--gptq", "--q8_0"], r"--gptq rounds into q4_0, q4_k \(q4_k_m\) or q4_k_s, not q8_0"),
        (["--gptq", "--q4_0", "--group-size", "64"], r"--group-size: --gptq --q4_0 rounds into q4_0's own 32-weight"),
        (["--gptq", "--q4_k", "--asym"], r"--sym/--asym: --gptq --q4_k rounds into"),
        (["--gptq", "--nsamples", "0"], r"--nsamples must be a positive integer, got 0"),
        (["--gptq", "--seqlen", "-5"], r"--seqlen must be a positive integer, got -5"),
        (["--gptq", "--group-size", "0"], r"group_size must be -1"),
        (["--gptq", "--damp", "1.5"], r"percdamp \(damp\) must be in \[0, 1\)"),
        (["--gptq", "--pure"], r"--pure needs a type"),
        (["--gptq", "--calibration", "/nonexistent/text.txt"], r"/nonexistent/text\.txt: cannot read the calibration"),
    ],
)
def test_cli_rejects_bad_options(flags, message, tiny: Path, tmp_path: Path):
    import re

    before = {p.name for p in tmp_path.iterdir()}
    r = _convert(str(tiny), "-o", str(tmp_path / "out.gguf"), *flags)
    assert r.returncode == 1, r.stderr
    assert re.search(message, " ".join(r.stderr.split())), r.stderr
    assert "Traceback" not in r.stderr
    _assert_nothing_written(tmp_path, before)


def test_cli_too_short_calibration_text(tiny: Path, tmp_path: Path):
    text = tmp_path / "short.txt"
    text.write_text("All the world's a stage, and all the men and women merely players.\n")
    before = {p.name for p in tmp_path.iterdir()}
    r = _convert(
        str(tiny), "-o", str(tmp_path / "out.gguf"), "--gptq", "--q4_0", "--calibration", str(text), "--seqlen", "64"
    )
    assert r.returncode == 1
    msg = " ".join(r.stderr.split())
    assert f"{text}: tokenizes to" in msg and "fewer than one calibration window of --seqlen 64" in msg, msg
    _assert_nothing_written(tmp_path, before)  # no output, no temp folder


def test_cli_gptq_q4_0_runs_in_llama_cpp(tiny: Path, tmp_path: Path):
    out = tmp_path / "tiny-q4_0.gguf"
    r = _convert(
        str(tiny),
        "-o",
        str(out),
        "--gptq",
        "--q4_0",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--act-order",
        "--threads",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "layer   1/2" in r.stderr and "err/rtn" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_0.gguf"]
    from lamina.engine.context import Context, Model
    from lamina.gguf.reader import GGUFFile

    g = GGUFFile(out)
    assert {t.ggml_type for t in g.tensors if t.name.startswith("blk.") and t.name.endswith("_q.weight")} == {Q.Q4_0}
    assert g.metadata["quantize.gptq.act_order"] is True
    tokens = [1, 500, 600, 700]
    ours = Context(Model.load(out, n_threads=2), n_ctx=16, kv_type="f32").eval(tokens, all_logits=True)
    # llama.cpp in a child process: its libggml clashes with the ggml oracle's (tests/support/llama_cpp_ref.py)
    from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits

    if not have_llama_cpp():
        pytest.skip("llama-cpp-python not installed: no llama.cpp logits to compare")
    _, theirs = llama_cpp_logits(out, tokens=tokens, n_ctx=16)
    assert np.abs(ours - theirs).max() < 0.05 * np.abs(theirs).max()


def test_cli_routes_quantized_checkpoints_to_the_gptq_import(tmp_path: Path):
    """bin/convert DIR reads DIR's quantization config first (convert/gptq/importer.py):
    a GPTQ checkpoint is imported, another method refused by name; --gptq on
    an already GPTQ-quantized checkpoint is refused."""
    import json

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "awq", "bits": 4}})
    )
    r = _convert(str(ckpt), "-o", str(tmp_path / "out.gguf"))
    assert r.returncode == 1
    assert "quant_method: 'awq' is not supported: lamina imports GPTQ checkpoints" in " ".join(r.stderr.split())
    (ckpt / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "gptq", "bits": 4}})
    )
    r = _convert(str(ckpt), "-o", str(tmp_path / "out.gguf"), "--gptq")
    assert r.returncode == 1
    assert "GPTQ-quantized already; convert it without --gptq" in " ".join(r.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
