"""Random tiny BERT checkpoints (a sentence-transformers embedding model and a
cross-encoder), built by transformers from a config, with a real WordPiece
vocabulary: bert-base-uncased's (BGE's), rebuilt as a vocab.txt from llama.cpp's
ggml-vocab-bert-bge.gguf test file (tokens stored "phantom space" style: a
word start is "\u2581" + piece, a continuation the bare piece, where vocab.txt
writes "##" + piece). llama.cpp's converter recognizes that vocabulary's
pre-tokenizer ("bert-bge") by its output, so it converts these checkpoints.

Weights are redrawn as tests/support/tiny_hf.py does (matrices ~N(0, 1/fan_in),
embeddings ~N(0, 1), LayerNorm weights 1 + N(0, 0.2), biases N(0, 0.5)) so
embeddings and scores are far from flat.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lamina.gguf.reader import GGUFFile
from lamina.model_cache import cache_dir
from support.vocab_vectors import vocab_tests_dir

VERSION = 1  # bump when CONFIG or the weights' draw change: cached checkpoints are rebuilt

CONTROL = 3
CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}


def bert_vocab_txt(path: Path) -> Path:
    """bert-base-uncased's vocab.txt, from the phantom-space tokens of llama.cpp's vocab file."""
    f = GGUFFile(vocab_tests_dir() / "ggml-vocab-bert-bge.gguf")
    tokens, types = f.metadata["tokenizer.ggml.tokens"], f.metadata["tokenizer.ggml.token_type"]
    lines = []
    for tok, kind in zip(tokens, types):
        if kind == CONTROL or tok.startswith("[") and tok.endswith("]"):
            lines.append(tok)
        elif tok.startswith("\u2581"):
            lines.append(tok[1:])
        else:
            lines.append("##" + tok)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cached_tiny_bert(kind: str) -> Path:
    """tiny_bert_checkpoint(kind) built once into the cache (so llama.cpp's
    conversion of it, support.llama_cpp_ref.reference_gguf, is cached too)."""
    import shutil
    import tempfile

    from support.publish import publish_dir

    target = cache_dir() / "tiny-bert" / f"{kind}-v{VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        tiny_bert_checkpoint(kind, tmp / "ckpt")
        publish_dir(tmp / "ckpt", target, "config.json")  # whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_bert_checkpoint(kind: str, directory: Path, seed: int = 0) -> Path:
    """kind: "mean" or "cls" (a BertModel with sentence-transformers' pooling
    files), or "rerank" (a BertForSequenceClassification with one label)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerFast(vocab=str(bert_vocab_txt(directory / "vocab.txt")), do_lower_case=True)
    config = BertConfig(vocab_size=len(tok.get_vocab()), **CONFIG)
    torch.manual_seed(seed)
    if kind == "rerank":
        config.num_labels = 1
        model: Any = BertForSequenceClassification(config)
    else:
        model = BertModel(config, add_pooling_layer=False)
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(_draw(name, tuple(p.shape)))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    if kind in ("mean", "cls"):
        (directory / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]
            )
        )
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": CONFIG["hidden_size"],
                    "pooling_mode_cls_token": kind == "cls",
                    "pooling_mode_mean_tokens": kind == "mean",
                }
            )
        )
    return directory


def _draw(name: str, shape: tuple[int, ...]):
    import torch

    if "LayerNorm.weight" in name:
        return 1.0 + 0.2 * torch.randn(shape)
    if name.endswith(".bias"):
        return 0.5 * torch.randn(shape)
    if "embeddings" in name:
        return torch.randn(shape)
    return torch.randn(shape) / math.sqrt(shape[-1])
