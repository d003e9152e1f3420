"""Byte-level BPE (`tokenizer.ggml.model` == "gpt2") on HF `tokenizers`.

The vocabulary and merges come straight from the GGUF; the pre-tokenizer is
rebuilt from `tokenizer.ggml.pre` as the list of split regexes llama.cpp uses
for that name (llm_tokenizer_bpe in src/llama-vocab.cpp): each regex cuts
every piece the previous one left, keeping matches and the gaps between them
(HF's Split "isolated"), then bytes are spelled in GPT-2's byte alphabet.
Special tokens are never given to `tokenizers`; the caller cuts them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from lamina.tokenizer.vocab import TokenType, UnsupportedTokenizerError, Vocab

_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Written as escapes: several of these characters change under NFC, which editors apply.
_DEEPSEEK_LLM_LETTERS = (
    "A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
    "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
    "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4"
    "\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
    "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943"
)
_DEEPSEEK_PUNCT = "!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002"
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"


@dataclass(frozen=True)
class PreTokenizer:
    splits: tuple[str, ...]  # applied in order, each an isolated split
    ignore_merges: bool = False  # a whole pre-token that is in the vocab stays whole


_GPT2_PRE = PreTokenizer((_GPT2,))
_STARCODER_PRE = PreTokenizer((r"\p{N}", _GPT2))
_LLAMA3_PRE = PreTokenizer((_LLAMA3,), ignore_merges=True)
_QWEN2_PRE = PreTokenizer((_QWEN2,))

# Names as llama.cpp spells them in `tokenizer.ggml.pre`; only those whose
# behaviour is checked against llama.cpp's vocab test vectors (or share one
# split list and flags with such a name) are here.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]")),
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"), _GPT2_PRE),
    **dict.fromkeys(
        ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"), _STARCODER_PRE
    ),
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"),
        _LLAMA3_PRE,
    ),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
    **dict.fromkeys(
        ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"), _QWEN2_PRE
    ),
    "qwen35": PreTokenizer((_QWEN35,)),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]")),
    "deepseek-llm": PreTokenizer(
        (
            "[\r\n]",
            rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+",
            rf"\s?[{_DEEPSEEK_PUNCT}]+",
            r"\s+$",
            _CJK,
            r"\p{N}+",
        )
    ),
    "deepseek-coder": PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}")),
}


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's spelling of each byte as a printable character."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    spelling = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in spelling)
    spelling.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return spelling


@cache
def _unspell_table() -> dict[int, int]:
    """str.translate table taking GPT-2's byte spelling back to chr(byte).

    Code points below 256 that are not part of the spelling go to U+FFFF so
    that the latin-1 encode after translating fails on them too.
    """
    table = dict.fromkeys(range(256), 0xFFFF)
    table.update({ord(c): b for b, c in byte_to_unicode().items()})
    return table


def pre_tokenizer_for(name: str) -> PreTokenizer:
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise UnsupportedTokenizerError(
            f"unsupported pre-tokenizer {name!r}; supported: {', '.join(sorted(PRE_TOKENIZERS))}"
        ) from None


class BPETokenizer:
    """Text without special tokens -> ids, for one byte-level BPE vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        pre = pre_tokenizer_for(vocab.pre)
        token_ids = {t: i for i, t in enumerate(vocab.tokens)}
        # llama.cpp splits a merge at the first space after its first character.
        pairs = [(m[:c], m[c + 1 :]) for m in vocab.merges or () if (c := m.find(" ", 1)) > 0]
        # tokenizers refuses merges whose parts or result are not tokens; llama.cpp
        # would merge and then fall back to bytes, which a sane vocabulary never needs.
        pairs = [p for p in pairs if p[0] in token_ids and p[1] in token_ids and p[0] + p[1] in token_ids]
        model = models.BPE(vocab=token_ids, merges=pairs, ignore_merges=pre.ignore_merges)
        self._hf = Tokenizer(model)
        self._hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
        )
        self._pieces = [_piece(t, k) for t, k in zip(vocab.tokens, vocab.types.tolist())]

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def piece(self, token_id: int) -> bytes:
        """The bytes a token stands for (special tokens: their text)."""
        return self._pieces[token_id]


def _piece(text: str, kind: int) -> bytes:
    # As llama.cpp's token_to_piece; UNUSED and unknown types render as nothing.
    if kind == TokenType.NORMAL:
        return _unspell(text)
    if kind == TokenType.BYTE:
        return bytes([int(text[3:5], 16)])
    if kind in (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED):
        return text.encode()
    return b""


def _unspell(text: str) -> bytes:
    """The bytes a GPT-2-spelled token stands for."""
    try:
        return text.translate(_unspell_table()).encode("latin-1")
    except UnicodeEncodeError:
        # A character outside GPT-2's byte alphabet cannot come from BPE; keep its UTF-8.
        spelled = {ord(c): b for b, c in byte_to_unicode().items()}
        return b"".join(bytes([spelled[ord(c)]]) if ord(c) in spelled else c.encode() for c in text)
