"""A whole model whose linears are GPTQ INT4 tensors (runtime/gptq/format.py),
run by the native forward pass straight from the packed form, against the
float64 numpy reference on the dequantized weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lamina.convert.gptq.algorithm import GPTQConfig, quantize_rtn
from lamina.convert.gptq.tensors import gptq_metadata
from lamina.engine.context import Context, Model
from lamina.engine.loader import read_hparams
from lamina.engine.reference import forward, load_reference_weights
from lamina.errors import GGUFError
from lamina.gguf.reader import GGUFFile
from lamina.gptq.format import GPTQ_LINEARS, gptq_tensor_names
from lamina.gptq.pack import pack_result
from support.tiny_models import CONFIGS, write_tiny_model

# n_embd / n_ff multiples of 32 so group sizes 32 divide every input width
SHAPE = dict(n_embd=64, n_ff=96)


def linear_names(cfg) -> list[str]:
    return [f"blk.{il}.{base}.weight" for il in range(cfg.n_layer) for base in GPTQ_LINEARS]


def gptq_model(tmp_path, cfg, gcfg: GPTQConfig, fmt="v2", tag="m"):
    """(path of the GPTQ model, float64 weights it stands for)"""
    dense = write_tiny_model(tmp_path / f"{tag}-dense.gguf", cfg)
    with GGUFFile(dense) as g:
        weights = load_reference_weights(g)
    packed = {}
    rng = np.random.default_rng(7)
    for name in linear_names(cfg):
        W = weights[name]
        res = quantize_rtn(W, gcfg)
        p = pack_result(res, fmt="v2")
        if gcfg.act_order:  # a permuted g_idx, as act-order files have
            perm = rng.permutation(W.shape[1])
            p = replace(p, g_idx=np.ascontiguousarray(p.g_idx[perm]))
        packed[name] = p
        weights[name] = p.dequantize().astype(np.float64)

    def extra(w):
        gptq_metadata(w, group_size=gcfg.group_size, sym=gcfg.sym, desc_act=gcfg.act_order, source="lamina")
        for name, p in packed.items():
            parts = gptq_tensor_names(name)
            w.add_tensor(parts["qweight"], p.qweight)
            w.add_tensor(parts["scales"], p.scales.astype(np.float16))
            w.add_tensor(parts["qzeros"], p.qzeros)
            if gcfg.act_order:
                w.add_tensor(parts["g_idx"], p.g_idx.astype(np.int32))

    path = write_tiny_model(tmp_path / f"{tag}-gptq.gguf", cfg, drop=set(packed), extra=extra)
    return path, weights


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize(
    "gcfg",
    [GPTQConfig(group_size=32), GPTQConfig(group_size=-1, sym=False), GPTQConfig(group_size=32, act_order=True)],
    ids=["g32-sym", "row-asym", "g32-act-order"],
)
def test_gptq_model_matches_reference(tmp_path, name, gcfg):
    cfg = replace(CONFIGS[name], **SHAPE)
    path, weights = gptq_model(tmp_path, cfg, gcfg)
    toks = np.random.default_rng(1).integers(0, cfg.n_vocab, 20)
    with GGUFFile(path) as g:
        hp = read_hparams(g)
    ref = forward(hp, weights, toks)
    for n_batch in (20, 3):  # prefill tiles, and the few-column (decode) path
        ctx = Context(Model.load(path, n_threads=2), n_ctx=32, n_batch=n_batch, kv_type="f32")
        got = ctx.eval(toks, all_logits=True)
        assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-4, n_batch


def test_gptq_linear_with_wrong_shape_is_named(tmp_path):
    cfg = replace(CONFIGS["llama"], **SHAPE)
    path, _ = gptq_model(tmp_path, cfg, GPTQConfig(group_size=32))
    # swap in a model whose q projection is declared one head wider than the tensors are
    bad_cfg = replace(cfg, n_head=cfg.n_head + 1, n_head_kv=cfg.n_head + 1)
    with GGUFFile(path) as g:
        hp = read_hparams(g)
    wide = replace(hp, n_head=bad_cfg.n_head, n_head_kv=bad_cfg.n_head_kv)
    with pytest.raises(GGUFError, match=r"blk\.0\.attn_q\.weight.*GPTQ linear is"):
        Model.load(path, hparams=wide)


def test_gptq_model_offloaded_to_the_stand_in_equals_the_cpu(tmp_path):
    """the device copies GPTQ linears (qweight, scales, qzeros, g_idx) too"""
    cfg = replace(CONFIGS["llama"], **SHAPE)
    path, _ = gptq_model(tmp_path, cfg, GPTQConfig(group_size=32, act_order=True))
    model = Model.load(path, n_threads=2)
    toks = np.random.default_rng(4).integers(0, cfg.n_vocab, 12)
    alone = Context(model, n_ctx=32, n_batch=5).eval(toks, all_logits=True)
    for n in range(1, cfg.n_layer + 2):
        ctx = Context(model, n_ctx=32, n_batch=5, gpu_layers=n, device="cpu-standin")
        assert np.array_equal(ctx.eval(toks, all_logits=True), alone), n
