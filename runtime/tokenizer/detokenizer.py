"""Streaming detokenization: token ids in, whole characters out.

A token's bytes may end in the middle of a UTF-8 character (byte-level BPE
and SPM byte-fallback tokens split emoji and CJK freely), so text is only
released once its characters are complete; `flush()` releases the rest, with
U+FFFD for bytes that never became a character.

SPM vocabularies with add_space_prefix get a space put before text at the
start of the input and after every special token (runtime/tokenizer/tokenizer.py);
the one leading space of the first piece after those points is dropped here,
so decode(encode(x)) == x.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.tokenizer.tokenizer import Tokenizer


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self._tok = tokenizer
        self._skip_special = skip_special
        self._strip_space = tokenizer.add_space_prefix
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed_bytes(self, token_id: int) -> bytes:
        """The bytes this token adds to the output (no UTF-8 buffering)."""
        piece = self._tok.token_to_piece(token_id, special=not self._skip_special)
        if self._tok.is_cut_out(token_id):
            # Text after a special token was encoded with a fresh space prefix.
            self._strip_space = self._tok.add_space_prefix
            return piece
        if self._strip_space and piece:
            self._strip_space = False
            if piece.startswith(b" "):
                piece = piece[1:]
        return piece

    def feed(self, token_id: int) -> str:
        """Text completed by this token; may be "" while a character is unfinished."""
        return self._utf8.decode(self.feed_bytes(token_id))

    def flush(self) -> str:
        """Whatever is still held back, with U+FFFD for an unfinished character."""
        return self._utf8.decode(b"", final=True)
