"""Text <-> token ids for a GGUF model, from its metadata alone.

`Tokenizer.from_metadata(meta)` reads `tokenizer.ggml.*` and picks the
algorithm: byte-level BPE (`gpt2`, runtime/tokenizer/bpe.py), SentencePiece
(`llama`, runtime/tokenizer/spm.py) or WordPiece (`bert`,
runtime/tokenizer/wpm.py). What is common to them lives here, as in
llama.cpp's `llama_vocab::impl::tokenize`: special tokens are cut out of the
text first, BOS/EOS are added per the file's flags, and SPM text after the
start or a special token gets its dummy space prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lamina.tokenizer.bpe import BPETokenizer
from lamina.tokenizer.detokenizer import Detokenizer
from lamina.tokenizer.spm import SPMTokenizer
from lamina.tokenizer.vocab import TokenizerError, UnsupportedTokenizerError, Vocab
from lamina.tokenizer.wpm import WPMTokenizer, normalizer_flags

__all__ = ["Tokenizer", "TokenizerError", "UnsupportedTokenizerError"]

Fragment = str | int  # raw text still to tokenize, or a token cut out whole
_C_SPACE = " \t\n\v\f\r"  # C's isspace, which llama.cpp strips with


class Tokenizer:
    def __init__(self, vocab: Vocab, wordpiece_flags: tuple[bool, bool] = (False, False)) -> None:
        """wordpiece_flags: (lowercase, strip_accents) of a WordPiece vocabulary."""
        self.vocab = vocab
        self._impl: BPETokenizer | SPMTokenizer | WPMTokenizer
        if vocab.model == "gpt2":
            self._impl = BPETokenizer(vocab)
        elif vocab.model == "bert":
            self._impl = WPMTokenizer(vocab, *wordpiece_flags)
        else:
            self._impl = SPMTokenizer(vocab)
        # Tokens cut out of text before tokenizing, longest first: user-defined
        # ones always, control and unknown ones too when parsing specials.
        self._partition = {False: vocab.partition_ids(special=False), True: vocab.partition_ids(special=True)}
        self._partition_set = frozenset(self._partition[True])

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        return cls(Vocab.from_metadata(meta), normalizer_flags(meta))

    # -- properties the runtime asks for --------------------------------------

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_vocab

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eot_ids(self) -> frozenset[int]:
        """Every id that ends generation (llama.cpp's is_eog)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        return self.vocab.add_eos

    @property
    def add_space_prefix(self) -> bool:
        """SPM only: a space is put before text that starts the input or follows a special token."""
        return self.vocab.model in ("llama", "bert") and self.vocab.add_space_prefix

    def is_special(self, token_id: int) -> bool:
        """CONTROL/UNKNOWN tokens: text only when decoding with special tokens shown."""
        self._check_id(token_id)
        return self.vocab.is_special(token_id)

    def is_cut_out(self, token_id: int) -> bool:
        """A token that text is split around when encoding (control, unknown, user-defined)."""
        return token_id in self._partition_set

    # -- encode ------------------------------------------------------------------

    def encode(self, text: str | bytes, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids for `text`.

        add_bos: None adds BOS and EOS as the file says (llama.cpp's
        add_special); True forces BOS, EOS still as the file says; False adds
        neither, for text that continues a sequence.
        special: recognise control tokens such as `<|im_start|>` written in the
        text (llama.cpp's parse_special); user-defined tokens always are.
        """
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TokenizerError(f"text to encode is not valid UTF-8: {e}") from None
        ids: list[int] = []
        if self.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise TokenizerError("BOS requested but the vocabulary has no tokenizer.ggml.bos_token_id")
            ids.append(self.bos_id)
        prefix_next = True  # llama.cpp: the first fragment counts as following a special token
        for fragment in self._fragments(text, special):
            if isinstance(fragment, int):
                ids.append(fragment)
                prefix_next = True
                continue
            if self.add_space_prefix and prefix_next:
                fragment = " " + fragment
            ids += self._impl.encode(fragment)
            prefix_next = False
        if add_bos is not False and self.vocab.model == "bert":
            # llama.cpp's WPM add_special: [CLS] ... [SEP], whatever add_eos says
            if self.vocab.sep_id is None:
                raise TokenizerError("the WordPiece vocabulary has no tokenizer.ggml.seperator_token_id")
            ids.append(self.vocab.sep_id)
        elif add_bos is not False and self.add_eos:
            if self.eos_id is None:
                raise TokenizerError("EOS requested but the vocabulary has no tokenizer.ggml.eos_token_id")
            ids.append(self.eos_id)
        return ids

    def _fragments(self, text: str, special: bool) -> list[Fragment]:
        """Cut special tokens out of text, longest token first (tokenizer_st_partition);
        a token with llama.cpp's RSTRIP attribute takes the ASCII whitespace after it along."""
        fragments: list[Fragment] = [text] if text else []
        for token_id in self._partition[special]:
            needle = self.vocab.tokens[token_id]
            if needle not in text:
                continue
            rstrip = token_id in self.vocab.rstrip_ids
            cut: list[Fragment] = []
            for fragment in fragments:
                if isinstance(fragment, int) or needle not in fragment:
                    cut.append(fragment)
                    continue
                for i, part in enumerate(fragment.split(needle)):
                    if i:
                        cut.append(token_id)
                        if rstrip:
                            part = part.lstrip(_C_SPACE)
                    if part:
                        cut.append(part)
            fragments = cut
        return fragments

    # -- decode ------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """Raw bytes of one token; control/unknown tokens give b"" unless `special`."""
        self._check_id(token_id)
        if not special and self.vocab.is_special(token_id):
            return b""
        return self._impl.piece(token_id)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> bytes:
        """Bytes of a whole id sequence, undoing encode's SPM space prefix."""
        detok = Detokenizer(self, skip_special=skip_special)
        return b"".join(detok.feed_bytes(i) for i in ids)

    def detokenizer(self, skip_special: bool = True) -> Detokenizer:
        """A streaming decoder: feed ids one at a time, get whole characters back."""
        return Detokenizer(self, skip_special=skip_special)

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.n_vocab:
            raise TokenizerError(f"token id {token_id} out of range [0, {self.n_vocab})")
