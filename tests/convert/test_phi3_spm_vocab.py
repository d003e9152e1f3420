"""phi3 with a SentencePiece vocabulary (Phi-3 / Phi-3.5-mini's tokenizer
files, tests/support/tiny_spm.py: a tokenizer.model trained offline by
sentencepiece, Phi-3's added tokens), end to end:

- `lamina convert` writes the vocabulary byte for byte as llama.cpp's
  convert_hf_to_gguf.py (Phi3MiniModel.set_vocab, + llama-quantize) does;
- lamina's tokens on the converted file equal sentencepiece's on the
  tokenizer.model, transformers' where transformers 5 follows sentencepiece,
  and llama.cpp's on the same file with its special tokens parsed;
- the file runs from the command line (`lamina inspect`, `lamina run`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from lamina.convert.encode import Encoder
from lamina.convert.errors import VocabError
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.gguf.reader import GGUFFile
from lamina.tokenizer.tokenizer import Tokenizer
from support.cli_roundtrip import convert_inspect_run
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_tokenize, llama_quantize, reference_gguf
from support.tiny_spm import CHAT_TEMPLATE, N_PIECES, N_VOCAB, PHI3_ADDED, phi3_spm_checkpoint
from support.tokenizer_corpus import CORPUS, LONG_TEXT

# what the corpus the model was trained on lacks
UNSEEN = ["zymurgy quixotic fjords", "tabs\tand\u00a0no-break spaces", "Ελληνικά, 中文 και 123"]
TEXTS = [*CORPUS, LONG_TEXT, *UNSEEN]
CHAT = [
    "<|user|>\nHello there<|end|>\n<|assistant|>\n",
    "<|system|>\nBe brief.<|end|>\n<|user|>\n  two spaces<|end|>\n<|assistant|>\nOk</s> done<|endoftext|>",
    "<s> <|placeholder3|>x<|placeholder6|><|end|><|end|>",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phi3_spm_checkpoint(tmp_path_factory.mktemp("hf") / "tiny-phi3-spm")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny-phi3-spm.gguf"
    enc = Encoder(2)
    try:
        run_job(plan_hf(checkpoint, get_mix("f32"), enc, out))
    finally:
        enc.close()
    return out


@pytest.fixture(scope="module")
def tokenizer(converted: Path) -> Tokenizer:
    return Tokenizer.from_metadata(GGUFFile(converted).metadata)


def test_convert_matches_llama_cpp(checkpoint: Path, converted: Path, tmp_path: Path) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf("tiny-phi3-spm", checkpoint, "f32")
    theirs = tmp_path / "llama-quantize.gguf"
    llama_quantize(ref, theirs, int(get_mix("f32").ftype))
    with GGUFFile(converted) as g:
        assert g.metadata["tokenizer.ggml.model"] == "llama"
        tokens, types = g.metadata["tokenizer.ggml.tokens"], g.metadata["tokenizer.ggml.token_type"]
        assert len(tokens) == N_VOCAB and tokens[N_PIECES : N_PIECES + len(PHI3_ADDED)] == PHI3_ADDED
        assert (types[2], types[N_PIECES], tokens[-1]) == (4, 3, f"[PAD{N_VOCAB - 1}]")  # </s> user-defined
        assert g.metadata["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert converted.read_bytes() == theirs.read_bytes()


def test_tokens_match_sentencepiece_and_transformers(checkpoint: Path, tokenizer: Tokenizer) -> None:
    """sentencepiece on every text; transformers 5 too, but where it drops
    sentencepiece's dummy prefix (text that starts with a space) or cuts
    added tokens out of plain text (llama.cpp does that only when asked)"""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(checkpoint)
    compared_hf = 0
    for text in TEXTS:
        ids = tokenizer.encode(text, add_bos=False)
        assert ids == sp.encode(text), repr(text)
        assert tokenizer.decode(ids) == text.encode(), repr(text)
        assert tokenizer.encode(text) == [sp.bos_id(), *ids]  # add_bos_token: true
        if not text.startswith(" ") and not any(t in text for t in ["<s>", "</s>", "<unk>", *PHI3_ADDED]):
            assert ids == hf.encode(text, add_special_tokens=False), repr(text)
            compared_hf += 1
    assert compared_hf >= 0.8 * len(TEXTS)
    assert any(3 <= i < 3 + 256 for t in TEXTS for i in sp.encode(t)), "no byte fallback exercised"


def test_special_tokens_match_llama_cpp(converted: Path, tokenizer: Tokenizer) -> None:
    """Phi-3's chat tokens (control: parsed only when asked), `</s>` (user-defined
    in the file, an end of generation, so control, to llama.cpp) and the
    whitespace after them, which llama.cpp drops for a model it calls phi3 by
    general.name, as llama.cpp tokenizes them"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    texts = CHAT + TEXTS
    for special in (True, False):
        theirs = llama_cpp_tokenize(converted, texts, add_bos=True, special=special)
        ours = [tokenizer.encode(t, add_bos=True, special=special) for t in texts]
        for text, a, b in zip(texts, ours, theirs):
            assert a == b, (special, text)
    end = N_PIECES + PHI3_ADDED.index("<|end|>")
    assert end in tokenizer.encode(CHAT[0], special=True) and end not in tokenizer.encode(CHAT[0])
    assert end in tokenizer.eot_ids
    meta = dict(GGUFFile(converted).metadata)
    assert "phi3" in meta["general.name"].lower()
    unnamed = Tokenizer.from_metadata(meta | {"general.name": "tiny"})
    user = N_PIECES + PHI3_ADDED.index("<|user|>")
    stripped, kept = (t.encode("<|user|>\nHi", add_bos=False, special=True) for t in (tokenizer, unnamed))
    assert stripped == [user, *tokenizer.encode("Hi", add_bos=False)]
    assert kept == [user, *tokenizer.encode("\nHi", add_bos=False)]


def test_command_line(checkpoint: Path, tmp_path: Path) -> None:
    convert_inspect_run(checkpoint, tmp_path / "m.gguf", "phi3")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no tokenizer.model", "needs tokenizer.model"),
        ("added token past vocab_size", "added token id 900 is outside config.json's vocab_size 832"),
        ("vocab_size below the pieces", "800 pieces, more than config.json's vocab_size 700"),
    ],
)
def test_bad_vocabularies_are_refused(change: str, message: str, checkpoint: Path, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    shutil.copytree(checkpoint, hf)
    if change == "no tokenizer.model":
        (hf / "tokenizer.model").unlink()
    elif change == "added token past vocab_size":
        cfg = json.loads((hf / "tokenizer_config.json").read_text())
        cfg["added_tokens_decoder"]["900"] = {"content": "<|extra|>", "special": True}
        (hf / "tokenizer_config.json").write_text(json.dumps(cfg))
    else:
        cfg = json.loads((hf / "config.json").read_text())
        (hf / "config.json").write_text(json.dumps(cfg | {"vocab_size": 700}))
    enc = Encoder(1)
    try:
        with pytest.raises(VocabError, match=message):
            plan_hf(hf, get_mix("f16"), enc, tmp_path / "out.gguf")
    finally:
        enc.close()
