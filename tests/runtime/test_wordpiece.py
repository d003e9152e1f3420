"""The WordPiece tokenizer (llama.cpp's `bert` vocab type) read from a GGUF:

- on llama.cpp's own test vectors (ggml-vocab-bert-bge.gguf and its
  .inp/.out files, 46 texts: accents, CJK, emoji, code, whitespace runs);
  that file predates the normalizer keys, from when llama.cpp always
  lowercased, so the test sets tokenizer.ggml.normalizer.lowercase as its
  vectors were made;
- against HF's BertTokenizerFast on the checkpoint a converted file came
  from (its vocab.txt, not the GGUF): special tokens, [CLS]/[SEP], pairs of
  segments, accents stripped with lowercase, CJK, punctuation, control
  characters, over-long words.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.gguf.reader import GGUFFile
from lamina.tokenizer import Tokenizer
from lamina.tokenizer.vocab import TokenizerError
from support.vocab_vectors import read_vectors, vocab_tests_dir

TEXTS = [
    "Hello, World! naïve café RÉSUMÉ",
    "我想在apple工作1314151天～ 東京タワー",
    "don't stop--now... (really?) $5.00 + 3% = [x]",
    "  tabs\tand\nnewlines\r\n  ",
    "Ελληνικά и русский язык, Ärger über Öl",
    "emoji 🦙🚀 ok 😶\u200d🌫️",
    "[CLS] inside [SEP] text [MASK]",
    "ﬁ ligature Ⅻ ＡＢＣ full width",
    "x" * 120 + " short",
    "a\u200bb\x00c\ufffd d\x1f e",
    "İstanbul ǅ ß straße",
    "unaffable pneumonoultramicroscopic antidisestablishmentarianism",
    "",
]


def test_llama_cpp_vectors() -> None:
    path = vocab_tests_dir() / "ggml-vocab-bert-bge.gguf"
    meta = dict(GGUFFile(path).metadata)
    assert "tokenizer.ggml.normalizer.lowercase" not in meta
    meta["tokenizer.ggml.normalizer.lowercase"] = True
    tok = Tokenizer.from_metadata(meta)
    vectors = read_vectors(path)
    assert len(vectors) > 40
    for text, want in vectors:
        assert tok.encode(text, add_bos=False) == want, repr(text)


@pytest.fixture(scope="module")
def bert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A converted tiny BERT (its GGUF) and the checkpoint folder it came from."""
    pytest.importorskip("transformers")
    from lamina.convert.encode import Encoder
    from lamina.convert.hf.convert import plan_hf
    from lamina.convert.pipeline import run_job
    from lamina.convert.recipes import get_mix
    from support.tiny_bert import cached_tiny_bert

    hf = cached_tiny_bert("mean")
    out = tmp_path_factory.mktemp("gguf") / "bert.gguf"
    enc = Encoder(1)
    try:
        run_job(plan_hf(hf, get_mix("f32"), enc, out))
    finally:
        enc.close()
    return out, hf


def test_matches_bert_tokenizer_fast(bert_files: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    gguf, hf_dir = bert_files
    hf = AutoTokenizer.from_pretrained(hf_dir)
    assert type(hf).__name__.startswith("BertTokenizer")
    tok = Tokenizer.from_metadata(GGUFFile(gguf).metadata)
    for text in TEXTS:
        assert tok.encode(text, special=True) == hf(text).input_ids, repr(text)
        assert tok.encode(text, add_bos=False, special=True) == hf(text, add_special_tokens=False).input_ids
    # a query/document pair as a cross-encoder reads it
    q, d = TEXTS[0], TEXTS[2]
    assert tok.encode(q, special=True) + tok.encode(d, add_bos=False, special=True) + [tok.vocab.sep_id] == (
        hf(q, d).input_ids
    )
    # special tokens in text are plain text unless asked for
    assert (
        tok.encode("[CLS]", add_bos=False) == hf("[CLS]", add_special_tokens=False, split_special_tokens=True).input_ids
    )


def test_decode_round_trip(bert_files: tuple[Path, Path]) -> None:
    tok = Tokenizer.from_metadata(GGUFFile(bert_files[0]).metadata)
    ids = tok.encode("Hello, world! unaffable")
    # llama.cpp's pieces: the phantom space becomes a space, the leading one is dropped
    assert tok.decode(ids) == b"hello , world ! unaffable"
    shown = tok.decode(ids, skip_special=False)
    assert shown.startswith(b"[CLS]") and shown.endswith(b"[SEP]") and b"hello , world ! unaffable" in shown


def test_missing_unknown_token_is_an_error(bert_files: tuple[Path, Path]) -> None:
    meta = dict(GGUFFile(bert_files[0]).metadata)
    meta["tokenizer.ggml.unknown_token_id"] = len(meta["tokenizer.ggml.tokens"])
    with pytest.raises(TokenizerError, match="unknown_token_id"):
        Tokenizer.from_metadata(meta)
