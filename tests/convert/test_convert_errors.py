"""bin/convert and bin/quantize on small synthetic checkpoints: bad input ends
in one typed error and nothing under the output name; config and dtype
variants convert to the same values; quantize agrees with convert.

The checkpoints are tiny llama models (random weights, numpy + safetensors)
wearing SmolLM2's tokenizer, so no torch is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lamina.convert.encode import Encoder
from lamina.convert.errors import (
    CheckpointError,
    NonFiniteWeightError,
    OutputExistsError,
    QuantizeInputError,
    TensorShapeError,
)
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.convert.requantize import plan_gguf
from lamina.errors import UnsupportedArchitectureError
from lamina.gguf.reader import GGUFFile
from support.tiny_checkpoints import CONFIG, make_checkpoint, random_weights


@pytest.fixture
def ckpt(tmp_path: Path, tokenizer_source: Path) -> Path:
    return make_checkpoint(tmp_path / "tiny", tokenizer_source)


@pytest.fixture(scope="module")
def encoder():
    enc = Encoder(2)
    yield enc
    enc.close()


def convert(directory: Path, out: Path, encoder: Encoder, mix: str = "f16", force: bool = False) -> Path:
    run_job(plan_hf(directory, get_mix(mix), encoder, out, force=force))
    return out


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


# -- bad input ----------------------------------------------------------------


def test_missing_config(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        convert(ckpt, tmp_path / "out.gguf", encoder)
    assert_nothing_written(tmp_path / "out.gguf")


def test_unreadable_config(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    (ckpt / "config.json").write_text('{"architectures": [')
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        convert(ckpt, tmp_path / "out.gguf", encoder)


@pytest.mark.parametrize("change", [{"hidden_size": None}, {"num_hidden_layers": "two"}])
def test_config_lacks_a_hyperparameter(change: dict, ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    config = {k: v for k, v in (CONFIG | change).items() if v is not None}
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: .*(hidden_size|num_hidden_layers)"):
        convert(ckpt, tmp_path / "out.gguf", encoder)


def test_missing_weights(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        convert(ckpt, tmp_path / "out.gguf", encoder)


def test_truncated_weights(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    path = ckpt / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        convert(ckpt, tmp_path / "out.gguf", encoder)
    assert_nothing_written(tmp_path / "out.gguf")


def test_index_names_a_missing_shard(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        convert(ckpt, tmp_path / "out.gguf", encoder)


def test_unsupported_architecture(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    (ckpt / "config.json").write_text(json.dumps(CONFIG | {"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedArchitectureError, match="'GPT2LMHeadModel'.*LlamaForCausalLM.*Qwen2ForCausalLM"):
        convert(ckpt, tmp_path / "out.gguf", encoder)


def test_shape_disagrees_with_config(tmp_path: Path, tokenizer_source: Path, encoder: Encoder) -> None:
    w = random_weights()
    w["model.layers.1.self_attn.k_proj.weight"] = w["model.layers.1.self_attn.q_proj.weight"]
    ckpt = make_checkpoint(tmp_path / "tiny", tokenizer_source, weights=w)
    with pytest.raises(
        TensorShapeError, match=r"k_proj.weight' has shape \(256, 256\); config.json implies \(128, 256\)"
    ):
        convert(ckpt, tmp_path / "out.gguf", encoder)
    assert_nothing_written(tmp_path / "out.gguf")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weight(bad: float, tmp_path: Path, tokenizer_source: Path, encoder: Encoder) -> None:
    w = random_weights()
    w["model.layers.1.mlp.down_proj.weight"][3, 7] = bad
    ckpt = make_checkpoint(tmp_path / "tiny", tokenizer_source, weights=w)
    with pytest.raises(NonFiniteWeightError, match="blk.1.ffn_down.weight.*row 3, column 7"):
        convert(ckpt, tmp_path / "out.gguf", encoder, mix="q4_k_m")
    assert_nothing_written(tmp_path / "out.gguf")


def test_existing_output_needs_force(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        convert(ckpt, out, encoder)
    assert out.read_bytes() == b"keep me"
    convert(ckpt, out, encoder, force=True)
    assert GGUFFile(out).architecture == "llama"


def test_interrupted_run_leaves_nothing(
    ckpt: Path, tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = Encoder.encode

    def flaky(self: Encoder, name: str, x: np.ndarray, qtype, importance=None):
        calls.append(name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, name, x, qtype, importance)

    monkeypatch.setattr(Encoder, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        convert(ckpt, tmp_path / "out.gguf", encoder)
    assert_nothing_written(tmp_path / "out.gguf")


def test_cli_error_is_one_line(ckpt: Path, tmp_path: Path) -> None:
    (ckpt / "config.json").write_text(json.dumps(CONFIG | {"architectures": ["MambaForCausalLM"]}))
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "convert", str(ckpt), "-o", str(tmp_path / "o.gguf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and "MambaForCausalLM" in r.stderr
    assert_nothing_written(tmp_path / "o.gguf")


# -- variants -----------------------------------------------------------------


def _tensors(path: Path) -> dict[str, bytes]:
    g = GGUFFile(path)
    return {t.name: g.tensor_bytes(t.name).tobytes() for t in g.tensors}


def _hparams(path: Path) -> dict:
    g = GGUFFile(path)
    return {k: v for k, v in g.metadata.items() if k.startswith("llama.")}


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_half_precision_and_old_style_config(
    dtype: str, ckpt: Path, tmp_path: Path, tokenizer_source: Path, encoder: Encoder
) -> None:
    import torch
    from safetensors.torch import save_file as save_torch

    old = {k: v for k, v in CONFIG.items() if k not in ("rope_parameters", "dtype", "head_dim")}
    old |= {"rope_theta": 10000.0, "torch_dtype": {"BF16": "bfloat16", "F16": "float16"}[dtype]}
    half = make_checkpoint(tmp_path / "half", tokenizer_source, config=old, weights={})
    torch_dtype = torch.bfloat16 if dtype == "BF16" else torch.float16
    save_torch(
        {k: torch.from_numpy(v).to(torch_dtype) for k, v in random_weights().items()}, str(half / "model.safetensors")
    )

    ref = convert(ckpt, tmp_path / "ref.gguf", encoder, mix="f32")
    got = convert(half, tmp_path / "half.gguf", encoder, mix="f32")
    want = _tensors(ref)
    if dtype == "F16":  # f16 keeps 11 significant bits: compare to the f16-rounded values
        g = GGUFFile(ref)
        want = {n: g.tensor_bytes(n).view(np.float32).astype(np.float16).astype(np.float32).tobytes() for n in want}
    assert _tensors(got) == want
    assert _hparams(got) == _hparams(ref)


def test_quantize_f32_gguf_equals_convert(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    f32 = convert(ckpt, tmp_path / "f32.gguf", encoder, mix="f32")
    direct = convert(ckpt, tmp_path / "direct.gguf", encoder, mix="q4_k_m")
    run_job(plan_gguf(f32, tmp_path / "two-step.gguf", get_mix("q4_k_m"), encoder))
    assert (tmp_path / "two-step.gguf").read_bytes() == direct.read_bytes()


def test_quantize_refuses_to_requantize(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    q = convert(ckpt, tmp_path / "q4.gguf", encoder, mix="q4_k_m")
    with pytest.raises(QuantizeInputError, match="--allow-requantize"):
        plan_gguf(q, tmp_path / "q8.gguf", get_mix("q8_0"), encoder)
    assert_nothing_written(tmp_path / "q8.gguf")
    run_job(plan_gguf(q, tmp_path / "q8.gguf", get_mix("q8_0"), encoder, allow_requantize=True))
    assert {t.ggml_type.name for t in GGUFFile(tmp_path / "q8.gguf").tensors} == {"Q8_0", "F32"}


def test_quantize_cli(ckpt: Path, tmp_path: Path, encoder: Encoder) -> None:
    f16 = convert(ckpt, tmp_path / "f16.gguf", encoder, mix="f16")
    out = tmp_path / "q8.gguf"
    r = subprocess.run(
        [sys.executable, "-m", "lamina", "quantize", str(f16), str(out), "q8_0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "Q8_0" in r.stdout and GGUFFile(out).get("general.file_type") == 7


def test_output_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    from lamina.convert.writer import atomic_output

    out = tmp_path / "model.gguf"
    umask = os.umask(0o022)
    try:
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"GGUF")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644
