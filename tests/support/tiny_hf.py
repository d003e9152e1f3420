"""Random tiny Hugging Face checkpoints of each architecture lamina converts,
built by transformers from a config: the real module structure (4 layers,
64 wide), random weights, and the tokenizer files of a real checkpoint of the
same family (transformers 5 picks the tokenizer class by model type, and
llama.cpp's converter recognizes the pre-tokenizer by its output). They are the input of
the per-architecture tests: `lamina convert` against llama.cpp's
convert_hf_to_gguf.py (+ llama-quantize), and lamina's logits against
transformers' on the same weights.

Weights are redrawn with scales that keep logits far from flat: matrices
~N(0, 1/fan_in), embeddings ~N(0, 1), norm weights 1 + N(0, 0.2), biases
N(0, 0.5); otherwise transformers' 0.02 init makes every logit ~0 and an
error in the forward pass invisible.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from support.tiny_checkpoints import TOKENIZER_FILES

# the config every case starts from (vocab_size: the tokenizer's checkpoint's);
# head_dim 16 = hidden / heads
COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": None,  # SmolLM3's default (128004) lies outside a small vocabulary
}

SMOL, QWEN, GEMMA = "smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m"  # support.hf_checkpoints names

# model_type -> (whose tokenizer, what differs from COMMON); the HF class is
# the model_type's *ForCausalLM
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": (SMOL, {"rope_theta": 10000.0}),
    "qwen2": (QWEN, {"rope_theta": 1e6, "tie_word_embeddings": True}),
    # head_dim wider than hidden / heads, as Qwen3 checkpoints have it
    "qwen3": (QWEN, {"rope_theta": 1e6, "head_dim": 32}),
    # every multiplier away from 1, so each one shows if it is dropped
    "granite": (
        SMOL,
        {"embedding_multiplier": 4.0, "attention_multiplier": 0.05, "residual_multiplier": 0.3, "logits_scaling": 2.5},
    ),
    # 4 layers: the last one has no rope
    "smollm3": (SMOL, {"rope_theta": 2e6}),
    "olmo2": (SMOL, {"rope_theta": 5e5}),
    # LongRoPE: a 512-position model trained at 64 (attention factor sqrt(1.5)); the tests'
    # contexts stay at 64, where llama.cpp and transformers both take the short factors
    "phi3": (
        SMOL,
        {
            "original_max_position_embeddings": 64,
            "rope_parameters": {
                "rope_type": "longrope",
                "rope_theta": 10000.0,
                "original_max_position_embeddings": 64,
                "short_factor": [1.0, 1.1, 1.3, 1.0, 1.6, 2.0, 1.2, 1.05],
                "long_factor": [1.0, 2.0, 3.5, 5.0, 8.0, 12.0, 20.0, 30.0],
            },
        },
    ),
    # 8 experts, 2 a token; llama.cpp always renormalizes the 2 weights, as norm_topk_prob does
    "qwen3_moe": (
        QWEN,
        {
            "head_dim": 32,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "norm_topk_prob": True,
        },
    ),
    # gpt-oss: 8 experts, 2 a token, biases everywhere, attention sinks, every
    # other layer slides over a window shorter than the test's 40 tokens; YaRN
    # with truncate (llama.cpp always rounds the ramp's ends, as truncate does)
    "gpt_oss": (
        QWEN,
        {
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "intermediate_size": 32,
            "head_dim": 16,
            "sliding_window": 8,
            "max_position_embeddings": 2048,  # original_max_position_embeddings * factor
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 150000.0,
                "factor": 32.0,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": True,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    # a window shorter than the test's 40 tokens, and soft-caps tight enough to bend
    "gemma2": (
        GEMMA,
        {
            "head_dim": 32,
            "query_pre_attn_scalar": 32,  # llama.cpp scales by 1/sqrt(head_dim) below 27B
            "sliding_window": 8,
            "attn_logit_softcapping": 5.0,
            "final_logit_softcapping": 10.0,
            "tie_word_embeddings": True,
        },
    ),
}

# checkpoints only some tests build (not in the per-architecture matrix of test_arch_checkpoints)
MORE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    # 6 layers: llama.cpp's fixed pattern makes the last one global, the others slide over a
    # window shorter than the tests' 40 tokens
    "gemma3_text": (
        GEMMA,
        {
            "num_hidden_layers": 6,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,  # llama.cpp scales by 1/sqrt(head_dim) below 27B
            "sliding_window": 8,
            "tie_word_embeddings": True,
        },
    ),
}

# llama.cpp's phi3 converter reads a GPT2Tokenizer (Phi-4's) as BPE
TOKENIZER_CLASS = {"phi3": "GPT2Tokenizer"}


def tiny_hf_checkpoint(model_type: str, directory: Path, seed: int = 0, extra: dict[str, Any] | None = None) -> Path:
    """Write the case's checkpoint (config.json, model.safetensors, tokenizer) into
    directory; extra: config values over the case's (e.g. more heads)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from support.hf_checkpoints import hf_checkpoint

    source_name, overrides = (CASES | MORE_CASES)[model_type]
    source = hf_checkpoint(source_name)
    n_vocab = json.loads((source / "config.json").read_text())["vocab_size"]
    config = AutoConfig.for_model(model_type, **(COMMON | {"vocab_size": n_vocab} | overrides | (extra or {})))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(_draw(name, tuple(p.shape)))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    for name in (*TOKENIZER_FILES, "tokenizer.model"):
        if (source / name).is_file():
            shutil.copy(source / name, directory / name)
    if model_type in TOKENIZER_CLASS:
        tok_cfg = json.loads((directory / "tokenizer_config.json").read_text())
        tok_cfg["tokenizer_class"] = TOKENIZER_CLASS[model_type]
        (directory / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    # a config that names its class, as every real checkpoint does
    cfg = json.loads((directory / "config.json").read_text())
    assert cfg["architectures"] == [type(model).__name__], cfg["architectures"]
    return directory


def _draw(name: str, shape: tuple[int, ...]):
    import torch

    if name.endswith("norm.weight"):
        return 1.0 + 0.2 * torch.randn(shape)
    if name.endswith((".bias", "_bias")):
        return 0.5 * torch.randn(shape)
    if name.endswith((".gate_up_proj", ".down_proj")) and len(shape) == 3:
        return torch.randn(shape) / math.sqrt(shape[-2])  # gpt-oss experts: [n_expert, in, out]
    if "embed_tokens" in name:
        return torch.randn(shape)
    return torch.randn(shape) / math.sqrt(shape[-1])
