"""A tiny random llama checkpoint in Hugging Face's layout (config.json,
model.safetensors, SmolLM2's tokenizer files), for converter tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

N_LAYER, N_EMBD, N_HEAD, N_KV, N_FF, N_VOCAB = 2, 256, 4, 2, 512, 49152
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": N_EMBD,
    "intermediate_size": N_FF,
    "num_attention_heads": N_HEAD,
    "num_key_value_heads": N_KV,
    "num_hidden_layers": N_LAYER,
    "vocab_size": N_VOCAB,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "head_dim": N_EMBD // N_HEAD,
    "tie_word_embeddings": True,
    "dtype": "float32",
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hd = N_EMBD // N_HEAD
    w = {"model.embed_tokens.weight": (N_VOCAB, N_EMBD), "model.norm.weight": (N_EMBD,)}
    for i in range(N_LAYER):
        p = f"model.layers.{i}."
        w |= {
            p + "self_attn.q_proj.weight": (N_HEAD * hd, N_EMBD),
            p + "self_attn.k_proj.weight": (N_KV * hd, N_EMBD),
            p + "self_attn.v_proj.weight": (N_KV * hd, N_EMBD),
            p + "self_attn.o_proj.weight": (N_EMBD, N_HEAD * hd),
            p + "mlp.gate_proj.weight": (N_FF, N_EMBD),
            p + "mlp.up_proj.weight": (N_FF, N_EMBD),
            p + "mlp.down_proj.weight": (N_EMBD, N_FF),
            p + "input_layernorm.weight": (N_EMBD,),
            p + "post_attention_layernorm.weight": (N_EMBD,),
        }
    # bf16-representable values, so f32/f16/bf16 checkpoints hold the same numbers
    return {k: round_bf16(rng.standard_normal(s).astype(np.float32) * 0.05) for k, s in w.items()}


def round_bf16(x: np.ndarray) -> np.ndarray:
    return (x.view(np.uint32) & 0xFFFF0000).view(np.float32)


def make_checkpoint(
    directory: Path, source: Path, config: dict | None = None, weights: dict[str, np.ndarray] | None = None
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or CONFIG))
    save_file(weights if weights is not None else random_weights(), str(directory / "model.safetensors"))
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, directory / name)
    return directory
