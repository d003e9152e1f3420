"""The vocabulary a GGUF file describes, read the way llama.cpp reads it.

Everything the tokenizers need from `tokenizer.ggml.*` is gathered here once:
token texts and types, scores, merges, the special ids with llama.cpp's
per-model defaults, the add_bos/add_eos/add_space_prefix flags, the set of
end-of-generation ids, and the tokens that are cut out of text whole before
the BPE/SPM algorithm sees it (llama.cpp's `tokenizer_st_partition`).
Mirrors `llama_vocab::impl::load` in llama.cpp's src/llama-vocab.cpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from lamina.errors import LaminaError

KEY = "tokenizer.ggml."


class TokenizerError(LaminaError, ValueError):
    """The tokenizer metadata is missing, malformed or inconsistent."""


class UnsupportedTokenizerError(TokenizerError):
    """The metadata is fine, but lamina does not implement this tokenizer."""


class TokenType(IntEnum):
    """GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Token texts llama.cpp treats as end of generation whatever the file says
# (llama-vocab.cpp, "maintain a list of tokens that cause end-of-generation").
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    }
)
# FIM tokens that also end a generation (llama.cpp: fim_pad, fim_rep, fim_sep):
# tokenizer.ggml.fim_{role}_token_id, else the first of these texts found.
FIM_EOG_TEXTS = {
    "pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "sep": ("<|file_sep|>",),
}
# The first of these found becomes the end-of-turn id when the file names none.
EOT_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
# Supported pre-tokenizer names after which llama.cpp adds BOS by default (BPE only).
BPE_ADD_BOS_PRE = frozenset(
    {
        "llama3",
        "llama-v3",
        "llama-bpe",
        "falcon3",
        "falcon-h1",
        "pixtral",
        "midm-2.0",
        "lfm2",
        "jina-v5-nano",
    }
)
# Tokens cut out of text before tokenizing; CONTROL/UNKNOWN only when parsing specials.
PARTITION_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)


@dataclass(frozen=True, eq=False)
class Vocab:
    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SPM)
    pre: str  # tokenizer.ggml.pre, "default" when absent
    tokens: list[str]
    types: np.ndarray  # [n_vocab] int32 TokenType, after llama.cpp's EOG fix-ups
    scores: np.ndarray  # [n_vocab] float32, zeros when the file has none
    merges: list[str] | None  # "left right" strings, BPE only
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    eog_ids: frozenset[int]
    sep_id: int | None = None  # WordPiece: ends an input with special tokens (llama.cpp's add_special)
    rstrip_ids: frozenset[int] = frozenset()  # cut out, they drop the whitespace after them (RSTRIP)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Vocab:
        model = _require(meta, "model", str)
        tokens = [str(t) for t in _require(meta, "tokens", (list, tuple, np.ndarray))]
        n = len(tokens)
        if n == 0:
            raise TokenizerError(f"{KEY}tokens: the vocabulary is empty")
        # llama.cpp renames empty tokens so that every text maps back to one id.
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        if len(set(tokens)) != n:
            raise TokenizerError(f"{KEY}tokens: token texts are not unique")
        _require_utf8(tokens, "tokens")
        types = _array(meta, "token_type", n, np.int32, default=TokenType.NORMAL)
        scores = _array(meta, "scores", n, np.float32, default=0.0)
        merges = meta.get(KEY + "merges")
        merges = None if merges is None else [str(m) for m in merges]
        if merges is not None:
            _require_utf8(merges, "merges")
        pre = str(meta.get(KEY + "pre") or "default")

        bos: int | None
        eos: int | None
        unk: int | None
        if model == "llama":
            bos, eos, unk = 1, 2, 0
            add_bos, add_space_prefix = True, True
        elif model == "gpt2":
            if merges is None:
                raise TokenizerError(f"{KEY}merges: required for a BPE (gpt2) vocabulary, not found")
            bos, eos, unk = 11, 11, None  # llama.cpp's defaults, from its GPT-NeoX days
            add_bos, add_space_prefix = pre in BPE_ADD_BOS_PRE, False
        elif model == "bert":
            bos, eos, unk = 101, None, 100  # llama.cpp's WPM defaults ([CLS], none, [UNK])
            add_bos, add_space_prefix = True, True
        else:
            raise UnsupportedTokenizerError(
                f"{KEY}model: unsupported tokenizer model {model!r}; "
                "supported: 'gpt2' (BPE), 'llama' (SPM), 'bert' (WordPiece)"
            )
        bos = _special_id(meta, "bos_token_id", bos, n)
        eos = _special_id(meta, "eos_token_id", eos, n)
        unk = _special_id(meta, "unknown_token_id", unk, n)
        eot = _special_id(meta, "eot_token_id", None, n)
        eom = _special_id(meta, "eom_token_id", None, n)
        add_bos = _flag(meta, "add_bos_token", add_bos)
        add_eos = _flag(meta, "add_eos_token", False)
        add_space_prefix = _flag(meta, "add_space_prefix", add_space_prefix)

        types = types.copy()
        if eot is None:
            index = {t: i for i, t in enumerate(tokens) if t in EOT_TEXTS}
            eot = next((index[t] for t in EOT_TEXTS if t in index), None)
        eog = {i for i, t in enumerate(tokens) if t in EOG_TEXTS}
        # llama.cpp makes these control tokens, whatever the file says.
        types[list(eog)] = TokenType.CONTROL
        fim_end = _fim_end(meta, tokens)
        types[list(fim_end)] = TokenType.CONTROL
        eog |= fim_end | {i for i in (eos, eot, eom) if i is not None}
        message_end = _harmony_end(tokens, eog)
        types[list(message_end)] = TokenType.USER_DEFINED
        eog -= message_end
        return cls(
            model,
            pre,
            tokens,
            types,
            scores,
            merges,
            bos,
            eos,
            eot,
            unk,
            add_bos,
            add_eos,
            add_space_prefix,
            frozenset(eog),
            _special_id(meta, "seperator_token_id", 102 if model == "bert" else None, n),
            _rstrip_ids(meta, tokens, types),
        )

    def partition_ids(self, special: bool) -> list[int]:
        """Ids to cut out of raw text, longest text first (llama.cpp's cache_special_tokens)."""
        wanted = PARTITION_TYPES if special else (TokenType.USER_DEFINED,)
        ids = np.flatnonzero(np.isin(self.types, wanted)).tolist()
        return sorted(ids, key=lambda i: -len(self.tokens[i].encode()))

    def is_special(self, token_id: int) -> bool:
        """CONTROL or UNKNOWN: rendered as text only when asked for."""
        return int(self.types[token_id]) in (TokenType.CONTROL, TokenType.UNKNOWN)


def _rstrip_ids(meta: Mapping[str, Any], tokens: list[str], types: np.ndarray) -> frozenset[int]:
    """Token attributes GGUF files lack, which llama.cpp sets by general.name:
    a model named phi-3 / phi3 (Phi-3's rstrip) drops the whitespace after its
    control, user-defined and unknown tokens and `</s>`, but not after
    `<unk>`, `<s>` and `<|endoftext|>`."""
    name = str(meta.get("general.name") or "").lower()
    if "phi-3" not in name and "phi3" not in name:
        return frozenset()
    ids = set(np.flatnonzero(np.isin(types, PARTITION_TYPES)).tolist())
    index = {t: i for i, t in enumerate(tokens) if t in ("</s>", "<unk>", "<s>", "<|endoftext|>")}
    ids |= {index["</s>"]} if "</s>" in index else set()
    ids -= {index[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in index}
    return frozenset(ids)


def _fim_end(meta: Mapping[str, Any], tokens: list[str]) -> set[int]:
    """llama.cpp's FIM pad / repo / file-separator tokens (one per role)."""
    wanted = {t for texts in FIM_EOG_TEXTS.values() for t in texts}
    index = {t: i for i, t in enumerate(tokens) if t in wanted}
    out = set()
    for role, texts in FIM_EOG_TEXTS.items():
        found = _special_id(meta, f"fim_{role}_token_id", None, len(tokens))
        if found is None:
            found = next((index[t] for t in texts if t in index), None)
        if found is not None:
            out.add(found)
    return out


def _harmony_end(tokens: list[str], eog: set[int]) -> set[int]:
    # gpt-oss (harmony) and solar-open end a message with <|end|> but not the
    # generation; llama.cpp drops <|end|> from EOG when their markers are there.
    texts = {tokens[i]: i for i in eog}
    has_call = "<|call|>" in texts or "<|calls|>" in texts
    if "<|end|>" in texts and has_call and ("<|return|>" in texts or "<|flush|>" in texts):
        return {texts["<|end|>"]}
    return set()


def _require(meta: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = meta.get(KEY + name)
    if value is None:
        raise TokenizerError(f"{KEY}{name}: required key not found")
    if not isinstance(value, kind):
        raise TokenizerError(f"{KEY}{name}: expected {kind}, found {type(value).__name__}")
    return value


def _array(meta: Mapping[str, Any], name: str, n: int, dtype: type, default: float) -> np.ndarray:
    value = meta.get(KEY + name)
    if value is None:
        return np.full(n, default, dtype=dtype)
    arr: np.ndarray = np.asarray(value, dtype=dtype)
    if arr.shape != (n,):
        raise TokenizerError(f"{KEY}{name}: expected {n} entries (one per token), found {arr.size}")
    return arr


def _special_id(meta: Mapping[str, Any], name: str, default: int | None, n: int) -> int | None:
    value = meta.get(KEY + name)
    if value is None:
        # llama.cpp disables a default id the vocabulary is too small for.
        return default if default is not None and default < n else None
    if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
        raise TokenizerError(f"{KEY}{name}: expected a token id in [0, {n}), found {value!r}")
    return int(value)


def _flag(meta: Mapping[str, Any], name: str, default: bool) -> bool:
    value = meta.get(KEY + name)
    return default if value is None else bool(value)


def _require_utf8(texts: list[str], name: str) -> None:
    """GGUF strings are UTF-8; the reader keeps other bytes as surrogate escapes,
    which no tokenizer library can take (sentencepiece's proto, tokenizers)."""
    try:
        "".join(texts).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raw = t.encode("utf-8", "surrogateescape")
            raise TokenizerError(f"{KEY}{name}[{i}]: not valid UTF-8: {raw[:40]!r}") from None
