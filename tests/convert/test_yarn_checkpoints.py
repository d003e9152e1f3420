"""YaRN rope scaling on random tiny Hugging Face checkpoints of every
architecture where llama.cpp and transformers both apply it (the config
change Qwen2.5's and Qwen3's model cards tell users to make), end to end:

- `lamina convert` writes the rope.scaling keys byte for byte as llama.cpp's
  convert_hf_to_gguf.py (+ llama-quantize) does, from the model cards'
  `rope_scaling: {type: yarn, ...}` and from transformers 5's `rope_parameters`;
- lamina's logits on the f32 file equal transformers' on the checkpoint, and
  llama.cpp's on the same file, over a prompt longer than the original
  context (4x YaRN of a 32-position original context, rope base 100: the
  ramp between extrapolated and interpolated frequencies spans several pairs);
- what llama.cpp does not do is refused by name (keys it ignores,
  conversions its converter would drop: gemma2's and phi3's).

The gemma architectures, whose sliding layers make it per layer, are in
test_gemma_rope_scaling.py.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.encode import Encoder
from lamina.convert.errors import CheckpointError
from lamina.convert.hf.convert import plan_hf
from lamina.convert.recipes import get_mix
from lamina.engine.context import Model
from lamina.engine.loader import ModelConfigError, read_hparams
from lamina.gguf.reader import GGUFFile
from support.cli_roundtrip import convert_once
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_quantize, reference_gguf
from support.rope_logits import lamina_logits, nmse, random_ids, transformers_logits
from support.tiny_hf import tiny_hf_checkpoint
from support.tiny_models import PHI3

YARN = {"factor": 4.0, "original_max_position_embeddings": 32}
ROPE_BASE = 100.0
# qwen2 as its model card says (config.json's rope_scaling, `type`); the rest as transformers 5 saves them
LEGACY_FORM = {"qwen2"}
ARCHS = ["llama", "qwen2", "qwen3", "qwen3_moe", "granite", "smollm3", "olmo2"]
GGUF_ARCH = {"qwen3_moe": "qwen3moe"}


def yarn_checkpoint(arch: str, directory: Path) -> Path:
    if arch in LEGACY_FORM:
        tiny_hf_checkpoint(arch, directory, extra={"max_position_embeddings": 128})
        cfg = json.loads((directory / "config.json").read_text())
        cfg.pop("rope_parameters", None)
        cfg |= {"rope_theta": ROPE_BASE, "rope_scaling": {"type": "yarn", **YARN}}
        (directory / "config.json").write_text(json.dumps(cfg))
        return directory
    rope = {"rope_type": "yarn", "rope_theta": ROPE_BASE, **YARN}
    return tiny_hf_checkpoint(arch, directory, extra={"max_position_embeddings": 128, "rope_parameters": rope})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """arch -> its tiny YaRN checkpoint, built once per module"""
    return functools.cache(lambda arch: yarn_checkpoint(arch, tmp_path_factory.mktemp("hf") / f"tiny-{arch}-yarn"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, checkpoint):
    """arch -> lamina's f32 GGUF of the checkpoint, converted once per module"""
    enc = Encoder(2)
    yield functools.cache(lambda arch: convert_once(checkpoint(arch), "f32", enc, tmp_path_factory, f"{arch}-yarn"))
    enc.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_convert_matches_llama_cpp(arch: str, checkpoint, converted, tmp_path: Path) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf(f"tiny-{arch}-yarn", checkpoint(arch), "f32")
    theirs = tmp_path / "llama-quantize.gguf"
    llama_quantize(ref, theirs, int(get_mix("f32").ftype))
    ours = converted(arch)
    with GGUFFile(ours) as g:
        key = f"{GGUF_ARCH.get(arch, arch)}.rope.scaling"
        assert (g.metadata[f"{key}.type"], g.metadata[f"{key}.factor"]) == ("yarn", 4.0)
        assert g.metadata[f"{key}.original_context_length"] == 32
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch: str, checkpoint, converted) -> None:
    path = converted(arch)
    ids = random_ids(path)
    want = transformers_logits(checkpoint(arch), ids)
    got = lamina_logits(path, ids)
    assert want.std() > 0.3, "logits too flat to tell a wrong forward pass from a right one"
    err = nmse(got, want)
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"\n{arch} YaRN: nmse {err:.2e}, top-1 {top1:.3f} over {len(ids)} positions")
    assert err < 1e-4, err
    assert top1 >= 0.95


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logits_match_llama_cpp(arch: str, checkpoint, converted) -> None:
    """the same bytes in llama.cpp; and without YaRN transformers' logits are
    far from both, so the bound tells YaRN from plain rope"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    path = converted(arch)
    ids = random_ids(path)
    _, theirs = llama_cpp_logits(path, tokens=ids, n_ctx=64)
    err = nmse(lamina_logits(path, ids), theirs)
    print(f"\n{arch} YaRN vs llama.cpp: nmse {err:.2e}")
    assert err < 1e-4, err
    plain = {"rope_type": "default", "rope_theta": ROPE_BASE}  # the same weights with plain rope
    assert nmse(transformers_logits(checkpoint(arch), ids, plain), theirs) > 100 * 1e-4


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rope.scaling.yarn_attn_factor", 1.0, "attention factor 1.0 is not supported"),
        ("rope.scaling.yarn_log_multiplier", 0.1, "llama.cpp uses 0.0"),
        ("rope.scaling.yarn_ext_factor", 0.5, "llama.cpp uses 1.0"),
        ("rope.scaling.yarn_beta_slow", 2.0, "llama.cpp uses 1.0"),
    ],
)
def test_keys_llama_cpp_ignores_are_refused(key: str, value: float, message: str, converted) -> None:
    """llama.cpp reads none of these for these architectures: a file that sets
    them otherwise is refused, naming the key, rather than run with either value"""
    with GGUFFile(converted("qwen2")) as g:
        read_hparams(g)
        g.metadata[f"qwen2.{key}"] = value  # as a file that says so would read
        with pytest.raises(ModelConfigError, match=message) as e:
            read_hparams(g)
        assert f"qwen2.{key}" in str(e.value)


def test_attn_factor_llama_cpp_applies_anyway_is_accepted(converted) -> None:
    """HF's attention_factor at YaRN's own value (1 + 0.1 ln factor), as f32 in the file"""
    with GGUFFile(converted("qwen2")) as g:
        mscale = 1 + 0.1 * math.log(YARN["factor"])
        g.metadata["qwen2.rope.scaling.yarn_attn_factor"] = float(np.float32(mscale))
        assert read_hparams(g).rope_attn_factor == pytest.approx(mscale)


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """arch -> its tiny checkpoint as the per-architecture tests build it, once per module"""
    return functools.cache(lambda arch: tiny_hf_checkpoint(arch, tmp_path_factory.mktemp("hf") / f"tiny-{arch}"))


def test_phi3_yarn_is_refused(tiny) -> None:
    """no phi3 model has YaRN: llama.cpp's converter never writes it, transformers reads it as LongRoPE"""
    with pytest.raises(ModelConfigError, match="'yarn' is not supported for phi3.*reads 'yarn' as LongRoPE") as e:
        Model.load(tiny(replace(PHI3, long_rope=None, yarn=(4.0, 16))), n_threads=1)
    assert "phi3.rope.scaling.type" in str(e.value)


@pytest.mark.parametrize(
    ("arch", "rope", "message"),
    [
        ("gemma2", {"rope_type": "yarn", "rope_theta": 10000.0, **YARN}, "'yarn' is not supported for gemma2"),
        ("gemma2", {"rope_type": "default", "rope_theta": 100.0}, "rope_theta 100.0 is not supported for gemma2"),
        ("phi3", {"rope_type": "yarn", **YARN}, "Phi3 reads 'yarn' as LongRoPE"),
        ("llama", {"rope_type": "dynamic", "factor": 2.0}, "'dynamic' is not supported for llama"),
        ("qwen2", {"rope_type": "yarn", "factor": 4.0}, "needs original_max_position_embeddings"),
        ("qwen2", {"rope_type": "yarn", "original_max_position_embeddings": 32}, "needs a factor"),
        (
            "llama",
            {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "linear", "factor": 2.0}},
            "'linear' of the sliding layers is not supported",
        ),
    ],
    ids=["gemma2", "gemma2-base", "phi3", "dynamic", "no-original-context", "no-factor", "sliding-layers"],
)
def test_converter_refuses_scaling_llama_cpp_drops(
    arch: str, rope: dict, message: str, plain_checkpoint, tmp_path: Path
) -> None:
    """refused from the config alone: the checkpoint's other files are links to one built once"""
    hf = tmp_path / "hf"
    hf.mkdir()
    source = plain_checkpoint(arch)
    for f in source.iterdir():
        if f.name != "config.json":
            (hf / f.name).symlink_to(f)
    cfg = json.loads((source / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_theta": ROPE_BASE} | rope
    (hf / "config.json").write_text(json.dumps(cfg))
    enc = Encoder(1)
    try:
        with pytest.raises(CheckpointError, match=message):
            plan_hf(hf, get_mix("f16"), enc, tmp_path / "out.gguf")
    finally:
        enc.close()
