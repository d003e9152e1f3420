"""`lamina compress` on a tiny random llama checkpoint: the cut model, as HF
safetensors and as GGUF, runs in lamina, transformers, the numpy reference
and llama.cpp with the same logits, and holds exactly the original's weights
that the plan kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from lamina.cli.compress import main as compress_main
from lamina.convert.hf.checkpoint import HFCheckpoint
from lamina.engine.loader import read_hparams
from lamina.engine.reference import forward, load_reference_weights
from lamina.gguf.reader import GGUFFile
from support.compressed_logits import CALIB, compress, lamina_logits, nmse, random_ids, transformers_logits
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.tiny_hf import tiny_hf_checkpoint

    return tiny_hf_checkpoint("llama", tmp_path_factory.mktemp("tiny") / "llama")


def test_drop_layers_and_ffn_neurons(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    gguf = compress(tiny, out, "--drop-layers", "1", "--ffn-keep", "0.5")
    cfg = json.loads((out / "hf" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["intermediate_size"] == 64
    g = GGUFFile(gguf)
    assert g.get("llama.block_count") == 3 and g.get("llama.feed_forward_length") == 64

    # the kept weights are the original's: layers 0, 2, 3 renumbered, 64 of the 128 neurons
    src, cut = HFCheckpoint(tiny), HFCheckpoint(out / "hf")
    for new, old in ((0, 0), (1, 2), (2, 3)):
        q = "model.layers.{}.self_attn.q_proj.weight"
        assert np.array_equal(cut.load_f32(q.format(new)), src.load_f32(q.format(old)))
        gate = src.load_f32(f"model.layers.{old}.mlp.gate_proj.weight")  # [128, 64]
        gate_cut = cut.load_f32(f"model.layers.{new}.mlp.gate_proj.weight")  # [64, 64]
        rows = [int(np.flatnonzero((gate == r).all(1))[0]) for r in gate_cut]
        assert rows == sorted(set(rows))  # distinct original neurons, in order
        down = src.load_f32(f"model.layers.{old}.mlp.down_proj.weight")[:, rows]
        assert np.array_equal(cut.load_f32(f"model.layers.{new}.mlp.down_proj.weight"), down)

    ids = random_ids(gguf)
    got = lamina_logits(gguf, ids)
    want = transformers_logits(out / "hf", ids)
    assert want.std() > 0.3
    assert nmse(got, want) < 1e-4
    ref = forward(read_hparams(g), load_reference_weights(g), ids)
    assert nmse(got, ref) < 1e-4
    if have_llama_cpp():  # a cut with one FFN size for all layers loads in llama.cpp
        _, ll = llama_cpp_logits(gguf, tokens=ids, n_ctx=64)
        assert nmse(ll, want) < 1e-3


def test_layers_by_importance_and_wanda(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sparse"
    gguf = compress(tiny, out, "--prune-layers", "1", "--sparsity", "0.5", "--method", "wanda")
    cut = HFCheckpoint(out / "hf")
    assert cut.config["num_hidden_layers"] == 3
    for name in cut.tensors:
        if name.endswith("_proj.weight"):
            w = cut.load_f32(name)
            assert np.all((w == 0).sum(1) == w.shape[1] // 2), name  # 50% of every row
    ids = random_ids(gguf)
    assert nmse(lamina_logits(gguf, ids), transformers_logits(out / "hf", ids)) < 1e-4


def test_refusals(tiny: Path, tmp_path: Path, capsys) -> None:
    cases = [
        (["--sparsity", "0.5", "--nm", "2:4"], "exclusive"),
        (["--nm", "3:2"], "N:M"),
        (["--drop-layers", "7"], "layer 7 does not exist"),
        (["--ffn-keep", "1.5"], "ffn-keep"),
        ([], "nothing to do"),
    ]
    for flags, message in cases:
        assert compress_main([str(tiny), "-o", str(tmp_path / "x"), *CALIB, *flags]) == 1
        assert message in capsys.readouterr().err
    (tmp_path / "done" / "hf").mkdir(parents=True)
    assert compress_main([str(tiny), "-o", str(tmp_path / "done"), "--drop-layers", "1"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert compress_main([str(gguf), "-o", str(tmp_path / "x"), "--prune-layers", "1"]) == 1
    assert "GGUF input is not supported" in capsys.readouterr().err


def test_magnitude_prunes_each_linear_as_the_mask_says(tiny: Path, tmp_path: Path) -> None:
    from lamina.convert.prune.masks import magnitude_mask

    out = tmp_path / "mag"
    compress(tiny, out, "--sparsity", "0.25", "--method", "magnitude")
    src, cut = HFCheckpoint(tiny), HFCheckpoint(out / "hf")
    n_linear = 0
    for name in src.tensors:
        w = src.load_f32(name)
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            w = np.where(magnitude_mask(w, 0.25), w, np.float32(0))
            n_linear += 1
        assert np.array_equal(cut.load_f32(name), w), name
    assert n_linear == 4 * 7
