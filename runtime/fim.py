"""Fill-in-the-middle: a completion between a prefix and a suffix, for code
models trained with FIM tokens (Qwen2.5-Coder, CodeLlama, DeepSeek-Coder,
StarCoder, Granite...).

The tokens are found as llama.cpp finds them (src/llama-vocab.cpp): the
GGUF's tokenizer.ggml.fim_{pre,suf,mid}_token_id, else the first token whose
text is one of the known spellings. The prompt is llama.cpp's infill order
(tools/server's format_prompt_infill without the repository context):

    PSM (default):  [BOS] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID>
    SPM (spm_infill): [BOS] <FIM_SUF> suffix <FIM_PRE> prefix <FIM_MID>

with BOS only when the vocabulary adds one, and prefix and suffix tokenized
as plain text (special-token spellings in them stay text)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.errors import LaminaError
from lamina.tokenizer import Tokenizer

KEY = "tokenizer.ggml.fim_{}_token_id"
# llama.cpp's spellings, in its order of preference
TEXTS = {
    "pre": (
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ),
    "suf": (
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ),
    "mid": (
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ),
}


class FimError(LaminaError, ValueError):
    """A fill-in-the-middle request the model cannot serve (it has no FIM tokens)."""


@dataclass(frozen=True)
class FimTokens:
    pre: int
    suf: int
    mid: int


def fim_tokens(meta: Mapping[str, Any], tokenizer: Tokenizer) -> FimTokens | None:
    """The model's FIM tokens, or None when it lacks any of the three."""
    found = _by_text(tokenizer)
    ids = {}
    for role in ("pre", "suf", "mid"):
        value = meta.get(KEY.format(role))
        if isinstance(value, int) and 0 <= value < tokenizer.n_vocab:
            ids[role] = value
        elif role in found:
            ids[role] = found[role]
        else:
            return None
    return FimTokens(**ids)


@functools.lru_cache(maxsize=8)
def _by_text(tokenizer: Tokenizer) -> dict[str, int]:
    """Each role's token by its text, the first known spelling the vocabulary has (one pass over it)."""
    wanted = {text for texts in TEXTS.values() for text in texts}
    ids = {text: i for i, text in enumerate(tokenizer.vocab.tokens) if text in wanted}
    out = {}
    for role, texts in TEXTS.items():
        hit = next((t for t in texts if t in ids), None)
        if hit is not None:
            out[role] = ids[hit]
    return out


def require_fim(meta: Mapping[str, Any], tokenizer: Tokenizer, what: str = "suffix") -> FimTokens:
    fim = fim_tokens(meta, tokenizer)
    if fim is None:
        raise FimError(
            f"{what}: fill-in-the-middle needs a model with FIM tokens (tokenizer.ggml.fim_pre/suf/mid_token_id, "
            "or <|fim_prefix|>-style tokens in the vocabulary); this model has none"
        )
    return fim


def infill_tokens(
    tokenizer: Tokenizer, fim: FimTokens, prefix: str | list[int], suffix: str, spm: bool = False
) -> list[int]:
    """The infill prompt (module docstring); prefix may be token ids already."""
    pre = [fim.pre] + (tokenizer.encode(prefix, add_bos=False) if isinstance(prefix, str) else list(prefix))
    suf = [fim.suf] + tokenizer.encode(suffix, add_bos=False)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    return bos + (suf + pre if spm else pre + suf) + [fim.mid]
