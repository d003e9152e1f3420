"""A tiny Phi-3 checkpoint with a SentencePiece vocabulary, built offline:
sentencepiece trains an 800-piece BPE tokenizer.model (byte fallback, split
digits, no whitespace normalization: Llama 2's, and so Phi-3's, settings) on
the tokenizer corpus, and the tokenizer files are laid out as Phi-3-mini's
repository has them: the pieces, then Phi-3's eleven added tokens right after
them (added_tokens.json, tokenizer_config.json's added_tokens_decoder,
tokenizer.json's added_tokens), `</s>` not special, config.json's vocab_size
padded past them (32064 for 32011 tokens there; 832 for 811 here).

The same tokenizer.model alone stands in for a Gemma vocabulary
(spm_vocabulary): llama.cpp's gemma converters read it as they read Gemma's,
in a file a few hundred times smaller than one with Gemma's 262k tokens."""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path

from support.tiny_hf import tiny_hf_checkpoint
from support.tokenizer_corpus import CORPUS, LONG_TEXT

N_PIECES, N_VOCAB = 800, 832
# Phi-3's added tokens, in its order, from id N_PIECES on
PHI3_ADDED = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
]
# Phi-3.5-mini-instruct's chat template
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@functools.cache
def train_tokenizer_model() -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter("\n".join([*CORPUS, LONG_TEXT]).splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=N_PIECES,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _added(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": True, "single_word": False} | {
        "special": special
    }


def phi3_spm_checkpoint(directory: Path, seed: int = 0) -> Path:
    """The tiny phi3 of tests/support/tiny_hf.py with the SentencePiece vocabulary above."""
    from transformers import AutoTokenizer

    tiny_hf_checkpoint("phi3", directory, seed=seed, extra={"vocab_size": N_VOCAB})
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    (directory / "tokenizer.model").write_bytes(train_tokenizer_model())
    added = {N_PIECES + k: t for k, t in enumerate(PHI3_ADDED)}
    (directory / "added_tokens.json").write_text(json.dumps({t: i for i, t in added.items()}))
    decoder = {0: _added("<unk>", True), 1: _added("<s>", True), 2: _added("</s>", False)}
    decoder |= {i: _added(t, True) for i, t in added.items()}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "bos_token": "<s>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(i): d for i, d in decoder.items()},
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # tokenizer.json as transformers makes it from these files (its own
    # tokenizer_config.json format differs, so only tokenizer.json is kept)
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(directory).save_pretrained(tmp)
        (directory / "tokenizer.json").write_bytes((Path(tmp) / "tokenizer.json").read_bytes())
    return directory


def spm_vocabulary(directory: Path) -> Path:
    """A checkpoint's tokenizer files replaced by the tokenizer.model above
    alone (build the checkpoint with vocab_size N_PIECES)."""
    for f in directory.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            f.unlink()
    (directory / "tokenizer.model").write_bytes(train_tokenizer_model())
    return directory
