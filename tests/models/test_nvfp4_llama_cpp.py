"""NVFP4 files across engines: the real SmolLM2-135M-Instruct requantized to
NVFP4 by lamina (every matrix, the tied embedding too: `plan_gguf` with
pure=True), run by llama.cpp (llama-cpp-python) and by lamina on the same
tokens; then the same file with per-tensor output scales (`<name>.scale`,
NVFP4 checkpoints' scale_2 as llama.cpp's converter keeps them), which both
engines multiply into the matmul's output.

Both dot NVFP4 blocks with Q8_0 activations (lamina's AVX2 dot gives ggml's
x86 bits), so the logits of the first position (BOS: embedding row, every
matmul, the head; attention over one cell) agree to float noise; later
positions differ in attention's float order, which a 4-bit 135M model
amplifies (the published Q4_1 file itself agrees with llama.cpp's top-1 at
22 of these 24 positions), so those are compared by top-1."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F

from lamina.convert.encode import Encoder
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import Mix
from lamina.convert.requantize import plan_gguf
from lamina.convert.writer import set_kv
from lamina.engine.context import Context, Model
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits

pytestmark = pytest.mark.skipif(not have_llama_cpp(), reason="llama-cpp-python not installed: no llama.cpp logits")

TEXT = "The quick brown fox jumps over the lazy dog. In the morning, the farmer went to the market to sell his apples"
SCALED = {"blk.0.attn_q": 0.5, "blk.3.ffn_down": 2.0, "blk.7.attn_output": 1.5, "blk.12.ffn_gate": 0.75}


@pytest.fixture(scope="module")
def nvfp4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nvfp4") / "smollm2-nvfp4.gguf"
    enc = Encoder(2)
    try:
        mix = Mix("nvfp4", F.MOSTLY_NVFP4, Q.NVFP4)
        run_job(plan_gguf(fetch_model("smollm2-135m-instruct"), out, mix, enc, pure=True, allow_requantize=True))
    finally:
        enc.close()
    return out


def with_scales(src: Path, out: Path, scales: dict[str, float]) -> Path:
    """src's metadata and tensors byte for byte, plus an f32 [1] <name>.scale per entry"""
    g = GGUFFile(src)
    w = gguf.GGUFWriter(out, g.architecture)
    for key, value in g.metadata.items():
        if key != gguf.Keys.General.ARCHITECTURE:
            t = g.metadata_types[key]
            set_kv(w, key, value, t.type, t.element)
    for info in g.tensors:
        data = g.tensor_bytes(info.name)
        if info.ggml_type == Q.F32:
            w.add_tensor(info.name, data.view(np.float32).reshape(info.np_shape))
        else:
            w.add_tensor(info.name, data.reshape(*info.np_shape[:-1], -1), raw_dtype=info.ggml_type)
    for name, s in scales.items():
        w.add_tensor(f"{name}.scale", np.array([s], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def compare(path: Path) -> tuple[float, float]:
    """(NMSE of the first position's logits, top-1 agreement over all)"""
    ids, want = llama_cpp_logits(path, text=TEXT, n_ctx=64)
    got = Context(Model.load(path, n_threads=2), n_ctx=64, kv_type="f16").eval(np.array(ids), all_logits=True)
    first = float(((got[0] - want[0]) ** 2).mean() / (want[0] ** 2).mean())
    return first, float((got.argmax(-1) == want.argmax(-1)).mean())


def test_nvfp4_file_agrees_with_llama_cpp(nvfp4):
    assert {t.ggml_type for t in GGUFFile(nvfp4).tensors} == {Q.NVFP4, Q.F32}
    first, top1 = compare(nvfp4)
    assert first < 1e-6 and top1 >= 0.85, (first, top1)


def test_nvfp4_output_scales_agree_with_llama_cpp(nvfp4, tmp_path):
    scaled = with_scales(nvfp4, tmp_path / "scaled.gguf", SCALED)
    first, top1 = compare(scaled)
    assert first < 1e-6 and top1 >= 0.85, (first, top1)
    # and the scales matter: the unscaled file's logits are far from these
    ids, plain = llama_cpp_logits(nvfp4, text=TEXT, n_ctx=64)
    _, scaled_logits = llama_cpp_logits(scaled, text=TEXT, n_ctx=64)
    assert ((plain - scaled_logits) ** 2).mean() / (plain**2).mean() > 1e-2
