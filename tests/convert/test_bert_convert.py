"""`lamina convert` on BERT checkpoints (tests/support/tiny_bert.py: a
sentence-transformers embedding model with mean pooling and a
BertForSequenceClassification cross-encoder) writes byte for byte what
llama.cpp's convert_hf_to_gguf.py (f32) followed by llama-quantize writes, at
f32, f16 and q8_0; what cannot be converted is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.encode import Encoder
from lamina.convert.errors import CheckpointError
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.gguf.reader import GGUFFile
from support.llama_cpp_ref import have_llama_cpp, llama_quantize, reference_gguf
from support.tiny_bert import cached_tiny_bert


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = cached_tiny_bert(kind)
        return made[kind]

    return get


@pytest.fixture(scope="module")
def encoder():
    enc = Encoder(2)
    yield enc
    enc.close()


@pytest.mark.parametrize(("kind", "mix"), [("mean", "f32"), ("mean", "f16"), ("rerank", "f32"), ("rerank", "q8_0")])
def test_convert_matches_llama_cpp(kind: str, mix: str, checkpoint, encoder, tmp_path: Path) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf(f"tiny-bert-{kind}", checkpoint(kind), "f32")
    theirs = tmp_path / "llama-quantize.gguf"
    llama_quantize(ref, theirs, int(get_mix(mix).ftype))
    ours = tmp_path / "lamina.gguf"
    run_job(plan_hf(checkpoint(kind), get_mix(mix), encoder, ours))
    meta = GGUFFile(ours).metadata
    assert meta["general.architecture"] == "bert" and meta["tokenizer.ggml.model"] == "bert"
    if kind == "mean":
        assert meta["bert.pooling_type"] == 1  # from modules.json / 1_Pooling
    else:
        assert meta["bert.classifier.output_labels"] == ["LABEL_0"]
        assert GGUFFile(ours).has_tensor("cls.output.weight")
    assert ours.read_bytes() == theirs.read_bytes()


def test_unknown_pooling_mode_is_an_error(checkpoint, encoder, tmp_path: Path) -> None:
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(checkpoint("mean"), hf)
    (hf / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(CheckpointError, match="1_Pooling/config.json: only mean, cls and lasttoken"):
        plan_hf(hf, get_mix("f32"), encoder, tmp_path / "out.gguf")
