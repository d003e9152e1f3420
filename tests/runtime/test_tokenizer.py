"""Tokenizer: ids equal to the oracles, round trips, specials, flags, errors.

Oracles: llama.cpp's own vocab test vectors (every vocabulary whose
pre-tokenizer lamina supports must pass exactly), transformers' GGUF
tokenizer conversion for the three real models, and sentencepiece itself
for Mistral's tokenizer.model.
"""

from __future__ import annotations

import functools

import pytest

from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model
from lamina.tokenizer.tokenizer import Tokenizer, TokenizerError, UnsupportedTokenizerError
from support.tokenizer_corpus import CORPUS, LONG_TEXT
from support.vocab_vectors import (
    mistral_metadata,
    mistral_spm_model,
    mistral_tokenizer,
    model_tokenizer,
    read_vectors,
    vocab_file_tokenizer,
    vocab_tests_dir,
)

REAL_MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m"]

# Vocabularies in llama-cpp-python 0.3.36's models/ folder, by what lamina does with them.
SUPPORTED_VECTORS = [
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
]
WITHOUT_VECTORS = ["aquila", "baichuan", "gpt-neox"]  # must still load
UNSUPPORTED = {"gemma-4": "'gemma4'", "nomic-bert-moe": "'t5'"}  # bert-bge: tests/runtime/test_wordpiece.py


def vocab_path(name: str):
    return vocab_tests_dir() / f"ggml-vocab-{name}.gguf"


# -- llama.cpp's vectors ----------------------------------------------------------


@pytest.mark.parametrize("name", SUPPORTED_VECTORS)
def test_llama_cpp_vocab_vectors(name: str) -> None:
    tok = vocab_file_tokenizer(vocab_path(name))
    vectors = read_vectors(vocab_path(name))
    assert len(vectors) >= 40
    for text, expected in vectors:
        # test-tokenizer-0: add_special=false, parse_special=false
        assert tok.encode(text, add_bos=False) == expected, repr(text)
        assert tok.decode(expected) == text.encode(), repr(text)


@pytest.mark.parametrize("name", WITHOUT_VECTORS)
def test_vocab_without_vectors_loads(name: str) -> None:
    tok = vocab_file_tokenizer(vocab_path(name))
    text = "Hello world, 123!"
    assert tok.decode(tok.encode(text)) == text.encode()


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_vocab_is_a_clear_error(name: str) -> None:
    with pytest.raises(UnsupportedTokenizerError, match=UNSUPPORTED[name]):
        Tokenizer.from_metadata(GGUFFile(vocab_path(name)).metadata)


def test_unknown_pre_tokenizer_names_the_supported_ones() -> None:
    meta = dict(GGUFFile(vocab_path("gpt-2")).metadata)
    meta["tokenizer.ggml.pre"] = "gpt-4o"
    with pytest.raises(UnsupportedTokenizerError, match=r"unsupported pre-tokenizer 'gpt-4o'; supported: .*qwen2"):
        Tokenizer.from_metadata(meta)


# -- real models against transformers ------------------------------------------------


@functools.cache
def hf_tokenizer(name: str):
    """transformers' tokenizer for the GGUF, built by the conversion that
    AutoTokenizer.from_pretrained(dir, gguf_file=...) wraps; the wrapper adds
    nothing to encoding but 30-55 s of loading for the big vocabularies."""
    ggml = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    architecture, tokenizer_dict, _ = ggml.get_gguf_tokenizer(str(fetch_model(name)))
    backend, _ = ggml.convert_gguf_tokenizer(architecture, tokenizer_dict)
    return backend


def _hf_comparable(name: str, text: str) -> bool:
    # Qwen2.5's vocabulary has "</s>" as a normal token; llama.cpp's end-of-generation
    # list makes it a control token (so lamina cuts it out whole), transformers does not.
    return not (name == "qwen2.5-coder-0.5b" and "</s>" in text)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_matches_transformers(name: str) -> None:
    tok, _ = model_tokenizer(name)
    hf = hf_tokenizer(name)
    for text in CORPUS + [LONG_TEXT]:
        if not _hf_comparable(name, text):
            continue
        # transformers always recognises special tokens written in the text
        ids = tok.encode(text, add_bos=False, special=True)
        assert ids == hf.encode(text, add_special_tokens=False).ids, repr(text)
        assert tok.decode(ids, skip_special=False) == text.encode(), repr(text)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_round_trip(name: str) -> None:
    tok, _ = model_tokenizer(name)
    for text in CORPUS + [LONG_TEXT]:
        assert tok.decode(tok.encode(text)) == text.encode(), repr(text)
        assert tok.decode(tok.encode(text.encode())) == text.encode()


def test_qwen_end_of_sentence_is_cut_out_like_llama_cpp() -> None:
    tok, _ = model_tokenizer("qwen2.5-coder-0.5b")
    eos_text = tok.vocab.tokens.index("</s>")
    assert eos_text in tok.eot_ids
    assert tok.encode("a</s>", special=True)[-1] == eos_text
    assert eos_text not in tok.encode("a</s>", special=False)


def test_bos_and_eos_flags() -> None:
    smol, _ = model_tokenizer("smollm2-135m-instruct")
    gemma, _ = model_tokenizer("gemma-3-270m")
    qwen, _ = model_tokenizer("qwen2.5-coder-0.5b")
    assert (smol.add_bos, smol.bos_id, smol.eos_id) == (False, 1, 2)
    assert (qwen.add_bos, qwen.eos_id) == (False, 151645)
    assert (gemma.add_bos, gemma.bos_id, gemma.eos_id, gemma.add_space_prefix) == (True, 2, 1, False)
    assert gemma.encode("hi") == [2, 2202]  # what AutoTokenizer gives with add_special_tokens
    assert gemma.encode("hi", add_bos=False) == [2202]
    assert smol.encode("hi", add_bos=True)[0] == 1
    assert not any(t.add_eos for t in (smol, gemma, qwen))


def test_eot_ids() -> None:
    smol, _ = model_tokenizer("smollm2-135m-instruct")
    gemma, _ = model_tokenizer("gemma-3-270m")
    qwen, _ = model_tokenizer("qwen2.5-coder-0.5b")
    assert {0, 2} <= smol.eot_ids  # <|endoftext|>, <|im_end|>
    assert {1, 106} <= gemma.eot_ids  # <eos>, <end_of_turn>
    assert {151643, 151645} <= qwen.eot_ids  # <|endoftext|>, <|im_end|>
    assert gemma.vocab.tokens[106] == "<end_of_turn>"


def test_special_tokens_only_when_asked() -> None:
    smol, _ = model_tokenizer("smollm2-135m-instruct")
    assert smol.encode("<|im_start|>", special=True) == [1]
    plain = smol.encode("<|im_start|>")
    assert 1 not in plain and len(plain) > 1
    assert smol.decode(plain) == b"<|im_start|>"
    assert smol.is_special(1) and not smol.is_special(plain[0])
    assert smol.decode([1, 2]) == b""
    assert smol.decode([1, 2], skip_special=False) == b"<|im_start|><|im_end|>"


def test_token_to_piece() -> None:
    smol, _ = model_tokenizer("smollm2-135m-instruct")
    gemma, _ = model_tokenizer("gemma-3-270m")
    (hello,) = smol.encode(" Hello")
    assert smol.token_to_piece(hello) == b" Hello"  # "ĠHello" unspelled
    assert smol.token_to_piece(2) == b""
    assert smol.token_to_piece(2, special=True) == b"<|im_end|>"
    newline = gemma.vocab.tokens.index("<0x0A>")
    assert gemma.token_to_piece(newline) == b"\n"
    (word,) = gemma.encode(" world", add_bos=False)
    assert gemma.token_to_piece(word) == b" world"  # "▁world"
    with pytest.raises(TokenizerError, match="out of range"):
        smol.token_to_piece(smol.n_vocab)


def test_user_defined_tokens_are_always_cut_out() -> None:
    gemma, _ = model_tokenizer("gemma-3-270m")
    double_newline = gemma.vocab.tokens.index("\n\n")
    assert gemma.encode("a\n\nb", add_bos=False, special=False)[1] == double_newline


# -- SentencePiece: Mistral's tokenizer.model ------------------------------------------


def test_spm_matches_sentencepiece() -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(mistral_spm_model()))
    tok = mistral_tokenizer()
    assert tok.add_space_prefix and tok.add_bos
    for text in CORPUS + [LONG_TEXT]:
        ids = tok.encode(text, add_bos=False)
        assert ids == sp.encode(text), repr(text)
        assert tok.decode(ids) == text.encode(), repr(text)
        assert tok.encode(text) == [sp.bos_id()] + ids


def test_spm_space_prefix_after_special_tokens() -> None:
    tok = mistral_tokenizer()
    ids = tok.encode("Hi</s>there", special=True)
    # "▁Hi", </s>, "▁there": text after a special token gets its own prefix, as in llama.cpp
    assert ids[0] == tok.bos_id and ids[2] == tok.eos_id
    assert tok.vocab.tokens[ids[3]].startswith("\u2581")
    assert tok.decode(ids, skip_special=False) == b"<s>Hi</s>there"
    assert tok.decode(ids) == b"Hithere"


def test_eog_rules_follow_llama_cpp() -> None:
    tokens = ["<unk>", "<s>", "</s>", "<|end|>", "<|return|>", "<|call|>", "<|im_end|>", "a"]
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1, 1, 1],
        "tokenizer.ggml.eos_token_id": 7,
    }
    tok = Tokenizer.from_metadata(meta)
    # eos by id; end-of-turn texts by name (made control); harmony's <|end|> ends a message only
    assert tok.eot_ids == {2, 4, 5, 6, 7}
    assert tok.vocab.eot_id == 6
    assert [tok.is_special(i) for i in range(8)] == [True, True, True, False, True, True, True, False]
    assert tok.encode("<|im_end|>", add_bos=False, special=True) == [6]


def test_fim_pad_repo_and_file_separator_end_a_generation_as_in_llama_cpp() -> None:
    tokens = ["<unk>", "<s>", "</s>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|fim_prefix|>", "a", "<PAD>"]
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1, 3, 1, 1],
        "tokenizer.ggml.eos_token_id": 2,
    }
    tok = Tokenizer.from_metadata(meta)
    # one token per role (the first spelling found: <|fim_pad|> before <PAD>); FIM_PRE is not an end
    assert tok.eot_ids == {2, 3, 4, 5}
    assert all(tok.is_special(i) for i in (3, 4, 5)) and not tok.is_special(8)
    # the file's own id wins over the text
    tok = Tokenizer.from_metadata({**meta, "tokenizer.ggml.fim_pad_token_id": 8})
    assert tok.eot_ids == {2, 4, 5, 8}


# -- metadata errors -------------------------------------------------------------------


def test_metadata_errors_name_the_key() -> None:
    meta = mistral_metadata()
    with pytest.raises(TokenizerError, match="tokenizer.ggml.tokens: required"):
        Tokenizer.from_metadata({k: v for k, v in meta.items() if k != "tokenizer.ggml.tokens"})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.token_type: expected 32000"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.token_type": [1, 2, 3]})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.bos_token_id"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.bos_token_id": 10**6})
    with pytest.raises(TokenizerError, match="tokenizer.ggml.merges"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.model": "gpt2"})
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        mistral_tokenizer().encode(b"\xff\xfe")


def test_a_token_that_is_not_utf8_is_a_typed_error_naming_it() -> None:
    # found by tools/fuzz.sh gguf (corpus/gguf/crash-1c69...): the GGUF reader keeps
    # invalid UTF-8 as surrogate escapes, which sentencepiece's proto cannot take
    meta = mistral_metadata()
    tokens = list(meta["tokenizer.ggml.tokens"])
    tokens[17] = b"\x97ab".decode("utf-8", "surrogateescape")
    with pytest.raises(TokenizerError, match=r"tokenizer.ggml.tokens\[17\]: not valid UTF-8: b'\\x97ab'"):
        Tokenizer.from_metadata({**meta, "tokenizer.ggml.tokens": tokens})
