"""SentencePiece (`tokenizer.ggml.model` == "llama") on the sentencepiece library.

A SentencePiece BPE ModelProto is rebuilt from the GGUF's tokens, scores and
types: pieces merge by score, highest first, and characters no piece covers
fall back to <0xXX> byte pieces, which is also what llama.cpp's
llm_tokenizer_spm does. The proto's normalizer is the identity; the space
prefix and the " " -> "▁" escape are applied by the caller and here, exactly
where llama.cpp applies them.

Only BYTE pieces and the unknown piece keep their kind in the proto. llama.cpp
merges towards any token text, while sentencepiece would skip control and
unused pieces and match user-defined ones greedily; making them all NORMAL
keeps the merge-by-score rule for all of them. (User-defined tokens never
reach this code anyway: they are cut out of the text first.)
"""

from __future__ import annotations

from typing import Any

import sentencepiece as spm
from google.protobuf.message import Message
from sentencepiece import sentencepiece_model_pb2

from lamina.tokenizer.vocab import TokenizerError, TokenType, Vocab

# sentencepiece ships py.typed, but its protoc-generated sentencepiece_model_pb2 has no .pyi: ModelProto and
# TrainerSpec are built at import time, so mypy cannot see them. Use the module untyped.
pb: Any = sentencepiece_model_pb2

SPACE = "\u2581"  # "▁", SentencePiece's visible space


class SPMTokenizer:
    """Text without special tokens -> ids, for one SentencePiece vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        if vocab.unk_id is None:
            raise TokenizerError("tokenizer.ggml.unknown_token_id: an SPM vocabulary needs an unknown token")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=build_model_proto(vocab).SerializeToString())
        except RuntimeError as e:  # sentencepiece's own validation of the pieces
            raise TokenizerError(f"tokenizer.ggml.tokens: sentencepiece rejects this vocabulary: {e}") from None
        self._pieces = [_piece(t, k) for t, k in zip(vocab.tokens, vocab.types.tolist())]

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text.replace(" ", SPACE), out_type=int)

    def piece(self, token_id: int) -> bytes:
        """The bytes a token stands for (special tokens: their text)."""
        return self._pieces[token_id]


def build_model_proto(vocab: Vocab) -> Message:
    """A sentencepiece ModelProto for the vocabulary."""
    piece_type = pb.ModelProto.SentencePiece
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    # sentencepiece insists on all 256 <0xXX> pieces once byte fallback is on.
    proto.trainer_spec.byte_fallback = bool((vocab.types == TokenType.BYTE).any())
    proto.trainer_spec.vocab_size = vocab.n_vocab
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = False
    types = vocab.types.tolist()
    scores = vocab.scores.tolist()
    for i, text in enumerate(vocab.tokens):
        p = proto.pieces.add()
        p.piece = text
        p.score = scores[i]
        if i == vocab.unk_id:
            p.type = piece_type.UNKNOWN
        elif types[i] == TokenType.BYTE:
            p.type = piece_type.BYTE
        else:
            p.type = piece_type.NORMAL
    return proto


def _piece(text: str, kind: int) -> bytes:
    # As llama.cpp's token_to_piece; UNUSED and unknown types render as nothing.
    if kind == TokenType.NORMAL:
        return text.replace(SPACE, " ").encode()
    if kind == TokenType.BYTE:
        return bytes([int(text[3:5], 16)])
    if kind in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
        return text.encode()
    return b""
