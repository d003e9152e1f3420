"""`lamina compress --heads-keep`: whole KV groups removed from a tiny random
GQA checkpoint (8 query heads sharing 4 kv heads). The cut model runs in
lamina, transformers and llama.cpp with the same logits, keeps exactly the
original's rows of the groups it chose, and the groups are the ones a numpy
computation of each group's output norm through o_proj ranks first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from lamina.cli.compress import main as compress_main
from lamina.convert.encode import Encoder
from lamina.convert.hf.checkpoint import HFCheckpoint
from lamina.convert.prune import heads
from lamina.convert.prune.importance import measure
from lamina.convert.prune.pipeline import _f32_gguf
from lamina.gguf.reader import GGUFFile
from support.compressed_logits import CALIB, compress, lamina_logits, nmse, random_ids, transformers_logits
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits

GQA = {"num_attention_heads": 8, "num_key_value_heads": 4}  # head_dim 8, groups of 2 query heads


def _tiny(root: Path, model_type: str, extra: dict | None = None) -> Path:
    from support.tiny_hf import tiny_hf_checkpoint

    return tiny_hf_checkpoint(model_type, root / model_type, extra=extra)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("heads"), "llama", GQA)


def _kept_groups(src: HFCheckpoint, cut: HFCheckpoint, il_old: int, il_new: int, D: int) -> list[int]:
    """Which original KV groups layer il_new of the cut holds, found by its k rows."""
    k_src = src.load_f32(f"model.layers.{il_old}.self_attn.k_proj.weight").reshape(-1, D, 64)  # [Hkv, D, E]
    k_cut = cut.load_f32(f"model.layers.{il_new}.self_attn.k_proj.weight").reshape(-1, D, 64)
    return [int(np.flatnonzero((k_src == g).all((1, 2)))[0]) for g in k_cut]


def test_heads_keep_cuts_whole_kv_groups(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cut"
    gguf = compress(tiny, out, "--heads-keep", "0.5", "--drop-layers", "2")
    printed = capsys.readouterr().out
    assert "keep 2 of 4 KV groups per layer (4 of 8 query heads, head_dim 8" in printed
    cfg = json.loads((out / "hf" / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 8)
    assert cfg["num_hidden_layers"] == 3
    g = GGUFFile(gguf)
    # n_embd / n_head = 16 now, so the head size must be written out
    assert (g.get("llama.attention.head_count"), g.get("llama.attention.head_count_kv")) == (4, 2)
    assert (g.get("llama.attention.key_length"), g.get("llama.attention.value_length")) == (8, 8)

    # the kept rows and columns are the original's, query heads with their own kv head
    src, cut = HFCheckpoint(tiny), HFCheckpoint(out / "hf")
    for new, old in ((0, 0), (1, 1), (2, 3)):
        groups = _kept_groups(src, cut, old, new, 8)
        assert groups == sorted(set(groups)) and len(groups) == 2
        q_rows = np.concatenate([np.arange(g * 16, g * 16 + 16) for g in groups])  # 2 heads x 8 per group
        kv_rows = np.concatenate([np.arange(g * 8, g * 8 + 8) for g in groups])
        pre_old, pre_new = f"model.layers.{old}.self_attn.", f"model.layers.{new}.self_attn."
        assert np.array_equal(cut.load_f32(pre_new + "q_proj.weight"), src.load_f32(pre_old + "q_proj.weight")[q_rows])
        assert np.array_equal(cut.load_f32(pre_new + "v_proj.weight"), src.load_f32(pre_old + "v_proj.weight")[kv_rows])
        o = src.load_f32(pre_old + "o_proj.weight")[:, q_rows]
        assert np.array_equal(cut.load_f32(pre_new + "o_proj.weight"), o)

    ids = random_ids(gguf)
    got = lamina_logits(gguf, ids)
    want = transformers_logits(out / "hf", ids)
    assert want.std() > 0.3
    assert nmse(got, want) < 1e-4
    if have_llama_cpp():  # explicit key_length, one head count for all layers: llama.cpp loads it
        _, ll = llama_cpp_logits(gguf, tokens=ids, n_ctx=64)
        assert nmse(ll, want) < 1e-3


def test_group_importance_equals_numpy_reference(tiny: Path, tmp_path: Path) -> None:
    """Each group's ||X_g W_g^T||_F, with X the o_proj input transformers computes
    (a forward hook) and the product done token by token in numpy, against the
    score lamina's calibration pass and group_scores give."""
    import torch
    from transformers import AutoModelForCausalLM

    il = 1
    windows = np.random.default_rng(5).integers(3, 1000, (2, 32)).astype(np.int32)
    encoder = Encoder(2)
    try:
        f32 = _f32_gguf(tiny, encoder, tmp_path / "f32.gguf")
    finally:
        encoder.close()
    imp = measure(f32, windows, 2, heads=True)
    assert imp.head_gram is not None
    w_o = HFCheckpoint(tiny).load_f32(f"model.layers.{il}.self_attn.o_proj.weight")  # [64, 64]
    got = heads.group_scores(imp.head_gram[il], w_o, 8, 4, 8)

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    seen: list[np.ndarray] = []
    hook = model.model.layers[il].self_attn.o_proj.register_forward_hook(lambda m, i, o: seen.append(i[0][0].numpy()))
    with torch.no_grad():
        for w in windows:
            model(torch.tensor([w.tolist()]))
    hook.remove()
    X = np.concatenate(seen).astype(np.float64)  # [tokens, 64]: 8 heads x 8
    want = np.empty(4)
    for g in range(4):
        cols = slice(g * 16, g * 16 + 16)
        contrib = X[:, cols] @ w_o[:, cols].astype(np.float64).T  # [tokens, n_embd]
        want[g] = np.sqrt((contrib**2).sum())
    assert np.allclose(got, want, rtol=1e-3), (got, want)
    assert list(np.argsort(-got)) == list(np.argsort(-want))
    assert len(set(np.round(want, 3))) == 4  # a ranking with no ties to hide behind
    assert heads.choose_groups(got, 2).tolist() == sorted(np.argsort(-want)[:2].tolist())


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [
        ("qwen2", GQA),  # q/k/v biases
        ("olmo2", GQA),  # q/k norms over the whole projection
    ],
)
def test_heads_keep_other_architectures(model_type: str, extra: dict | None, tmp_path: Path, capsys) -> None:
    src = _tiny(tmp_path, model_type, extra)
    out = tmp_path / "cut"
    gguf = compress(src, out, "--heads-keep", "0.5")
    H, Hkv, _ = heads.head_geometry(json.loads((src / "config.json").read_text()))
    cfg = json.loads((out / "hf" / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (H // 2, Hkv // 2)
    ids = random_ids(gguf)
    assert nmse(lamina_logits(gguf, ids), transformers_logits(out / "hf", ids)) < 1e-4
    # llama.cpp's qwen2 and olmo2 graphs size attn_q as n_embd x n_embd: the plan says the file will not load there
    assert "llama.cpp will not load the result" in capsys.readouterr().out
    if have_llama_cpp():
        with pytest.raises(RuntimeError, match="llama.cpp on .* failed"):
            llama_cpp_logits(gguf, tokens=ids, n_ctx=64)


def test_heads_keep_refusals(tiny: Path, tmp_path: Path, capsys) -> None:
    assert compress_main([str(tiny), "-o", str(tmp_path / "x"), *CALIB, "--heads-keep", "0"]) == 1
    assert "--heads-keep must be a fraction in (0, 1]" in capsys.readouterr().err
    assert compress_main([str(tiny), "-o", str(tmp_path / "x"), *CALIB, "--heads-keep", "0.9"]) == 1
    assert "--heads-keep 0.9 keeps all 4 KV groups" in capsys.readouterr().err
    granite = _tiny(tmp_path, "granite")
    assert compress_main([str(granite), "-o", str(tmp_path / "g"), *CALIB, "--heads-keep", "0.5"]) == 1
    assert "cannot prune heads of a granite model" in capsys.readouterr().err
    assert not (tmp_path / "g" / "hf").exists()
