"""The three real models' tokenizers (SmolLM2 and Qwen2.5's byte-level BPE,
Gemma 3's SentencePiece) on random text, bytes and ids: encode gives ids in
the vocabulary and decode gives the text back, less the bytes the vocabulary
has no token for (SmolLM2 lacks 0xF1, 0xF2 and a few control bytes: llama.cpp
drops them too; Qwen2.5's byte-level BPE and Gemma's byte fallback have all
256), and with SentencePiece a literal U+2581 comes back as a space (it is
the escaped space itself, in sentencepiece and llama.cpp alike); invalid
UTF-8 and out-of-range ids are a TokenizerError;
the streaming detokenizer gives the same text as a whole decode."""

from __future__ import annotations

import atheris

from lamina.errors import LaminaError
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model
from lamina.tokenizer import Tokenizer
from lamina.tokenizer.bpe import byte_to_unicode
from lamina.tokenizer.vocab import TokenizerError

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m")
MAX_TEXT = 512
_tokenizers: list[Tokenizer] = []
_dropped: list[bytes] = []  # per tokenizer: the bytes no token stands for
_spm: list[bool] = []  # per tokenizer: SentencePiece, whose decode turns U+2581 into a space
SPM_SPACE = "\u2581"


def setup() -> None:
    for name in MODELS:
        with GGUFFile(fetch_model(name)) as f:
            tok = Tokenizer.from_metadata(f.metadata)
        _tokenizers.append(tok)
        if tok.vocab.model == "gpt2":
            tokens = set(tok.vocab.tokens)
            _dropped.append(bytes(b for b, c in byte_to_unicode().items() if c not in tokens))
        else:
            _dropped.append(b"")
        _spm.append(tok.vocab.model == "llama")


def _kept(raw: bytes, dropped: bytes, spm: bool) -> bytes:
    if spm:
        raw = raw.replace(SPM_SPACE.encode(), b" ")
    return raw.translate(None, dropped) if dropped else raw


def _check_ids(tok: Tokenizer, ids: list[int]) -> None:
    assert all(isinstance(i, int) and 0 <= i < tok.n_vocab for i in ids), ids


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, len(_tokenizers) - 1)
    tok, dropped, spm = _tokenizers[which], _dropped[which], _spm[which]
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # text round trip, specials not parsed
        text = fdp.ConsumeUnicodeNoSurrogates(MAX_TEXT)
        ids = tok.encode(text, add_bos=False)
        _check_ids(tok, ids)
        assert tok.decode(ids, skip_special=False) == _kept(text.encode(), dropped, spm), (text, ids)
        if not dropped:
            detok = tok.detokenizer(skip_special=False)
            want = text.replace(SPM_SPACE, " ") if spm else text
            assert "".join(detok.feed(i) for i in ids) + detok.flush() == want, (text, ids)
    elif mode == 1:  # text with specials parsed, BOS/EOS as the file says
        text = fdp.ConsumeUnicodeNoSurrogates(MAX_TEXT)
        ids = tok.encode(text, special=True)
        _check_ids(tok, ids)
        tok.decode(ids)
    elif mode == 2:  # raw bytes: valid UTF-8 encodes, anything else is a TokenizerError
        raw = fdp.ConsumeBytes(MAX_TEXT)
        try:
            ids = tok.encode(raw, add_bos=False)
        except TokenizerError:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return
            raise
        _check_ids(tok, ids)
        assert tok.decode(ids, skip_special=False) == _kept(raw, dropped, spm), (raw, ids)
    else:  # any ids, in range or not
        ids = [fdp.ConsumeIntInRange(-2, tok.n_vocab + 2) for _ in range(fdp.ConsumeIntInRange(0, 64))]
        try:
            whole = tok.decode(ids, skip_special=bool(ids and ids[0] % 2))
        except LaminaError:
            assert any(not 0 <= i < tok.n_vocab for i in ids), ids
            return
        detok = tok.detokenizer(skip_special=bool(ids and ids[0] % 2))
        streamed = "".join(detok.feed(i) for i in ids) + detok.flush()
        assert streamed == whole.decode("utf-8", "replace"), (ids, streamed, whole)
