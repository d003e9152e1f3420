"""Layer-by-layer evaluation, matmul-input capture and weight overrides: the
engine hooks GPTQ calibration runs on. Checked on the tiny f32 models against
numpy on the same weights, and against the full eval."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lamina.engine.context import Context, ContextError, Model
from lamina.engine.loader import ModelConfigError, read_hparams
from lamina.engine.reference import forward, gelu_tanh, load_reference_weights, rms_norm, silu
from lamina.gguf.reader import GGUFFile
from support.tiny_models import CONFIGS, LLAMA, for_block


def toks(cfg, n=12, seed=3):
    return np.random.default_rng(seed).integers(0, cfg.n_vocab, n)


def ctx_for(path, **kw):
    return Context(Model.load(path, n_threads=2, **kw), n_ctx=64, n_batch=32, kv_type="f32")


def weights_and_hparams(path):
    with GGUFFile(path) as g:
        return load_reference_weights(g), read_hparams(g)


def rel_err(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3"])
def test_layer_ranges_compose_and_end_in_the_logits(tiny, name):
    cfg = CONFIGS[name]
    path, t = tiny(cfg), toks(cfg)
    L = cfg.n_layer
    whole = ctx_for(path).eval_layers(t, 0, L)
    first = ctx_for(path).eval_layers(t, 0, 1)
    rest = ctx_for(path).eval_layers(t, 1, L, first)
    assert np.array_equal(rest, whole)  # the same arithmetic, only cut in two

    # the stream leaving the last layer, through the output norm and head, is the model's logits
    w, hp = weights_and_hparams(path)
    head = w["output.weight"] if "output.weight" in w else w["token_embd.weight"]
    logits = rms_norm(whole.astype(np.float64), w["output_norm.weight"], hp.norm_eps, hp.norm_plus_one) @ head.T
    assert rel_err(ctx_for(path).eval(t, all_logits=True), logits) < 1e-5


def test_layer_by_layer_over_several_positions_equals_one_pass(tiny):
    """A second batch at later positions reads the first batch's keys in each
    layer's cache, as eval does."""
    path, t = tiny(LLAMA), toks(LLAMA, 20)
    ctx = ctx_for(path)
    a = ctx.eval_layers(t[:8], 0, LLAMA.n_layer)
    b = ctx.eval_layers(t[8:], 0, LLAMA.n_layer)
    assert ctx.n_past == 20
    assert np.allclose(np.concatenate([a, b]), ctx_for(path).eval_layers(t, 0, LLAMA.n_layer), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_capture_holds_the_matmul_inputs(tiny, name):
    cfg = CONFIGS[name]
    path, t = tiny(cfg), toks(cfg)
    w, hp = weights_and_hparams(path)
    ctx = ctx_for(path)
    il = 1
    ctx.capture(il, attn_in=True, wo_in=True, ffn_in=True, down_in=True)
    x_in = ctx_for(path).eval_layers(t, 0, il)
    ctx.eval_layers(t, 0, il + 1)
    cap = ctx.captured
    assert {k: v.shape for k, v in cap.items()} == {
        "attn_in": (len(t), hp.n_embd),
        "wo_in": (len(t), hp.q_dim),
        "ffn_in": (len(t), hp.n_embd),
        "down_in": (len(t), hp.n_ff),
    }
    p = f"blk.{il}."
    attn_in = rms_norm(x_in.astype(np.float64), w[p + "attn_norm.weight"], hp.norm_eps, hp.norm_plus_one)
    assert rel_err(cap["attn_in"], attn_in) < 1e-5
    act = gelu_tanh if hp.activation == "gelu_tanh" else silu
    f = cap["ffn_in"].astype(np.float64)
    down_in = act(f @ w[p + "ffn_gate.weight"].T) * (f @ w[p + "ffn_up.weight"].T)
    assert rel_err(cap["down_in"], down_in) < 1e-5
    assert np.abs(cap["wo_in"]).max() > 0

    # turning capture off empties it
    ctx.capture(None)
    ctx.truncate(0)
    ctx.eval(t)
    assert ctx.captured == {}


def test_capture_during_eval_does_not_change_logits(tiny):
    path, t = tiny(LLAMA), toks(LLAMA)
    plain = ctx_for(path).eval(t, all_logits=True)
    ctx = ctx_for(path)
    ctx.capture(0, down_in=True)
    assert np.array_equal(ctx.eval(t, all_logits=True), plain)
    assert set(ctx.captured) == {"down_in"}


def test_overrides_replace_weights(tiny):
    path, t = tiny(LLAMA), toks(LLAMA)
    w, hp = weights_and_hparams(path)
    name = "blk.0.ffn_down.weight"
    same = ctx_for(path, overrides={name: w[name].astype(np.float32)}).eval(t, all_logits=True)
    assert np.array_equal(same, ctx_for(path).eval(t, all_logits=True))

    changed = dict(w)
    changed[name] = w[name] * 0.5
    got = ctx_for(path, overrides={name: changed[name]}).eval(t, all_logits=True)
    ref = forward(hp, changed, t)
    assert rel_err(got, ref) < 1e-4
    assert rel_err(got, forward(hp, w, t)) > 1e-3


def test_bad_overrides_name_the_tensor(tiny):
    path = tiny(LLAMA)
    with pytest.raises(ModelConfigError, match="blk.0.attn_q.weight.*shape"):
        Model.load(path, overrides={"blk.0.attn_q.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ModelConfigError, match="blk.99.attn_q.weight"):
        Model.load(path, overrides={"blk.99.attn_q.weight": np.zeros((3, 3), np.float32)})
    w, _ = weights_and_hparams(path)
    bad = w["blk.0.attn_q.weight"].astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ModelConfigError, match="non-finite"):
        Model.load(path, overrides={"blk.0.attn_q.weight": bad})


def test_eval_layers_bad_calls(tiny):
    path, t = tiny(LLAMA), toks(LLAMA)
    ctx = ctx_for(path)
    with pytest.raises(ContextError, match="il0 < il1"):
        ctx.eval_layers(t, 1, 1, np.zeros((len(t), LLAMA.n_embd), np.float32))
    with pytest.raises(ContextError, match="residual stream"):
        ctx.eval_layers(t, 1, 2)
    with pytest.raises(ContextError, match="shape"):
        ctx.eval_layers(t, 1, 2, np.zeros((len(t), 3), np.float32))
    with pytest.raises(ContextError, match="n_batch"):
        ctx.eval_layers(np.zeros(40, np.int64), 0, 1)
    with pytest.raises(ContextError, match="capture layer"):
        ctx.capture(LLAMA.n_layer, attn_in=True)
    assert ctx.n_past == 0  # nothing was appended by the refused calls


def test_two_pass_down_brings_quantized_activations_closer(tiny):
    """On K-quant weights, quantizing the ffn_down input twice (gemma3's
    default) lands nearer the float64 reference on the same weights."""
    cfg = replace(for_block(LLAMA, 256), qtype="Q4_K")
    path, t = tiny(cfg), toks(cfg, 24)
    w, hp = weights_and_hparams(path)
    ref = forward(hp, w, t, kv_type="f16")

    def err(two_pass):
        ctx = Context(Model.load(path, n_threads=2, hparams=replace(hp, two_pass_down=two_pass)), n_ctx=64)
        got = ctx.eval(t, all_logits=True)
        return float(((got - ref) ** 2).mean() / (ref**2).mean())

    once, twice = err(False), err(True)
    assert twice < 0.8 * once, (once, twice)


def test_two_pass_down_switch_on_load(tiny):
    """Model.load(two_pass_down=) overrides the architecture's default both ways"""
    cfg = replace(for_block(CONFIGS["gemma3"], 256), qtype="Q4_K")
    path = tiny(cfg)
    assert Model.load(path).hparams.two_pass_down  # gemma3's default
    assert not Model.load(path, two_pass_down=False).hparams.two_pass_down
    assert Model.load(tiny(LLAMA), two_pass_down=True).hparams.two_pass_down
    t = toks(cfg, 16)
    on = Context(Model.load(path, n_threads=2), n_ctx=32).eval(t, all_logits=True)
    off = Context(Model.load(path, n_threads=2, two_pass_down=False), n_ctx=32).eval(t, all_logits=True)
    assert not np.array_equal(on, off)
