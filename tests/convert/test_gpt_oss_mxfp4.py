"""gpt-oss as OpenAI released it: experts MXFP4-packed in the checkpoint
(tests/support/tiny_mxfp4.py makes a tiny one). `lamina convert` keeps their
bits under the float outtypes, as llama.cpp's convert_hf_to_gguf.py does, and
requantizes them from their exact values under a quantized mix, as
llama-quantize --allow-requantize does; the file runs with the logits
transformers gives for the packed checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.encode import Encoder
from lamina.convert.errors import CheckpointError, TensorShapeError
from lamina.convert.hf.convert import plan_hf
from lamina.convert.recipes import get_mix
from lamina.engine.context import Context, Model
from lamina.gguf.reader import GGUFFile
from support.cli_roundtrip import convert_once
from support.llama_cpp_ref import have_llama_cpp, llama_quantize, reference_gguf
from support.tiny_hf import tiny_hf_checkpoint
from support.tiny_mxfp4 import check_mxfp4_logits, mxfp4_checkpoint


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hf_checkpoint("gpt_oss", tmp_path_factory.mktemp("hf") / "tiny-gpt_oss")


@pytest.fixture(scope="module")
def packed_dir(float_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mxfp4_checkpoint(float_dir, tmp_path_factory.mktemp("hf") / "tiny-gpt_oss-mxfp4")


@pytest.fixture(scope="module")
def converted(packed_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    enc = Encoder(2)
    cache: dict[str, Path] = {}
    yield lambda mix: cache.setdefault(mix, convert_once(packed_dir, mix, enc, tmp_path_factory, "gpt_oss-mxfp4"))
    enc.close()


def _fields(path: Path) -> tuple[dict, dict]:
    """(metadata, tensors by name: (type, ne, bytes)), order aside"""
    import gguf

    r = gguf.GGUFReader(path)
    meta = {k: (f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, tuple(int(d) for d in t.shape), t.data.tobytes()) for t in r.tensors}
    return meta, tensors


def test_f32_keeps_the_experts_as_llama_cpp_converter_does(packed_dir: Path, converted) -> None:
    """every key and tensor equal to convert_hf_to_gguf.py --outtype f32's
    (which writes the packed experts first; lamina keeps llama-quantize's order)"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python's vendored tree (tools/test.sh) is needed for llama.cpp's converter")
    ours = converted("f32")
    ref = reference_gguf("tiny-gpt_oss-mxfp4", packed_dir, "f32")
    with GGUFFile(ours) as g:
        assert g.tensor("blk.0.ffn_gate_exps.weight").ggml_type.name == "MXFP4"
        assert g.tensor("blk.0.attn_q.weight").ggml_type.name == "F32"
        assert g.get("general.file_type") == 38  # MOSTLY_MXFP4_MOE, as llama.cpp labels it
    assert _fields(ours) == _fields(ref)


@pytest.mark.parametrize("mix", ["mxfp4_moe", "q8_0", "q4_k_m"])
def test_quantized_mixes_equal_llama_quantize(mix: str, packed_dir: Path, converted, tmp_path: Path) -> None:
    """mxfp4_moe copies the packed experts; the others requantize them"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf("tiny-gpt_oss-mxfp4", packed_dir, "f32")
    theirs = tmp_path / "theirs.gguf"
    llama_quantize(ref, theirs, int(get_mix(mix).ftype), allow_requantize=mix != "mxfp4_moe")
    assert converted(mix).read_bytes() == theirs.read_bytes()


def test_logits_match_transformers_on_the_packed_checkpoint(packed_dir: Path, float_dir: Path, converted) -> None:
    """transformers unpacks the experts itself (Mxfp4Config(dequantize=True));
    lamina runs them as MXFP4 with Q8_0 activations"""
    import torch
    from transformers import AutoModelForCausalLM, Mxfp4Config

    ids = np.random.default_rng(7).integers(3, 1000, 40).tolist()

    def hf_logits(d: Path, **kw) -> np.ndarray:
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw).eval()
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()  # [T, V]

    want = hf_logits(packed_dir, quantization_config=Mxfp4Config(dequantize=True))
    unpacked = hf_logits(float_dir)
    got = Context(Model.load(converted("f32"), n_threads=2), n_ctx=64).eval(ids, all_logits=True)

    check_mxfp4_logits(got, want, unpacked, "gpt-oss MXFP4 checkpoint vs transformers")


def _edit(packed_dir: Path, tmp_path: Path, fn) -> Path:
    from safetensors.numpy import load_file, save_file

    hf = tmp_path / "hf"
    shutil.copytree(packed_dir, hf)
    tensors = load_file(str(hf / "model.safetensors"))
    fn(tensors)
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    return hf


SCALES = "model.layers.{}.mlp.experts.{}_scales"


def _cut_scales(t: dict) -> None:
    name = SCALES.format(1, "down_proj")
    t[name] = t[name][:, :32]  # half its rows


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_cut_scales, TensorShapeError, "down_proj_scales"),
        (lambda t: t.pop(SCALES.format(2, "gate_up_proj")), CheckpointError, "gate_up_proj_scales missing"),
    ],
    ids=["scales_shape", "scales_missing"],
)
def test_bad_packed_experts_are_refused_by_name(edit, error, message, packed_dir: Path, tmp_path: Path) -> None:
    hf = _edit(packed_dir, tmp_path, edit)
    enc = Encoder(1)
    try:
        with pytest.raises(error, match=message):
            plan_hf(hf, get_mix("f16"), enc, tmp_path / "out.gguf")
    finally:
        enc.close()


def test_packed_tensors_need_the_mxfp4_config(packed_dir: Path, tmp_path: Path) -> None:
    """blocks and scales in a checkpoint that does not say MXFP4 are not guessed at"""
    hf = tmp_path / "hf"
    shutil.copytree(packed_dir, hf)
    cfg = json.loads((hf / "config.json").read_text())
    del cfg["quantization_config"]
    (hf / "config.json").write_text(json.dumps(cfg))
    enc = Encoder(1)
    try:
        with pytest.raises(CheckpointError, match="U8"):
            plan_hf(hf, get_mix("f16"), enc, tmp_path / "out.gguf")
    finally:
        enc.close()
