"""Tokenizer metadata: what llama.cpp's converter writes for a checkpoint.

- SPM (tokenizer.model, read with sentencepiece): pieces, scores and token
  types (normal, unknown, control, unused, byte), then added tokens from
  added_tokens.json / tokenizer_config.json, padded to the config's vocab_size.
- BPE (tokenizer.json, read with `tokenizers`): tokens by id, added tokens
  marked control or user-defined, merges, and `tokenizer.ggml.pre`: llama.cpp
  names the pre-tokenizer by hashing the token ids of a probe string, so the
  same hash table is kept here (the rows llama.cpp's converter carries for the
  tokenizers lamina runs).
- Special ids, add_bos/add_eos, merges and the chat template come from gguf-py's
  SpecialVocab, the class llama.cpp's converter itself uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from lamina.convert.errors import VocabError
from lamina.convert.hf.arch import HFConfig

# The probe string llama.cpp's convert_hf_to_gguf_update.py tokenizes.
PRE_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 "  # noqa: E501
    "3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на "  # noqa: E501
    "Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "  # noqa: E501
    "'D you like some tea? We'Ve a'lL"
)

# sha256(str(token ids of PRE_PROBE)) -> tokenizer.ggml.pre (from llama.cpp's table)
PRE_BY_HASH: dict[str, str] = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 .. Qwen2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    # bert-base-uncased's WordPiece (BGE, MiniLM): llama.cpp's table lists it as
    # bert-bge, then again as jina-v2-en, and the last match wins
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
}

# SentencePiece token types as GGUF stores them
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_SPM_SPACE = "\u2581"


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: "llama" (SPM) or "gpt2" (BPE)
    pre: str
    tokens: Sequence[str] | Sequence[bytes]  # bytes from SentencePiece, str from tokenizer.json
    toktypes: list[int]
    scores: list[float] | None
    special: gguf.SpecialVocab
    # keys llama.cpp adds around the vocabulary for some architectures
    add_space_prefix_before: bool | None = None
    add_space_prefix_after: bool | None = None
    add_bos_after: bool | None = None
    # bert: token type embeddings' count (before the model key), and the
    # tokenizer.json normalizer's flags (after the special tokens)
    token_type_count: int | None = None
    normalizer: dict[str, bool] = field(default_factory=dict)

    @property
    def n_real(self) -> int:
        return len(self.tokens)

    def write(self, w: gguf.GGUFWriter) -> None:
        if self.token_type_count is not None:
            w.add_token_type_count(self.token_type_count)
        if self.add_space_prefix_before is not None:
            w.add_add_space_prefix(self.add_space_prefix_before)
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.toktypes)
        self.special.add_to_gguf(w, quiet=True)
        for key, value in self.normalizer.items():
            w.add_bool(key, value)
        if self.add_space_prefix_after is not None:
            w.add_add_space_prefix(self.add_space_prefix_after)
        if self.add_bos_after is not None:
            w.add_add_bos_token(self.add_bos_after)


def load_vocab(directory: Path, hp: HFConfig) -> Vocab:
    """The vocabulary the way llama.cpp's converter picks it for the architecture."""
    arch = hp.arch.model_arch
    has_spm = (directory / "tokenizer.model").is_file()
    if not has_spm and not (directory / "tokenizer.json").is_file():
        raise VocabError(f"{directory}: no tokenizer.model or tokenizer.json")
    if hp.arch.llama_family:
        prefix = _tokenizer_config(directory).get("add_prefix_space")
        vocab = _spm_vocab(directory, hp) if has_spm else _llama_hf_vocab(directory) or _bpe_vocab(directory, hp)
        vocab.add_space_prefix_before = prefix
        if hp.cfg.get("vocab_size", 32000) == 49152:  # llama.cpp: granite-small vocabularies never add BOS
            vocab.add_bos_after = False
        return vocab
    if arch == gguf.MODEL_ARCH.PHI3:
        # llama.cpp: a GPT2Tokenizer (Phi-4) is BPE; else its own SentencePiece reading
        if _tokenizer_config(directory).get("tokenizer_class") == "GPT2Tokenizer":
            return _bpe_vocab(directory, hp)
        if not has_spm:
            raise VocabError(f"{directory}: phi3 needs tokenizer.model (or a GPT2Tokenizer tokenizer.json)")
        return _phi3_spm_vocab(directory, hp)
    if arch == gguf.MODEL_ARCH.BERT:
        return _wordpiece_vocab(directory, hp)
    if has_spm:
        vocab = _spm_vocab(directory, hp)
        if arch in (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3):
            vocab.add_space_prefix_after = False
        return vocab
    return _bpe_vocab(directory, hp)


# -- SentencePiece ------------------------------------------------------------


def _spm_pieces(directory: Path, hp: HFConfig) -> tuple[list[bytes], list[float], list[int]]:
    """tokenizer.model's pieces, scores and types, padded with [PADi] to config.json's vocab_size."""
    from sentencepiece import SentencePieceProcessor

    path = directory / "tokenizer.model"
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise VocabError(f"{path}: not a sentencepiece model: {' '.join(str(e).split())}") from None
    n = int(hp.cfg.get("vocab_size") or sp.vocab_size())
    if sp.vocab_size() > n:  # llama.cpp's converter fails on it too
        raise VocabError(f"{path}: {sp.vocab_size()} pieces, more than config.json's vocab_size {n}")
    tokens: list[bytes] = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(sp.vocab_size()):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (
            UNKNOWN
            if sp.IsUnknown(i)
            else CONTROL
            if sp.IsControl(i)
            else UNUSED
            if sp.IsUnused(i)
            else BYTE
            if sp.IsByte(i)
            else NORMAL
        )
    return tokens, scores, types


def _added_tokens_file(directory: Path, tokens: list[bytes], scores: list[float], types: list[int]) -> None:
    """added_tokens.json's tokens as user-defined (ids past the vocabulary skipped, as llama.cpp does)"""
    added_file = directory / "added_tokens.json"
    if added_file.is_file():
        for text, i in _json(added_file).items():
            if isinstance(i, int) and 0 <= i < len(tokens):
                tokens[i], scores[i], types[i] = text.encode("utf-8"), -1000.0, USER_DEFINED


def _spm_vocab(directory: Path, hp: HFConfig) -> Vocab:
    tokens, scores, types = _spm_pieces(directory, hp)
    n = len(tokens)
    _added_tokens_file(directory, tokens, scores, types)
    for key, data in _tokenizer_config(directory).get("added_tokens_decoder", {}).items():
        i, text = int(key), data["content"]
        if i >= n:
            continue
        if data.get("special") or _looks_special(text):
            types[i] = CONTROL
        else:
            text = text.replace(_SPM_SPACE, " ")
            types[i] = USER_DEFINED
        scores[i], tokens[i] = -1000.0, text.encode("utf-8")
    return Vocab("llama", "default", tokens, types, scores, gguf.SpecialVocab(directory, n_vocab=len(tokens)))


def _phi3_spm_vocab(directory: Path, hp: HFConfig) -> Vocab:
    """llama.cpp's Phi3MiniModel reading: the pieces and added_tokens.json as
    above, then the added tokens of tokenizer_config.json (added_tokens_decoder)
    and of tokenizer.json, each control when marked special and user-defined
    otherwise, as written (no heuristics, no U+2581 -> space)."""
    tokens, scores, types = _spm_pieces(directory, hp)
    _added_tokens_file(directory, tokens, scores, types)
    config_path, json_path = directory / "tokenizer_config.json", directory / "tokenizer.json"
    from_json = _json(json_path).get("added_tokens", []) if json_path.is_file() else []
    sources = [
        (config_path, list(_tokenizer_config(directory).get("added_tokens_decoder", {}).items())),
        (json_path, [(d.get("id") if isinstance(d, dict) else None, d) for d in from_json]),
    ]
    for path, entries in sources:
        for key, data in entries:
            try:
                i, text = int(key), str(data["content"])
            except (TypeError, ValueError, KeyError, IndexError):
                raise VocabError(f"{path}: added token {key!r}: expected an integer id and a content") from None
            if not 0 <= i < len(tokens):
                raise VocabError(f"{path}: added token id {i} is outside config.json's vocab_size {len(tokens)}")
            tokens[i], scores[i] = text.encode("utf-8"), -1000.0
            types[i] = CONTROL if data.get("special") else USER_DEFINED
    return Vocab("llama", "default", tokens, types, scores, gguf.SpecialVocab(directory, n_vocab=len(tokens)))


def _llama_hf_vocab(directory: Path) -> Vocab | None:
    """A SentencePiece-style tokenizer.json without tokenizer.model (gguf-py's
    LlamaHfVocab); None when it is a byte-level BPE one, as llama.cpp decides."""
    try:
        hf = gguf.LlamaHfVocab(directory)
    except (FileNotFoundError, TypeError):
        return None
    tokens, scores, types = [], [], []
    for text, score, toktype in hf.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(int(toktype))
    return Vocab("llama", "default", tokens, types, scores, gguf.SpecialVocab(directory, n_vocab=len(tokens)))


# -- BPE ----------------------------------------------------------------------


def _bpe_vocab(directory: Path, hp: HFConfig) -> Vocab:
    path = directory / "tokenizer.json"
    tok = _read_tokenizer_json(path)
    tokens, types = _hf_tokens(tok, hp, path)
    return Vocab("gpt2", _pre_name(tok, path), tokens, types, None, gguf.SpecialVocab(directory, load_merges=True))


def _read_tokenizer_json(path: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise VocabError(f"{path}: unreadable tokenizer: {' '.join(str(e).split())}") from None


def _hf_tokens(tok: Any, hp: HFConfig, path: Path) -> tuple[list[str], list[int]]:
    """Tokens by id and their types, as llama.cpp's get_vocab_base reads a tokenizer.json."""
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = tok.get_added_tokens_decoder()
    n = int(hp.cfg.get("vocab_size") or len(by_id))
    if max(by_id) >= n:
        raise VocabError(f"{path}: token id {max(by_id)} is outside config.json's vocab_size {n}")

    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        text = by_id[i]
        if i in added:
            a = added[i]
            if not a.normalized:
                # llama.cpp assumes control/user tokens are pre-normalized
                text = tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
            if a.special or _looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace(_SPM_SPACE, " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    return tokens, types


def _wordpiece_vocab(directory: Path, hp: HFConfig) -> Vocab:
    """BERT's WordPiece as llama.cpp's BertModel writes it: "phantom space"
    tokens (a word-initial piece gets a leading U+2581, a "##" continuation
    loses its "##", control tokens stay as they are)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise VocabError(f"{directory}: a bert checkpoint needs tokenizer.json (BertTokenizerFast's)")
    tok = _read_tokenizer_json(path)
    tokens, types = _hf_tokens(tok, hp, path)
    tokens = [
        t if kind == CONTROL else t[2:] if t.startswith("##") else _SPM_SPACE + t for t, kind in zip(tokens, types)
    ]
    vocab = Vocab("bert", _pre_name(tok, path), tokens, types, None, gguf.SpecialVocab(directory, n_vocab=len(tokens)))
    vocab.token_type_count = int(hp.cfg.get("type_vocab_size", 1))
    vocab.normalizer = _normalizer_flags(_json(path).get("normalizer") or {})
    return vocab


def _normalizer_flags(spec: dict[str, Any]) -> dict[str, bool]:
    """tokenizer.ggml.normalizer.* from a tokenizer.json normalizer (newer
    gguf-py's SpecialVocab writes them; the pinned one does not)."""
    flags: dict[str, bool] = {}
    kind = spec.get("type")
    if kind == "Lowercase":
        flags["lowercase"] = True
    elif kind == "StripAccents":
        flags["strip_accents"] = True
    elif kind == "BertNormalizer":
        for key in ("lowercase", "strip_accents"):
            if spec.get(key) is not None:
                flags[key] = bool(spec[key])
    elif kind == "Sequence":
        for sub in spec.get("normalizers", []):
            flags.update(_normalizer_flags(sub))
    return {f"tokenizer.ggml.normalizer.{k}": flags[k] for k in ("lowercase", "strip_accents") if k in flags}


def _pre_name(tok: Any, path: Path) -> str:
    digest = sha256(str(tok.encode(PRE_PROBE).ids).encode()).hexdigest()
    if digest not in PRE_BY_HASH:
        raise VocabError(
            f"{path}: unknown BPE pre-tokenizer (probe hash {digest}); "
            f"known: {', '.join(sorted(set(PRE_BY_HASH.values())))}"
        )
    return PRE_BY_HASH[digest]


def _looks_special(text: str) -> bool:
    """llama.cpp's heuristic for added tokens that ought to be control tokens."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer_config.json"
    return _json(path) if path.is_file() else {}


def _json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VocabError(f"{path}: unreadable: {' '.join(str(e).split())}") from None
