"""bin/convert on real checkpoints against llama.cpp's two-step pipeline.

Reference: llama.cpp's convert_hf_to_gguf.py to f32 (tests/support/llama_cpp_ref.py),
then llama-quantize through llama-cpp-python when installed (the whole output
file must be byte-identical), else ggml's own ggml_quantize_chunk applied to
each f32 tensor at the type lamina chose (every key and tensor byte compared).

- FULL pairs convert the whole model; they cover all six required mixes on
  SmolLM2 and K-quant mixes on Gemma-3 and Qwen2.5.
- The other (model, mix) pairs plan the whole file and produce a sample of
  tensors through the real path (load, transform, quantize), each compared
  byte for byte with ggml; what else is in the file does not depend on the mix.
- The converted files tokenize like the checkpoints' tokenizer.json and run in
  llama.cpp and in lamina with agreeing logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.encode import Encoder
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.convert.requantize import plan_gguf
from lamina.gguf.reader import GGUFFile
from support.ggml_oracle import oracle
from support.hf_checkpoints import hf_checkpoint
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_quantize, reference_gguf

SMOL, GEMMA, QWEN = "smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b"
MIXES = ("q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "q2_k")
FULL = [(SMOL, m) for m in MIXES] + [(GEMMA, "q4_k_m"), (GEMMA, "q2_k"), (QWEN, "q4_k_m")]
SAMPLED = [(m, x) for m in (GEMMA, QWEN) for x in MIXES if (m, x) not in FULL]

# teacher-forced text for the logits comparison: plain prose, as the runtime tests use
PROSE = (
    "The quick brown fox jumps over the lazy dog. In the morning, the farmer went to the market to sell his "
    "apples and buy some bread for his family. He was happy because the weather was nice, and the road was "
    "dry after a week of rain. At the market he met an old friend who had just come back from the city. "
    "They talked about the harvest, the price of wheat, and the new school that was being built near the "
    "river. When the sun began to set, the farmer loaded his cart and drove home, thinking about the long "
    "winter ahead and the work that still had to be done before the first snow."
)

# keys llama-quantize re-sets (so they end the file); everything else is copied
RESET_KEYS = ("general.quantization_version", "general.file_type")


@pytest.fixture(scope="module")
def encoder():
    enc = Encoder(2)
    yield enc
    enc.close()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder):
    """(model, mix) -> our converted file, converted once per module."""
    done: dict[tuple[str, str], Path] = {}

    def get(model: str, mix: str) -> Path:
        if (model, mix) not in done:
            out = tmp_path_factory.mktemp("converted") / f"{model}-{mix}.gguf"
            run_job(plan_hf(hf_checkpoint(model), get_mix(mix), encoder, out))
            done[model, mix] = out
        return done[model, mix]

    return get


def _reference(model: str) -> GGUFFile:
    return GGUFFile(reference_gguf(model, hf_checkpoint(model)))


def _ref_rows(ref: GGUFFile, name: str) -> np.ndarray:
    t = ref.tensor(name)
    return ref.tensor_bytes(name).view(np.float32).reshape(-1, t.ne[0])


def _expected_bytes(ref: GGUFFile, name: str, qtype: Q, rows: slice = slice(None)) -> np.ndarray:
    x = _ref_rows(ref, name)[rows]
    return x.view(np.uint8) if qtype == Q.F32 else oracle().quantize_chunk(qtype, x)


def assert_same_metadata(ours: GGUFFile, ref: GGUFFile, mix: str) -> None:
    keys = [k for k in ref.metadata if k not in RESET_KEYS]
    assert [k for k in ours.metadata if k not in RESET_KEYS] == keys
    for k in keys:
        assert ours.metadata_types[k] == ref.metadata_types[k], k
        a, b = ours.metadata[k], ref.metadata[k]
        if isinstance(b, (np.ndarray, list)):
            assert len(a) == len(b) and np.array_equal(np.asarray(a), np.asarray(b)), k
        else:
            assert a == b, k
    assert list(ours.metadata)[-2:] == list(RESET_KEYS)
    assert ours.metadata["general.file_type"] == int(get_mix(mix).ftype)
    assert ours.metadata["general.quantization_version"] == 2


@pytest.mark.parametrize("model,mix", FULL)
def test_convert_matches_llama_cpp(model: str, mix: str, tmp_path: Path, converted) -> None:
    ref = _reference(model)
    out = converted(model, mix)
    ours = GGUFFile(out)
    assert_same_metadata(ours, ref, mix)
    assert sorted(t.name for t in ours.tensors) == sorted(t.name for t in ref.tensors)

    if have_llama_cpp():
        theirs = tmp_path / "llama-quantize.gguf"
        llama_quantize(ref.path, theirs, int(get_mix(mix).ftype))
        assert out.read_bytes() == theirs.read_bytes()
        return
    for t in ours.tensors:
        assert t.ne == ref.tensor(t.name).ne, t.name
        want = _expected_bytes(ref, t.name, t.ggml_type)
        assert np.array_equal(ours.tensor_bytes(t.name).ravel(), want.ravel()), f"{t.name} ({t.ggml_type.name})"


def test_quantize_llama_cpp_f16_file_like_llama_quantize(tmp_path: Path, encoder: Encoder) -> None:
    """bin/quantize on the f16 GGUF llama.cpp's converter writes (what users download)."""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    f16 = reference_gguf(SMOL, hf_checkpoint(SMOL), "f16")
    run_job(plan_gguf(f16, tmp_path / "ours.gguf", get_mix("q4_k_m"), encoder))
    llama_quantize(f16, tmp_path / "theirs.gguf", int(get_mix("q4_k_m").ftype))
    assert (tmp_path / "ours.gguf").read_bytes() == (tmp_path / "theirs.gguf").read_bytes()


@pytest.mark.parametrize("model,mix", SAMPLED)
def test_convert_sampled_tensors(model: str, mix: str, tmp_path: Path, encoder: Encoder) -> None:
    ref = _reference(model)
    job = plan_hf(hf_checkpoint(model), get_mix(mix), encoder, tmp_path / "unused.gguf")
    n_layer = max(int(t.name.split(".")[1]) for t, _ in job.tensors if t.name.startswith("blk.")) + 1
    sample = [
        (t, produce)
        for t, produce in job.tensors
        if t.name.startswith(("blk.0.", f"blk.{n_layer // 2}.", f"blk.{n_layer - 1}.", "output"))
    ]
    for t, produce in sample:
        assert t.shape == ref.tensor(t.name).np_shape, t.name
        got = produce()
        want = _expected_bytes(ref, t.name, t.type)
        assert np.array_equal(got.ravel(), want.ravel()), f"{t.name} ({t.type.name})"


@pytest.mark.parametrize("model", [SMOL, GEMMA, QWEN])
def test_tokens_match_the_hf_tokenizer(model: str, converted) -> None:
    """The converted vocabulary tokenizes the runtime tests' corpus as the
    checkpoint's own tokenizer.json does (lamina's tokenizer on our file)."""
    from tokenizers import Tokenizer as HFTokenizer

    from lamina.tokenizer import Tokenizer
    from support.tokenizer_corpus import CORPUS, LONG_TEXT

    ours = Tokenizer.from_metadata(GGUFFile(converted(model, "q4_k_m")).metadata)
    hf = HFTokenizer.from_file(str(hf_checkpoint(model) / "tokenizer.json"))
    for text in CORPUS + [LONG_TEXT]:
        if model == QWEN and "</s>" in text:
            continue  # a normal token for transformers, end-of-generation (cut out whole) for llama.cpp
        assert ours.encode(text, add_bos=False, special=True) == hf.encode(text, add_special_tokens=False).ids, text


@pytest.mark.parametrize("model", [SMOL, GEMMA, QWEN])
def test_loads_in_llama_cpp_and_lamina_with_agreeing_logits(model: str, converted) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python not installed: no llama.cpp logits to compare")
    from lamina.engine.context import Context, Model

    path = converted(model, "q4_k_m")
    ids, want = llama_cpp_logits(path, text=PROSE)
    got = Context(Model.load(path, n_threads=2), n_ctx=512).eval(ids, all_logits=True)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95
