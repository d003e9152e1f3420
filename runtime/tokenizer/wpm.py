"""WordPiece (`tokenizer.ggml.model` == "bert", llama.cpp's WPM vocab type) on
the `tokenizers` library.

The GGUF stores BERT's vocabulary "phantom space" style (llama.cpp's
converter): a word-initial piece as U+2581 + piece, a continuation as the
bare piece, control tokens as they are. That is turned back into a
WordPiece table ("piece" / "##piece") and run through the pipeline
BertTokenizerFast itself uses: BertNormalizer (drop control characters,
spaces around CJK ideographs, accents stripped and lowercase as the file's
tokenizer.ggml.normalizer.* flags say: llama.cpp's defaults, lowercase off
and strip_accents = lowercase), BertPreTokenizer (whitespace and
punctuation), then greedy longest-match-first WordPiece with [UNK] for a word
no pieces cover (or one over 100 characters, as HF's WordPiece). Special
tokens are cut out of the text before this runs (tokenizer.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers

from lamina.tokenizer.vocab import KEY, TokenizerError, TokenType, Vocab

PHANTOM = "\u2581"


def wordpiece_token(text: str, kind: int) -> str:
    """A GGUF phantom-space token as BERT's vocab.txt writes it."""
    if kind == TokenType.CONTROL:
        return text
    return text[len(PHANTOM) :] if text.startswith(PHANTOM) else "##" + text


def normalizer_flags(meta: Mapping[str, Any]) -> tuple[bool, bool]:
    """(lowercase, strip_accents) as llama.cpp reads them."""
    lowercase = bool(meta.get(KEY + "normalizer.lowercase", False))
    strip = meta.get(KEY + "normalizer.strip_accents")
    return lowercase, lowercase if strip is None else bool(strip)


class WPMTokenizer:
    """Text without special tokens -> ids, for one WordPiece vocabulary."""

    def __init__(self, vocab: Vocab, lowercase: bool, strip_accents: bool) -> None:
        if vocab.unk_id is None:
            raise TokenizerError(f"{KEY}unknown_token_id: a WordPiece vocabulary needs an unknown token")
        table: dict[str, int] = {}
        for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.types)):
            table.setdefault(wordpiece_token(text, int(kind)), i)  # the first id wins, as vocab.txt's
        self._vocab = vocab
        unk = wordpiece_token(vocab.tokens[vocab.unk_id], int(vocab.types[vocab.unk_id]))
        tok = HFTokenizer(models.WordPiece(table, unk_token=unk, continuing_subword_prefix="##"))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def piece(self, token_id: int) -> bytes:
        """llama.cpp's token_to_piece for WPM: the phantom space becomes a real one."""
        return self._vocab.tokens[token_id].replace(PHANTOM, " ").encode("utf-8")
