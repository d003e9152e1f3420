"""Every architecture on a random tiny Hugging Face checkpoint
(tests/support/tiny_hf.py), end to end:

- `lamina convert` writes byte for byte the file of llama.cpp's
  convert_hf_to_gguf.py (f32) followed by llama-quantize (f32, f16, q8_0);
- lamina's logits on the f32 file equal transformers' on the checkpoint
  (nmse < 1e-4) over a prefill and 16 one-token decode steps;
- the converted file works from the command line (`lamina inspect`, `lamina run`).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.encode import Encoder
from lamina.convert.hf.convert import plan_hf
from lamina.convert.recipes import get_mix
from lamina.engine.context import Context, Model
from lamina.gguf.reader import GGUFFile
from support.cli_roundtrip import convert_inspect_run, convert_once
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_cpp_tool, llama_quantize, reference_gguf
from support.tiny_hf import CASES, tiny_hf_checkpoint
from support.tiny_mxfp4 import check_mxfp4_logits

ARCHS = list(CASES)
# GGUF's name of each HF model_type
GGUF_ARCH = {"qwen3_moe": "qwen3moe", "gpt_oss": "gpt-oss"}
N_PREFILL, N_DECODE = 24, 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """arch -> its tiny checkpoint, built once per module"""
    return functools.cache(lambda arch: tiny_hf_checkpoint(arch, tmp_path_factory.mktemp("hf") / f"tiny-{arch}"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, checkpoint):
    """(arch, mix) -> lamina's GGUF of the checkpoint, converted once per module"""
    enc = Encoder(2)
    yield functools.cache(lambda arch, mix: convert_once(checkpoint(arch), mix, enc, tmp_path_factory, arch))
    enc.close()


@pytest.mark.parametrize("mix", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("arch", ARCHS)
def test_convert_matches_llama_cpp(arch: str, mix: str, checkpoint, converted, tmp_path: Path) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf(f"tiny-{arch}", checkpoint(arch), "f32")
    assert GGUFFile(ref).architecture == GGUF_ARCH.get(arch, arch)
    theirs = tmp_path / "llama-quantize.gguf"
    llama_quantize(ref, theirs, int(get_mix(mix).ftype))
    ours = converted(arch, mix)
    assert ours.read_bytes() == theirs.read_bytes()


def transformers_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()  # [T, V]


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch: str, checkpoint, converted) -> None:
    n_vocab = GGUFFile(converted(arch, "f32")).tensor("token_embd.weight").ne[1]
    ids = np.random.default_rng(7).integers(3, n_vocab, N_PREFILL + N_DECODE).tolist()
    want = transformers_logits(checkpoint(arch), ids)
    ctx = Context(Model.load(converted(arch, "f32"), n_threads=2), n_ctx=64)
    rows = [ctx.eval(ids[:N_PREFILL], all_logits=True)]  # [24, V]
    rows += [ctx.eval(ids[i : i + 1]) for i in range(N_PREFILL, len(ids))]  # 16 x [V]
    got = np.vstack(rows)
    assert got.shape == want.shape
    assert want.std() > 0.3, "logits too flat to tell a wrong forward pass from a right one"
    nmse = float(((got - want) ** 2).mean() / (want**2).mean())
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"\n{arch}: nmse {nmse:.2e}, top-1 {top1:.3f} over {len(ids)} positions")  # pytest -s: the note's table
    assert nmse < 1e-4, nmse
    assert top1 >= 0.95


@pytest.mark.parametrize("arch", ARCHS)
def test_command_line(arch: str, checkpoint, tmp_path: Path) -> None:
    convert_inspect_run(checkpoint(arch), tmp_path / "m.gguf", GGUF_ARCH.get(arch, arch))


# -- gpt-oss: what the shared tests above do not show --------------------------


def _gpt_oss_tokens(path: Path) -> list[int]:
    n_vocab = GGUFFile(path).tensor("token_embd.weight").ne[1]
    return np.random.default_rng(7).integers(3, n_vocab, N_PREFILL + N_DECODE).tolist()


def test_gpt_oss_routes_tokens_as_transformers(checkpoint, converted) -> None:
    """Each layer's per-expert token counts (lamina's imatrix counts one per
    token and picked expert) equal the experts transformers' router picks, and
    the experts are hit unevenly (so a router that ignored its input would fail)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = converted("gpt_oss", "f32")
    ids = _gpt_oss_tokens(path)
    model = AutoModelForCausalLM.from_pretrained(checkpoint("gpt_oss"), dtype=torch.float32).eval()
    n_expert = model.config.num_local_experts
    want = np.zeros((model.config.num_hidden_layers, n_expert), np.int64)

    def count(il: int):
        def hook(_module, _inputs, outputs) -> None:
            picked = outputs[2].reshape(-1).numpy()  # router_indices [T, top_k]
            want[il] += np.bincount(picked, minlength=n_expert)

        return hook

    for il, layer in enumerate(model.model.layers):
        layer.mlp.router.register_forward_hook(count(il))
    with torch.no_grad():
        model(torch.tensor([ids]))

    ctx = Context(Model.load(path, n_threads=2), n_ctx=64)
    ctx.collect_imatrix(True)
    ctx.eval(ids)
    out = ctx.collect_imatrix(False)
    assert out is not None
    got = out[1][:, 1:]  # [n_layer, n_expert]
    assert got.tolist() == want.tolist()
    assert (want.max(axis=1) >= 2 * np.maximum(want.min(axis=1), 1)).all(), f"experts hit evenly: {want}"


def test_gpt_oss_offload_splits_equal_the_cpu(converted) -> None:
    """the CPU stand-in device takes gpt-oss's biases and sinks with its layers"""
    path = converted("gpt_oss", "f32")
    ids = _gpt_oss_tokens(path)[:16]
    model = Model.load(path, n_threads=2)
    alone = Context(model, n_ctx=32).eval(ids, all_logits=True)
    for n in (1, 3, 5):
        split = Context(model, n_ctx=32, gpu_layers=n, device="cpu-standin").eval(ids, all_logits=True)
        assert np.array_equal(split, alone), f"gpu_layers={n}"


@pytest.mark.gpu
def test_cuda_refuses_gpt_oss(converted) -> None:
    from lamina.engine.context import ContextError

    model = Model.load(converted("gpt_oss", "f32"), n_threads=2)
    with pytest.raises(ContextError, match="gpt-oss layers .* not implemented on the GPU"):
        Context(model, n_ctx=64, gpu_layers=1, device="cuda", require_gpu=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"swiglu_limit": 10.0}, "swiglu_limit"),
        ({"layer_types": ["full_attention"] * 4}, "layer_types"),
        ({"attention_bias": False}, "attention_bias"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quant_method 'bitsandbytes'"),
    ],
    ids=["swiglu_limit", "layer_types", "attention_bias", "other_quantization"],
)
def test_gpt_oss_converter_refuses_what_llama_cpp_fixes(change, message, checkpoint, tmp_path: Path) -> None:
    """llama.cpp's gpt-oss graph hard-codes these; a config that differs is refused, not converted wrongly"""
    import json
    import shutil

    from lamina.convert.errors import CheckpointError

    hf = tmp_path / "hf"
    shutil.copytree(checkpoint("gpt_oss"), hf)
    cfg = json.loads((hf / "config.json").read_text()) | change
    (hf / "config.json").write_text(json.dumps(cfg))
    enc = Encoder(1)
    try:
        with pytest.raises(CheckpointError, match=message):
            plan_hf(hf, get_mix("f16"), enc, tmp_path / "out.gguf")
    finally:
        enc.close()


def test_gpt_oss_mxfp4_experts_match_llama_cpp(converted, tmp_path: Path) -> None:
    """llama-quantize's MXFP4_MOE (MXFP4 experts, Q8_0 attention) of the tiny
    file, byte-equal with `lamina convert`'s mxfp4_moe mix: lamina's logits
    against llama.cpp's on the same bytes (support/tiny_mxfp4.py says how close)."""
    quantize = llama_cpp_tool("llama-quantize")
    if quantize is None or not have_llama_cpp():
        pytest.skip("llama-quantize (tools/build_llama_cpp.sh) and llama-cpp-python are needed")
    f32 = converted("gpt_oss", "f32")
    mx = tmp_path / "mxfp4.gguf"
    subprocess.run([str(quantize), str(f32), str(mx), "MXFP4_MOE", "2"], check=True, capture_output=True, timeout=120)
    assert GGUFFile(mx).tensor("blk.0.ffn_up_exps.weight").ggml_type.name == "MXFP4"
    assert converted("gpt_oss", "mxfp4_moe").read_bytes() == mx.read_bytes()  # lamina convert --mxfp4_moe
    ids = _gpt_oss_tokens(f32)
    _, theirs = llama_cpp_logits(mx, tokens=ids, n_ctx=64)
    _, theirs_f32 = llama_cpp_logits(f32, tokens=ids, n_ctx=64)
    got = Context(Model.load(mx, n_threads=2), n_ctx=64).eval(ids, all_logits=True)

    check_mxfp4_logits(got, theirs, theirs_f32, "gpt-oss MXFP4 vs llama.cpp")


def test_gpt_oss_yarn_keys_llama_cpp_ignores_are_refused(converted) -> None:
    """llama.cpp's YaRN always uses beta_fast 32 (it reads no such key): a file
    that says otherwise is refused, naming the key, not run with either value"""
    from lamina.engine.loader import ModelConfigError, read_hparams

    key = "gpt-oss.rope.scaling.yarn_beta_fast"
    with GGUFFile(converted("gpt_oss", "f32")) as g:
        assert g.metadata[key] == 32.0
        read_hparams(g)
        g.metadata[key] = 16.0  # as a file that says so would read
        with pytest.raises(ModelConfigError, match=key):
            read_hparams(g)
