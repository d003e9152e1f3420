"""The native forward pass against the numpy reference on tiny random models,
and the context's bookkeeping: prefill == decode, truncate, threads, batch
splitting, sliding windows, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf import MODEL_TENSOR

from lamina.engine.context import Context, ContextError, ContextFullError, InvalidTokenError, Model
from lamina.engine.loader import ModelConfigError, read_hparams, tensor_name
from lamina.engine.reference import forward, load_reference_weights
from lamina.errors import (
    GGUFMissingKeyError,
    GGUFMissingTensorError,
    GGUFTensorError,
    LaminaError,
    UnsupportedArchitectureError,
)
from lamina.gguf.reader import GGUFFile
from lamina.native import ffi, lib
from support.paths import REPO
from support.tiny_models import CONFIGS, GEMMA3, LLAMA, QWEN2, TinyConfig, for_block, write_tiny_model

QTYPES = ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K"]


def tokens_for(cfg: TinyConfig, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, cfg.n_vocab, n)


def reference_logits(path: Path, tokens, kv_type: str = "f32", hparams=None) -> np.ndarray:
    with GGUFFile(path) as g:
        return forward(hparams or read_hparams(g), load_reference_weights(g), tokens, kv_type=kv_type)


def native_logits(path: Path, tokens, kv_type: str = "f32", n_threads: int = 2, hparams=None, **ctx_kw) -> np.ndarray:
    ctx = Context(Model.load(path, n_threads=n_threads, hparams=hparams), n_ctx=64, kv_type=kv_type, **ctx_kw)
    return ctx.eval(tokens, all_logits=True)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def nmse(got: np.ndarray, ref: np.ndarray) -> float:
    return float(((got - ref) ** 2).mean() / (ref**2).mean())


def assert_same_choices(got: np.ndarray, ref: np.ndarray) -> None:
    """Top-1 equal, except where the reference itself has a near tie (within
    a few times the logit noise that activation quantization introduces)."""
    noise = np.sqrt(((got - ref) ** 2).mean())
    picked = ref[np.arange(len(ref)), got.argmax(axis=1)]
    assert np.all(picked >= ref.max(axis=1) - 4 * noise), "native top-1 differs without a near tie"
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9


# -- hyperparameters ---------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_hparams_from_metadata(tiny, name):
    cfg = CONFIGS[name]
    with GGUFFile(tiny(cfg)) as g:
        hp = read_hparams(g)
    assert (hp.arch, hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_ff) == (
        cfg.arch,
        cfg.n_vocab,
        cfg.n_embd,
        cfg.n_layer,
        cfg.n_ff,
    )
    assert (hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_rot) == (cfg.n_head, cfg.n_head_kv, cfg.hd, cfg.n_rot or cfg.hd)
    assert hp.tied_output == cfg.tied and hp.rope_freqs == cfg.rope_freqs
    assert (hp.yarn_divisors is not None) == (cfg.yarn is not None)
    gemma = cfg.arch in ("gemma2", "gemma3")
    assert hp.rope_neox == (cfg.arch not in ("llama", "granite", "smollm3")) and hp.qkv_bias == (cfg.arch == "qwen2")
    assert hp.qk_norm == (cfg.arch in ("gemma3", "qwen3", "qwen3moe", "olmo2")) and hp.post_norms == (
        gemma or cfg.arch == "olmo2"
    )
    assert (hp.pre_norms, hp.qk_norm_whole) == ((False, True) if cfg.arch == "olmo2" else (True, False))
    assert hp.activation == ("gelu_tanh" if gemma else "silu")
    embd, attn, residual, logit = cfg.multipliers or (np.sqrt(cfg.n_embd) if gemma else 1.0, 1 / np.sqrt(cfg.hd), 1, 1)
    assert (hp.embd_scale, hp.attn_scale) == (pytest.approx(embd), pytest.approx(attn))
    assert (hp.residual_scale, hp.logit_scale) == (pytest.approx(residual), pytest.approx(logit))
    assert (hp.attn_softcap, hp.final_softcap) == (cfg.softcaps or (0.0, 0.0))
    if cfg.arch == "gemma3":
        # pattern 3: layers 0, 1 slide with the local rope base, layer 2 is global; under YaRN
        # (as llama.cpp) the sliding layers rotate plain: neither its divisors nor its multiplier
        b, yarn = cfg.rope_base, cfg.yarn is not None
        got = [(lc.sliding_window, lc.rope_base, lc.rope_scale, lc.rope_plain) for lc in hp.layers]
        assert got == [(5, 1e4, 1.0, yarn), (5, 1e4, 1.0, yarn), (0, b, 1.0, False)]
    elif cfg.arch == "gemma2":
        # every other layer slides, all with the one rope base and (as llama.cpp) the one scaling
        b, s = cfg.rope_base, 1 / (cfg.rope_linear_factor or 1.0)
        got = [(lc.sliding_window, lc.rope_base, lc.rope_scale, lc.rope_plain) for lc in hp.layers]
        assert got == [(5, b, s, False), (0, b, s, False), (5, b, s, False)]
    else:
        scale = 1 / cfg.rope_linear_factor if cfg.rope_linear_factor else 1.0
        no_rope = [cfg.arch == "smollm3" and (il + 1) % 4 == 0 for il in range(cfg.n_layer)]
        assert all(lc.sliding_window == 0 and lc.rope_base == cfg.rope_base for lc in hp.layers)
        assert [lc.rope_scale for lc in hp.layers] == [0.0 if off else pytest.approx(scale) for off in no_rope]


# -- native == reference -----------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("n_tokens", [1, 7, 24])
def test_f32_weights_match_reference(tiny, name, n_tokens):
    cfg = CONFIGS[name]
    toks = tokens_for(cfg, n_tokens, seed=n_tokens)
    ref = reference_logits(tiny(cfg), toks)
    assert rel_err(native_logits(tiny(cfg), toks), ref) < 1e-4


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "gemma3"])
def test_kv_cache_types_match_reference(tiny, name, kv_type):
    # the reference rounds keys and values exactly as the cache stores them
    cfg = CONFIGS[name]
    if cfg.hd % 32:  # Q8_0 rows of a head: whole blocks
        cfg = replace(cfg, n_embd=cfg.n_head * 32)
    toks = tokens_for(cfg, 20)
    ref = reference_logits(tiny(cfg), toks, kv_type=kv_type)
    assert rel_err(native_logits(tiny(cfg), toks, kv_type=kv_type), ref) < 2e-3


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("name", ["llama", "llama_rope_scaled", "qwen2", "qwen3", "gemma3"])
def test_quantized_weights_match_reference(tiny, name, qtype):
    """Reference on the dequantized weights; the native dots also quantize
    activations (Q8_0/Q8_1/Q8_K/F16), so compare by nmse and top-1."""
    cfg = replace(for_block(CONFIGS[name], 256 if qtype.endswith("_K") else 32), qtype=qtype)
    toks = tokens_for(cfg, 24)
    got = native_logits(tiny(cfg), toks, kv_type="f16")
    ref = reference_logits(tiny(cfg), toks, kv_type="f16")
    assert nmse(got, ref) < (1e-5 if qtype == "F16" else 2e-3)
    assert_same_choices(got, ref)


def _expert_hits(path: Path, toks) -> np.ndarray:
    """[n_layer, n_expert] how often the reference's router picks each expert"""
    from lamina.engine import reference

    with GGUFFile(path) as g:
        hp, W = read_hparams(g), load_reference_weights(g)
    hits = np.zeros((hp.n_layer, hp.n_expert), int)
    real = reference.moe_ffn

    def counting(hp, W, il, h, act):
        logits = h @ W[tensor_name(MODEL_TENSOR.FFN_GATE_INP, il)].T
        for row in logits:
            hits[il, np.argsort(-row, kind="stable")[: hp.n_expert_used]] += 1
        return real(hp, W, il, h, act)

    reference.moe_ffn = counting
    try:
        forward(hp, W, toks)
    finally:
        reference.moe_ffn = real
    return hits


@pytest.mark.parametrize("qtype", QTYPES)
def test_mixture_of_experts_matches_reference(tiny, qtype):
    """qwen3moe: each token mixes its 2 of 8 experts, unevenly picked. With
    quantized activations a router near-tie can pick another expert for a
    token than the float64 reference does (llama.cpp would too), so the
    bound holds for 90% of the tokens and for the median; f32 weights: all."""
    cfg = replace(for_block(CONFIGS["qwen3moe"], 256 if qtype.endswith("_K") else 32), qtype=qtype)
    toks = tokens_for(cfg, 24)
    hits = _expert_hits(tiny(cfg), toks)
    assert hits.sum(axis=1).tolist() == [24 * cfg.n_expert_used] * cfg.n_layer
    assert (hits.max(axis=1) >= 2 * np.maximum(hits.min(axis=1), 1)).all(), f"experts hit evenly: {hits}"
    got = native_logits(tiny(cfg), toks, kv_type="f16")
    ref = reference_logits(tiny(cfg), toks, kv_type="f16")
    per_token = ((got - ref) ** 2).mean(axis=1) / (ref**2).mean()  # [T]
    bound = 1e-5 if qtype == "F16" else 2e-3
    assert np.median(per_token) < bound and (per_token < bound).mean() >= 0.9, per_token


def test_mixture_of_experts_f32_exact_routing(tiny):
    cfg = CONFIGS["qwen3moe"]
    toks = tokens_for(cfg, 24)
    assert rel_err(native_logits(tiny(cfg), toks), reference_logits(tiny(cfg), toks)) < 1e-4


@pytest.mark.parametrize("n_ctx", [64, 128])
def test_long_rope_factors_follow_the_context_size(tiny, n_ctx):
    """phi3 LongRoPE: a context of up to 64 positions per sequence rotates by
    the short factors, a longer one by the long factors (llama.cpp's rule);
    both scale cos and sin by the attention factor"""
    cfg = CONFIGS["phi3"]
    toks = tokens_for(cfg, 24)
    with GGUFFile(tiny(cfg)) as g:
        hp, W = read_hparams(g), load_reference_weights(g)
    assert (hp.long_rope, hp.rope_long_ctx, hp.rope_attn_factor) == (True, 64, pytest.approx(1.19))
    want = forward(hp, W, toks, long_rope=n_ctx > 64)
    other = forward(hp, W, toks, long_rope=n_ctx <= 64)
    got = Context(Model.load(tiny(cfg), n_threads=2), n_ctx=n_ctx, kv_type="f32").eval(toks, all_logits=True)
    assert rel_err(got, want) < 1e-4 and rel_err(got, other) > 1e-2


@pytest.mark.parametrize("qtype", ["MXFP4", "NVFP4"])
@pytest.mark.parametrize("name", ["llama", "gemma3", "qwen3moe"])
def test_fp4_weights_match_reference(tiny, name, qtype):
    """4-bit float weights (NVFP4's 64-weight blocks each dot two Q8_0 blocks
    of activations), token embedding and experts included: the reference on
    the dequantized weights, as the other types"""
    cfg = replace(for_block(CONFIGS[name], 64), qtype=qtype)
    toks = tokens_for(cfg, 24)
    got = native_logits(tiny(cfg), toks, kv_type="f16")
    ref = reference_logits(tiny(cfg), toks, kv_type="f16")
    per_token = ((got - ref) ** 2).mean(axis=1) / (ref**2).mean()  # [T]
    if cfg.n_expert:  # a router near-tie may pick another expert (see the MoE test)
        assert np.median(per_token) < 2e-3 and (per_token < 2e-3).mean() >= 0.9, per_token
    else:
        assert nmse(got, ref) < 2e-3
        assert_same_choices(got, ref)


def _scale_tensors(cfg: TinyConfig, names: list[str]):
    """extra=: <name>.scale for each weight name, f32 [1] or [n_expert] for
    an expert stack, as llama.cpp's converter writes NVFP4's scale_2"""
    rng = np.random.default_rng(3)

    def add(w):
        for name in names:
            n = cfg.n_expert if "_exps" in name else 1
            w.add_tensor(name.removesuffix(".weight") + ".scale", rng.uniform(0.25, 4.0, n).astype(np.float32))

    return add


SCALED = {
    "llama": [
        "blk.0.attn_q.weight",
        "blk.1.attn_v.weight",
        "blk.0.ffn_gate.weight",
        "blk.1.ffn_down.weight",
        "output.weight",
    ],
    "qwen3moe": [
        "blk.0.attn_k.weight",
        "blk.0.ffn_gate_exps.weight",
        "blk.1.ffn_down_exps.weight",
        "blk.1.ffn_up_exps.weight",
    ],
    "phi3": ["blk.0.attn_qkv.weight", "blk.1.attn_output.weight"],
}


@pytest.mark.parametrize("name", list(SCALED))
def test_nvfp4_per_tensor_scales_match_reference(tmp_path, name):
    """llama.cpp's converter keeps an NVFP4 checkpoint's scale_2 as
    <name>.scale, which llama.cpp multiplies into the matmul's output (per
    expert for a stack); lamina does the same, in decode and prefill"""
    cfg = replace(for_block(CONFIGS[name], 64), qtype="NVFP4")
    path = write_tiny_model(tmp_path / "scaled.gguf", cfg, extra=_scale_tensors(cfg, SCALED[name]))
    plain = write_tiny_model(tmp_path / "plain.gguf", cfg)
    toks = tokens_for(cfg, 24)
    ref = reference_logits(path, toks, kv_type="f16")
    assert rel_err(reference_logits(plain, toks, kv_type="f16"), ref) > 1e-2  # the scales matter
    for got in (native_logits(path, toks, kv_type="f16"), native_logits(path, toks[:1], kv_type="f16")):
        want = ref[: len(got)]
        per_token = ((got - want) ** 2).mean(axis=1) / (want**2).mean()
        assert np.median(per_token) < 2e-3 and (per_token < 2e-3).mean() >= 0.9, per_token


def test_nvfp4_scale_on_the_token_embedding_is_refused(tmp_path):
    cfg = replace(for_block(LLAMA, 64), qtype="NVFP4")
    path = write_tiny_model(tmp_path / "bad.gguf", cfg, extra=_scale_tensors(cfg, ["token_embd.weight"]))
    with pytest.raises(GGUFTensorError, match="token_embd.scale") as e:
        Model.load(path, n_threads=1)
    assert e.value.tensor == "token_embd.weight"


IQ_QTYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]


@pytest.mark.parametrize("qtype", IQ_QTYPES)
def test_lattice_iquant_weights_run(tiny, qtype):
    """A file whose matrices (token embedding included) hold a lattice i-quant,
    written by ggml's quantizer (lamina has none): it loads and runs, and
    matches the reference on the dequantized weights as the other types do."""
    cfg = replace(for_block(LLAMA, 256), qtype=qtype, n_layer=2)
    toks = tokens_for(cfg, 24)
    got = native_logits(tiny(cfg), toks, kv_type="f16")
    ref = reference_logits(tiny(cfg), toks, kv_type="f16")
    assert nmse(got, ref) < 2e-3
    assert_same_choices(got, ref)


def test_quantized_embedding_and_tied_head(tiny):
    cfg = replace(LLAMA, tied=True, embd_qtype="Q8_0", qtype="Q4_1")
    toks = tokens_for(cfg, 16)
    got, ref = native_logits(tiny(cfg), toks), reference_logits(tiny(cfg), toks)
    assert nmse(got, ref) < 2e-3
    assert_same_choices(got, ref)


# -- switches that GGUF files never set, checked through an hparams override --


def test_norm_plus_one_switch(tiny):
    path = tiny(GEMMA3)
    with GGUFFile(path) as g:
        hp = replace(read_hparams(g), norm_plus_one=True)
    toks = tokens_for(GEMMA3, 12)
    got = native_logits(path, toks, hparams=hp)
    assert rel_err(got, reference_logits(path, toks, hparams=hp)) < 1e-4
    assert rel_err(got, reference_logits(path, toks)) > 1e-2


def test_sliding_window_is_honoured(tiny):
    path = tiny(GEMMA3)
    toks = tokens_for(GEMMA3, 16)  # 16 positions > window of 5
    with GGUFFile(path) as g:
        hp = read_hparams(g)
    full = replace(hp, layers=tuple(replace(lc, sliding_window=0) for lc in hp.layers))
    windowed = native_logits(path, toks)
    unwindowed = native_logits(path, toks, hparams=full)
    assert rel_err(windowed, reference_logits(path, toks)) < 1e-4
    assert rel_err(unwindowed, reference_logits(path, toks, hparams=full)) < 1e-4
    # within the window nothing differs; past it the window must matter
    np.testing.assert_array_equal(windowed[:5], unwindowed[:5])
    assert rel_err(windowed[5:], unwindowed[5:]) > 1e-3


def test_sliding_window_across_decode_steps(tiny):
    toks = tokens_for(GEMMA3, 14)
    ctx = Context(Model.load(tiny(GEMMA3), n_threads=2), n_ctx=32, kv_type="f32")
    steps = np.stack([ctx.eval([t]) for t in toks])
    assert rel_err(steps, reference_logits(tiny(GEMMA3), toks)) < 1e-4


# -- context bookkeeping -----------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_prefill_equals_decode(tiny, name):
    cfg = CONFIGS[name]
    toks = tokens_for(cfg, 12)
    model = Model.load(tiny(cfg), n_threads=2)
    batch = Context(model, n_ctx=32).eval(toks, all_logits=True)
    ctx = Context(model, n_ctx=32)
    steps = np.stack([ctx.eval([t]) for t in toks])
    assert ctx.n_past == len(toks)
    np.testing.assert_allclose(steps, batch, rtol=0, atol=1e-5 * np.abs(batch).max())


def test_last_logits_equal_row_of_all_logits(tiny):
    toks = tokens_for(LLAMA, 9)
    model = Model.load(tiny(LLAMA))
    every = Context(model, n_ctx=32).eval(toks, all_logits=True)
    last = Context(model, n_ctx=32).eval(toks)
    assert last.shape == (LLAMA.n_vocab,) and every.shape == (9, LLAMA.n_vocab)
    np.testing.assert_array_equal(last, every[-1])


def test_truncate_then_reeval_equals_fresh(tiny):
    cfg = QWEN2
    a, b = tokens_for(cfg, 10, seed=1), tokens_for(cfg, 6, seed=2)
    model = Model.load(tiny(cfg), n_threads=2)
    ctx = Context(model, n_ctx=32)
    ctx.eval(a)
    ctx.eval(b)
    ctx.truncate(7)  # keep a[:7], then continue differently
    assert ctx.n_past == 7
    continued = ctx.eval(b[::-1], all_logits=True)
    fresh = Context(model, n_ctx=32).eval(np.concatenate([a[:7], b[::-1]]), all_logits=True)[7:]
    np.testing.assert_allclose(continued, fresh, rtol=0, atol=1e-5 * np.abs(fresh).max())


@pytest.mark.parametrize("n_threads", [2, 3])
def test_threads_do_not_change_results(tiny, n_threads):
    """Rows are split, never sums: any thread count gives the same bits, in
    prefill (pooled matmuls) and in decode (row-sliced matmuls) alike."""
    cfg = replace(for_block(LLAMA, 32), qtype="Q4_0")
    toks = tokens_for(cfg, 20)

    def run(threads: int) -> np.ndarray:
        ctx = Context(Model.load(tiny(cfg)), n_ctx=32, n_threads=threads)
        return np.concatenate([ctx.eval(toks[:16], all_logits=True)] + [ctx.eval([t])[None] for t in toks[16:]])

    np.testing.assert_array_equal(run(1), run(n_threads))


@pytest.mark.parametrize(
    ("cfg", "kv_type"),
    [
        (replace(LLAMA, n_ctx_train=2048), "f16"),  # head_dim 16: one strip of 16
        (replace(LLAMA, n_ctx_train=2048), "f32"),
        (replace(GEMMA3, n_ctx_train=2048), "f16"),  # head_dim 64: two strips; sliding layers stay unsplit
        (replace(GEMMA3, n_ctx_train=2048), "q8_0"),
        (replace(LLAMA, n_head=7, n_head_kv=1, head_dim=32, n_ctx_train=2048, seed=5), "f16"),  # 7 heads a group
    ],
    ids=["llama-f16", "llama-f32", "gemma3-f16", "gemma3-q8_0", "group7-f16"],
)
def test_decode_split_by_keys_has_the_bits_of_one_thread(tiny, cfg, kv_type):
    """Decode with 1024+ keys splits attention by keys over the threads
    (scores of a share of keys, softmax per head, mix per 32-wide strip); one
    thread never splits. Same bits either way."""
    toks = tokens_for(cfg, 1100)
    model = Model.load(tiny(cfg))

    def run(threads: int) -> np.ndarray:
        ctx = Context(model, n_ctx=1104, n_batch=512, kv_type=kv_type, n_threads=threads)
        ctx.eval(toks[:1096])
        return np.stack([ctx.eval([t]) for t in toks[1096:]])

    one = run(1)
    np.testing.assert_array_equal(run(2), one)
    np.testing.assert_array_equal(run(3), one)


@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
def test_heads_of_a_group_get_the_bits_they_get_alone(tiny, kv_type):
    """Attention hands out up to four heads of a KV group per task (the
    kernels take three at a time), fewer when threads would idle: one thread
    keeps seven heads as 4 + 3, eight threads take them one by one when the
    batch has two tokens or one. A head computed with others has the bits it
    gets alone."""
    cfg = replace(LLAMA, n_head=7, n_head_kv=1, head_dim=32, seed=5)
    toks = tokens_for(cfg, 24)
    model = Model.load(tiny(cfg))

    def run(threads: int, chunk: int) -> np.ndarray:
        ctx = Context(model, n_ctx=32, kv_type=kv_type, n_threads=threads)
        rows = [ctx.eval(toks[i : min(i + chunk, 20)], all_logits=True) for i in range(0, 20, chunk)]
        return np.concatenate(rows + [ctx.eval([t])[None] for t in toks[20:]])

    alone = run(8, chunk=2)
    np.testing.assert_array_equal(run(1, chunk=20), alone)
    np.testing.assert_array_equal(run(3, chunk=20), alone)
    ref_logits = forward(read_hparams(GGUFFile(tiny(cfg))), load_reference_weights(GGUFFile(tiny(cfg))), toks)
    assert nmse(alone, ref_logits) < (1e-3 if kv_type == "q8_0" else 1e-5)


def test_batches_larger_than_n_batch_are_split(tiny):
    toks = tokens_for(LLAMA, 23)
    model = Model.load(tiny(LLAMA))
    whole = Context(model, n_ctx=32).eval(toks, all_logits=True)
    ctx = Context(model, n_ctx=32, n_batch=5)
    split = ctx.eval(toks, all_logits=True)
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    ctx.truncate(0)
    np.testing.assert_allclose(ctx.eval(toks), whole[-1], rtol=0, atol=1e-5 * np.abs(whole).max())


def test_kv_bytes(tiny):
    model = Model.load(tiny(replace(LLAMA, n_embd=128)))  # head_dim 32: Q8_0 allowed
    hp = model.hparams
    per_pos = 2 * hp.n_layer * hp.n_head_kv * hp.head_dim
    assert Context(model, n_ctx=48, kv_type="f16").kv_bytes == 48 * per_pos * 2
    assert Context(model, n_ctx=48, kv_type="f32").kv_bytes == 48 * per_pos * 4
    assert model.kv_bytes(64, "q8_0") == 64 * per_pos // 32 * 34
    assert Model.load(tiny(LLAMA)).kv_bytes(64, "q8_0") == 0  # head_dim 16: refused


def test_avx2_and_scalar_attention_agree(tiny, tmp_path):
    """The same model run with LAMINA_SIMD=scalar (reference kernels everywhere)."""
    if not lib.lm_cpu_has_avx2():
        pytest.skip("no AVX2 on this CPU: only the scalar path exists")
    path = tiny(replace(GEMMA3, qtype="Q8_0"))
    toks = tokens_for(GEMMA3, 16)
    out = tmp_path / "scalar.npy"
    script = (
        "import sys, numpy as np; from lamina.engine.context import Model, Context;"
        "c = Context(Model.load(sys.argv[1], n_threads=2), n_ctx=32, kv_type=sys.argv[3]);"
        "np.save(sys.argv[2], c.eval(np.array(sys.argv[4].split(','), dtype=np.int32), all_logits=True))"
    )
    root = REPO
    env = dict(
        os.environ, LAMINA_SIMD="scalar", PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    )
    for kv_type in ("f16", "q8_0"):
        subprocess.run(
            [sys.executable, "-c", script, str(path), str(out), kv_type, ",".join(map(str, toks))],
            check=True,
            env=env,
            cwd=root,
        )
        fast = native_logits(path, toks, kv_type=kv_type)
        assert nmse(fast, np.load(out)) < 1e-8


# -- errors ------------------------------------------------------------------


def test_context_full_is_a_typed_value_error(tiny):
    ctx = Context(Model.load(tiny(LLAMA)), n_ctx=8)
    ctx.eval(tokens_for(LLAMA, 6))
    with pytest.raises(ContextFullError, match="context full"):
        ctx.eval(tokens_for(LLAMA, 3))
    assert ctx.n_past == 6  # nothing was appended
    ctx.eval(tokens_for(LLAMA, 2))
    with pytest.raises(ValueError):
        ctx.eval([1])


@pytest.mark.parametrize("bad", [[3, -1], [LLAMA.n_vocab], [1, 2, 10**6]])
def test_bad_tokens_are_rejected(tiny, bad):
    ctx = Context(Model.load(tiny(LLAMA)), n_ctx=8)
    with pytest.raises(InvalidTokenError, match="outside the vocabulary"):
        ctx.eval(bad)
    assert ctx.n_past == 0


@pytest.mark.parametrize("bad", [[], [[1, 2]], [1.5, 2.0]])
def test_malformed_token_lists(tiny, bad):
    with pytest.raises(ContextError):
        Context(Model.load(tiny(LLAMA)), n_ctx=8).eval(bad)


def test_bad_context_arguments(tiny):
    model = Model.load(tiny(LLAMA))
    for kw in ({"n_ctx": 0}, {"n_batch": -1}, {"kv_type": "q4_0"}, {"n_threads": 0}):
        with pytest.raises(ContextError):
            Context(model, **{"n_ctx": 8, **kw})
    ctx = Context(model, n_ctx=8)
    ctx.eval([1, 2])
    with pytest.raises(ContextError):
        ctx.truncate(3)


def test_native_side_refuses_bad_calls_without_python_checks(tiny):
    """The C entry points are a second fence: codes and messages, no crash."""
    model = Model.load(tiny(LLAMA))
    ctx = Context(model, n_ctx=4, n_batch=4)
    toks = ffi.new("int32_t[]", [1, 2, 3])
    logits = ffi.new("float[]", LLAMA.n_vocab)
    assert lib.lm_context_eval(ctx._ptr, toks, 3, logits, 0) == 0
    assert lib.lm_context_eval(ctx._ptr, toks, 2, logits, 0) == lib.LM_ERR_CONTEXT_FULL
    assert lib.lm_context_eval(ctx._ptr, ffi.new("int32_t[]", [LLAMA.n_vocab]), 1, logits, 0) == lib.LM_ERR_TOKEN
    assert lib.lm_context_eval(ctx._ptr, ffi.NULL, 1, logits, 0) == lib.LM_ERR_ARG
    assert lib.lm_context_eval(ffi.NULL, toks, 1, logits, 0) == lib.LM_ERR_ARG
    assert lib.lm_context_eval(ctx._ptr, toks, 0, logits, 0) == lib.LM_ERR_ARG
    assert lib.lm_context_eval(ctx._ptr, toks, 5, logits, 0) == lib.LM_ERR_ARG  # > n_batch
    assert lib.lm_context_n_past(ctx._ptr) == 3
    assert lib.lm_context_truncate(ctx._ptr, 4) == lib.LM_ERR_ARG
    assert lib.lm_model_create(ffi.NULL, ffi.NULL) == ffi.NULL
    assert lib.lm_context_create(ffi.NULL, 8, 8, 1, 1) == ffi.NULL
    assert lib.lm_context_create(model.native.ptr, 8, 8, 2, 1) == ffi.NULL  # Q4_0 is no cache type
    params = ffi.new("lm_model_params *")
    layers = ffi.new("lm_layer_weights[]", 1)
    assert lib.lm_model_create(params, layers) == ffi.NULL  # all sizes zero


# -- loader errors -----------------------------------------------------------


def test_unsupported_architecture(tmp_path):
    path = write_tiny_model(tmp_path / "gpt2.gguf", replace(LLAMA, arch="gpt2"))
    with pytest.raises(
        UnsupportedArchitectureError,
        match="gpt2.*supported: llama, granite, smollm3, qwen2, qwen3, qwen3moe, gpt-oss, phi3, gemma2, gemma3, olmo2",
    ):
        Model.load(path)


def test_missing_tensor_is_named(tmp_path):
    name = tensor_name(MODEL_TENSOR.FFN_UP, 1)
    path = write_tiny_model(tmp_path / "m.gguf", LLAMA, drop={name})
    with pytest.raises(GGUFMissingTensorError, match=name.replace(".", r"\.")):
        Model.load(path)


def test_missing_bias_of_qwen2_is_named(tmp_path):
    name = tensor_name(MODEL_TENSOR.ATTN_K, 0, "bias")
    path = write_tiny_model(tmp_path / "m.gguf", QWEN2, drop={name})
    with pytest.raises(GGUFMissingTensorError, match="attn_k.bias"):
        Model.load(path)


def test_wrong_shape_names_expected_and_found(tmp_path):
    name = tensor_name(MODEL_TENSOR.ATTN_K, 0)
    path = write_tiny_model(tmp_path / "m.gguf", LLAMA, override={name: np.zeros((48, 64), np.float32)})
    with pytest.raises(GGUFTensorError, match=r"attn_k.*\(64, 48\): expected \(64, 32\)"):
        Model.load(path)


def test_unsupported_tensor_type(tmp_path):
    name = tensor_name(MODEL_TENSOR.FFN_GATE, 0)
    path = write_tiny_model(tmp_path / "m.gguf", LLAMA, override={name: np.zeros((128, 64), np.int32)})
    with pytest.raises(GGUFTensorError, match="type I32 is not supported"):
        Model.load(path)


def test_missing_required_key(tmp_path):
    def broken(w) -> None:  # a llama file without its rms epsilon
        w.kv_data[0].pop("llama.attention.layer_norm_rms_epsilon")

    path = write_tiny_model(tmp_path / "noeps.gguf", LLAMA, extra=broken)
    with pytest.raises(GGUFMissingKeyError, match="layer_norm_rms_epsilon"):
        Model.load(path)


def test_unsupported_rope_scaling(tmp_path):
    from gguf import RopeScalingType

    longrope = lambda w: w.add_rope_scaling_type(RopeScalingType.LONGROPE)
    path = write_tiny_model(tmp_path / "m.gguf", LLAMA, extra=longrope)
    with pytest.raises(ModelConfigError, match="rope scaling 'longrope' is not supported for llama"):
        Model.load(path)
    path = write_tiny_model(tmp_path / "y.gguf", LLAMA, extra=lambda w: w.add_rope_scaling_type(RopeScalingType.YARN))
    with pytest.raises(GGUFMissingKeyError, match="llama.rope.scaling.factor"):  # YaRN without its factor
        Model.load(path)


def test_bad_head_counts(tmp_path):
    path = write_tiny_model(tmp_path / "m.gguf", replace(LLAMA, n_head=4, n_head_kv=3))
    with pytest.raises(ModelConfigError, match="not a multiple of head_count_kv 3"):
        Model.load(path)


def test_errors_share_a_base(tmp_path):
    assert issubclass(ContextFullError, LaminaError) and issubclass(InvalidTokenError, ValueError)
    assert issubclass(UnsupportedArchitectureError, ValueError) and issubclass(ModelConfigError, LaminaError)
