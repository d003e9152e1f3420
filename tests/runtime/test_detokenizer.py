"""Streaming detokenization: whole characters only, same text as decode()."""

from __future__ import annotations

import pytest

from lamina.tokenizer import Tokenizer
from support.tokenizer_corpus import LONG_TEXT
from support.vocab_vectors import mistral_tokenizer, model_tokenizer


def tokenizer(name: str) -> Tokenizer:
    return mistral_tokenizer() if name == "mistral-spm" else model_tokenizer(name)[0]


def splits_characters(tok: Tokenizer, ids: list[int]) -> bool:
    """Whether some token's bytes end inside a UTF-8 character."""
    for i in ids:
        try:
            tok.token_to_piece(i).decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m", "mistral-spm"])
def test_stream_equals_decode(name: str) -> None:
    tok = tokenizer(name)
    ids = tok.encode(LONG_TEXT)
    assert splits_characters(tok, ids), "the text should exercise characters split across tokens"
    detok = tok.detokenizer()
    chunks = [detok.feed(i) for i in ids] + [detok.flush()]
    assert "".join(chunks) == tok.decode(ids).decode("utf-8") == LONG_TEXT
    assert not any("\ufffd" in c for c in chunks)
    assert "" in chunks  # held back while a character was unfinished


def test_unfinished_character_is_flushed_as_replacement() -> None:
    tok = tokenizer("gemma-3-270m")
    first_byte = tok.vocab.tokens.index("<0xF0>")  # starts a 4-byte sequence
    detok = tok.detokenizer()
    assert detok.feed(first_byte) == ""
    assert detok.flush() == "\ufffd"


def test_spm_leading_space() -> None:
    tok = tokenizer("mistral-spm")
    ids = tok.encode("Hello world")  # <s> ▁Hello ▁world
    assert tok.vocab.tokens[ids[1]] == "\u2581Hello"
    detok = tok.detokenizer()
    assert [detok.feed(i) for i in ids] == ["", "Hello", " world"]
    assert tok.decode(ids) == b"Hello world"
    assert tok.decode(tok.encode(" Hello")) == b" Hello"  # the user's own space survives
    # Only the first piece loses its space; a continuation keeps it.
    detok = tok.detokenizer()
    detok.feed(ids[1])
    assert detok.feed(ids[1]) == " Hello"


def test_bpe_has_no_leading_space_rule() -> None:
    tok = tokenizer("smollm2-135m-instruct")
    ids = tok.encode(" Hello")
    assert tok.detokenizer().feed(ids[0]) == " Hello"


def test_special_tokens_in_stream() -> None:
    tok = tokenizer("smollm2-135m-instruct")
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>", special=True)
    shown = tok.detokenizer(skip_special=False)
    hidden = tok.detokenizer()
    assert "".join(shown.feed(i) for i in ids) + shown.flush() == "<|im_start|>assistant\nHi<|im_end|>"
    assert "".join(hidden.feed(i) for i in ids) + hidden.flush() == "assistant\nHi"
