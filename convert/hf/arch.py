"""Architectures: HF config -> GGUF hyperparameters, HF tensor -> GGUF tensor.

Mirrors what llama.cpp's converter does for llama (and its kin granite and
smollm3), qwen2, qwen3, qwen3moe, gpt-oss, phi3, gemma2, gemma3 and olmo2, so the
file it writes (as f32) and ours carry the same keys in the same order and the
same tensor values:
- names come from gguf-py's TensorNameMap for the architecture;
- llama's (granite's, smollm3's) q/k weights are permuted from HF's
  rotate-half layout back to the interleaved pairs ggml's rope expects;
- Gemma norms are stored as (1 + w), since Gemma's RMSNorm multiplies by it;
  Gemma3's token_embd loses rows past the real vocabulary;
- granite's four multipliers become {arch}.*_scale keys, gemma2's soft-caps
  {arch}.*_logit_softcapping;
- phi3's LongRoPE factor lists become rope_factors_{short,long} tensors and
  an attention factor key (right after general.architecture, as llama.cpp writes it);
- qwen3moe's per-expert gate/up/down matrices are stacked into one 3-D
  tensor per layer each (ffn_{gate,up,down}_exps), expert 0 first;
- Llama 3's `llama3` rope scaling becomes a rope_freqs tensor;
- gpt-oss's fused expert stacks ([n_expert, in, out], gate and up
  interleaved column by column) are transposed and split into
  ffn_{gate,up,down}_exps and their biases; its sinks become attn_sinks.weight.

llama.cpp reads config.json through transformers' AutoConfig, which fills in
class defaults; the defaults that reach the file are repeated here so a
config that omits them converts the same without transformers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lamina.convert.errors import CheckpointError, TensorShapeError
from lamina.convert.hf.checkpoint import is_mxfp4
from lamina.errors import UnsupportedArchitectureError

T = gguf.MODEL_TENSOR

# HF tensors llama.cpp drops before mapping (buffers, not weights)
_SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass(frozen=True)
class Arch:
    model_arch: gguf.MODEL_ARCH
    hf_names: tuple[str, ...]
    defaults: dict[str, Any]  # AutoConfig defaults that reach the file
    required: tuple[gguf.MODEL_TENSOR, ...]  # per block
    skip_lm_head: bool = False
    llama_family: bool = False  # llama.cpp's LlamaModel or a subclass: q/k permuted, vocab_size + rope dims written
    # whole-model tensors every checkpoint must have
    globals_required: tuple[gguf.MODEL_TENSOR, ...] = (T.TOKEN_EMBD, T.OUTPUT_NORM)

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.model_arch]


_CORE = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)

ARCHES: tuple[Arch, ...] = (
    Arch(
        gguf.MODEL_ARCH.LLAMA,
        ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"),
        {"rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "rope_theta": 10000.0},
        _CORE + (T.FFN_NORM,),
        llama_family=True,
    ),
    Arch(
        gguf.MODEL_ARCH.GRANITE,
        ("GraniteForCausalLM",),
        {
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 2048,
            "rope_theta": 10000.0,
            # llama.cpp writes each multiplier that is set, and AutoConfig sets them all
            "embedding_multiplier": 1.0,
            "residual_multiplier": 1.0,
            "attention_multiplier": 1.0,
            "logits_scaling": 1.0,
        },
        _CORE + (T.FFN_NORM,),
        llama_family=True,
    ),
    Arch(
        gguf.MODEL_ARCH.SMOLLM3,
        ("SmolLM3ForCausalLM",),
        {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 2_000_000.0},
        _CORE + (T.FFN_NORM,),
        llama_family=True,
    ),
    Arch(
        gguf.MODEL_ARCH.QWEN2,
        ("Qwen2ForCausalLM",),
        {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 10000.0},
        _CORE + (T.FFN_NORM,),
    ),
    Arch(
        gguf.MODEL_ARCH.QWEN3,
        ("Qwen3ForCausalLM",),
        {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 10000.0, "head_dim": 128},
        _CORE + (T.FFN_NORM, T.ATTN_Q_NORM, T.ATTN_K_NORM),
    ),
    Arch(
        gguf.MODEL_ARCH.QWEN3MOE,
        ("Qwen3MoeForCausalLM",),
        {
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768,
            "rope_theta": 10000.0,
            "num_experts_per_tok": 8,
            "moe_intermediate_size": 768,
        },
        (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_NORM, T.ATTN_Q_NORM, T.ATTN_K_NORM)
        + (T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP),
    ),
    Arch(
        gguf.MODEL_ARCH.PHI3,
        ("Phi3ForCausalLM",),
        {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "rope_theta": 10000.0},
        (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN),
    ),
    Arch(
        gguf.MODEL_ARCH.GEMMA2,
        ("Gemma2ForCausalLM",),
        {
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 8192,
            "head_dim": 256,
            "num_key_value_heads": 4,
            "sliding_window": 4096,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "rope_theta": 10000.0,
        },
        _CORE + (T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM),
        skip_lm_head=True,
    ),
    Arch(
        gguf.MODEL_ARCH.OLMO2,
        ("Olmo2ForCausalLM",),
        {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "rope_theta": 10000.0},
        # no pre-norms: a norm after each sublayer, q/k norms over the whole projections
        (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
        + (T.ATTN_Q_NORM, T.ATTN_K_NORM, T.ATTN_POST_NORM, T.FFN_POST_NORM),
    ),
    Arch(
        gguf.MODEL_ARCH.GEMMA3,
        ("Gemma3ForCausalLM",),
        {
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 131072,
            "head_dim": 256,
            "num_key_value_heads": 4,
            "num_attention_heads": 8,
            "sliding_window": 4096,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10000.0,
        },
        _CORE + (T.ATTN_Q_NORM, T.ATTN_K_NORM, T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM),
        skip_lm_head=True,
    ),
    Arch(
        gguf.MODEL_ARCH.GPT_OSS,
        ("GptOssForCausalLM",),
        {
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072,
            "head_dim": 64,
            "num_experts_per_tok": 4,
            "sliding_window": 128,
            "rope_theta": 150000.0,
        },
        (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_SINKS, T.ATTN_POST_NORM)
        + (T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP),
    ),
)


# bert (llama.cpp's BertModel): an encoder with absolute positions, token
# types and post-norm blocks whose LayerNorms have biases (lamina.convert.hf.bert)
ARCHES += (
    Arch(
        gguf.MODEL_ARCH.BERT,
        ("BertModel", "BertForMaskedLM", "BertForSequenceClassification"),
        {"layer_norm_eps": 1e-12, "max_position_embeddings": 512, "type_vocab_size": 2},
        (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_OUT_NORM, T.FFN_UP, T.FFN_DOWN, T.LAYER_OUT_NORM),
        globals_required=(T.TOKEN_EMBD, T.TOKEN_TYPES, T.POS_EMBD, T.TOKEN_EMBD_NORM),
    ),
)


def supported_architectures() -> list[str]:
    return [n for a in ARCHES for n in a.hf_names]


def detect(config: dict[str, Any], where: str) -> Arch:
    names = config.get("architectures") or []
    hf_name = names[0] if names else config.get("model_type", "<none>")
    for arch in ARCHES:
        if hf_name in arch.hf_names:
            return arch
    raise UnsupportedArchitectureError(
        f"{where}: unsupported architecture {hf_name!r}; supported: {', '.join(supported_architectures())}"
    )


# -- hyperparameters ----------------------------------------------------------


@dataclass
class HFConfig:
    """An HF config.json as llama.cpp's converter sees it, defaults filled in
    (the runtime's HParams, lamina.engine.loader, come from GGUF metadata)."""

    arch: Arch
    cfg: dict[str, Any]
    rope: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None  # the checkpoint's folder (bert: sentence-transformers' pooling files)

    def find(self, *keys: str) -> Any:
        return next((self.cfg[k] for k in keys if self.cfg.get(k) is not None), None)

    def need(self, key: str) -> int:
        """A required positive integer hyperparameter."""
        value = self.cfg.get(key)
        if value is None:
            raise CheckpointError(f"config.json: required key {key!r} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(f"config.json: {key!r} must be a positive integer, found {value!r}")
        return value

    @property
    def n_layer(self) -> int:
        return self.need("num_hidden_layers")

    @property
    def n_embd(self) -> int:
        return self.need("hidden_size")

    @property
    def n_head(self) -> int:
        return self.need("num_attention_heads")

    @property
    def n_head_kv(self) -> int:
        return self.need("num_key_value_heads") if self.cfg.get("num_key_value_heads") is not None else self.n_head

    @property
    def head_dim(self) -> int:
        return self.need("head_dim") if self.cfg.get("head_dim") is not None else self.n_embd // self.n_head

    @property
    def n_ff(self) -> int:
        return self.need("intermediate_size")

    @property
    def n_vocab(self) -> int:
        return self.need("vocab_size")


def load_hparams(arch: Arch, config: dict[str, Any]) -> HFConfig:
    cfg = dict(config)
    for key, value in arch.defaults.items():
        if cfg.get(key) is None and key not in ("rope_theta", "rope_local_base_freq"):
            cfg[key] = value
    if cfg.get("num_key_value_heads") is None and arch.model_arch != gguf.MODEL_ARCH.BERT:
        cfg["num_key_value_heads"] = cfg.get("num_attention_heads")
    hp = HFConfig(arch, cfg)
    if arch.model_arch == gguf.MODEL_ARCH.GPT_OSS:
        _check_gpt_oss(hp)
    if arch.model_arch == gguf.MODEL_ARCH.LLAMA and cfg.get("head_dim") is None:
        cfg["head_dim"] = hp.n_embd // hp.n_head  # LlamaConfig always has one, so llama.cpp writes it
    if arch.model_arch == gguf.MODEL_ARCH.GRANITE:
        cfg.pop("head_dim", None)
    if arch.model_arch == gguf.MODEL_ARCH.OLMO2 and cfg.get("sliding_window") is not None:
        raise CheckpointError(
            "config.json: sliding_window is set (OLMo 3); sliding-window olmo2 is not supported yet"
        )  # llama.cpp ignores granite's head_dim (and writes no key_length)

    # v5 configs carry rope_parameters (per layer type for Gemma3); older ones
    # rope_theta (+ rope_local_base_freq) and rope_scaling at the top level.
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" not in rope and "sliding_attention" not in rope:
        local = cfg.get("rope_local_base_freq")
        if arch.model_arch == gguf.MODEL_ARCH.GEMMA3 and local is None and cfg.get("rope_theta") is None:
            local = arch.defaults["rope_local_base_freq"]
        if local is not None:
            rope["sliding_attention"] = {"rope_theta": local}
        if "rope_theta" not in rope and "rope_theta" in arch.defaults:
            rope["rope_theta"] = cfg.get("rope_theta") or arch.defaults["rope_theta"]
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
        if "original_max_position_embeddings" not in rope and cfg.get("original_max_position_embeddings") is not None:
            rope["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    hp.rope = rope
    _check_rope_scaling(hp)
    return hp


def _check_rope_scaling(hp: HFConfig) -> None:
    """Rope scaling that llama.cpp's converter would drop (an unknown kind, no
    factor, gemma2's and phi3's own key lists) or cannot write (YaRN without
    its original context) is refused, rather than converted into another model."""
    rope = hp.rope.get("full_attention", hp.rope)
    kind = rope.get("rope_type")
    arch = hp.arch.model_arch
    if arch == gguf.MODEL_ARCH.GEMMA2 and rope.get("rope_theta", 10000.0) != 10000.0:
        raise CheckpointError(
            f"config.json: rope_theta {rope['rope_theta']!r} is not supported for gemma2 (llama.cpp's converter "
            "writes no rope base for gemma2, so its files rotate at 10000)"
        )
    if hp.rope.get("sliding_attention", {}).get("rope_type") not in (None, "default"):
        raise CheckpointError(
            f"config.json: rope scaling {hp.rope['sliding_attention']['rope_type']!r} of the sliding layers is not "
            "supported (llama.cpp's converter writes the full-attention layers' only)"
        )
    if kind in (None, "default") or arch == gguf.MODEL_ARCH.BERT:
        return
    if arch == gguf.MODEL_ARCH.PHI3 and rope.get("long_factor"):
        return  # LongRoPE: factor tensors and an attention factor (_longrope)
    if kind == "llama3" and hp.arch.llama_family:
        return  # a rope_freqs tensor (_llama3_rope_freqs)
    if arch in (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.PHI3) or kind not in ("linear", "yarn"):
        why = "llama.cpp's converter would drop it"
        if arch == gguf.MODEL_ARCH.GEMMA2:
            why += "; lamina runs gemma2 files whose rope.scaling keys say it"
        elif arch == gguf.MODEL_ARCH.PHI3 and kind == "yarn":
            why += ", and transformers' Phi3 reads 'yarn' as LongRoPE, which needs long_factor and short_factor"
        raise CheckpointError(f"config.json: rope scaling {kind!r} is not supported for {hp.arch.name} ({why})")
    if rope.get("factor") is None:
        raise CheckpointError(f"config.json: rope scaling {kind!r} needs a factor (llama.cpp's converter drops it)")
    if kind == "yarn" and not isinstance(rope.get("original_max_position_embeddings"), int):
        raise CheckpointError("config.json: YaRN rope scaling needs original_max_position_embeddings (an integer)")


def _check_gpt_oss(hp: HFConfig) -> None:
    """What llama.cpp's gpt-oss graph fixes and its converter does not write:
    refused when a config differs, rather than converted into a wrong model."""
    cfg = hp.cfg
    for key, fixed in (("swiglu_limit", 7.0), ("swiglu_alpha", 1.702)):
        if cfg.get(key) is not None and cfg[key] != fixed:
            raise CheckpointError(
                f"config.json: {key} {cfg[key]!r} differs from gpt-oss's {fixed} (fixed in llama.cpp)"
            )
    if cfg.get("attention_bias") is False:
        raise CheckpointError("config.json: attention_bias is false; gpt-oss files always have q/k/v/o biases")
    alternating = ["sliding_attention" if il % 2 == 0 else "full_attention" for il in range(hp.n_layer)]
    if cfg.get("layer_types") is not None and list(cfg["layer_types"]) != alternating:
        raise CheckpointError(
            "config.json: layer_types must alternate sliding_attention, full_attention (llama.cpp's fixed pattern)"
        )
    quant = cfg.get("quantization_config")
    if quant is not None and not is_mxfp4(hp.cfg):
        method = quant.get("quant_method") if isinstance(quant, dict) else quant
        raise CheckpointError(
            f"config.json: quantization_config quant_method {method!r}: a gpt-oss checkpoint must be "
            "float (bf16/f16/f32) or MXFP4 (quant_method 'mxfp4', as OpenAI released it)"
        )


def write_hparams(w: gguf.GGUFWriter, hp: HFConfig, file_type: int) -> None:
    """The model keys, in the order llama.cpp's converter adds them."""
    if hp.arch.model_arch == gguf.MODEL_ARCH.GEMMA2:
        _write_gemma2_hparams(w, hp, file_type)
        return
    if hp.arch.model_arch == gguf.MODEL_ARCH.PHI3:
        _write_phi3_hparams(w, hp, file_type)
        return
    if hp.arch.model_arch == gguf.MODEL_ARCH.BERT:
        write_bert_hparams(w, hp, file_type)
        return
    w.add_block_count(hp.n_layer)
    if (n_ctx := hp.find("max_position_embeddings", "n_ctx", "n_positions", "max_length")) is not None:
        w.add_context_length(n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    if hp.cfg.get("is_causal") is False:
        w.add_causal_attention(False)
    rope = hp.rope.get("full_attention", hp.rope)
    _write_rope_scaling(w, rope)
    if (theta := rope.get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    if (local := hp.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(local)
    if (eps := hp.find("rms_norm_eps", "norm_eps")) is not None:
        w.add_layer_norm_rms_eps(eps)
    if (n_expert := hp.find("num_local_experts", "num_experts", "n_routed_experts")) is not None:
        w.add_expert_count(n_expert)
    if (n_used := hp.find("num_experts_per_tok", "num_experts_per_token", "top_k_experts")) is not None:
        w.add_expert_used_count(n_used)
    if (head_dim := hp.cfg.get("head_dim")) is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(file_type)

    if hp.arch.llama_family:
        w.add_vocab_size(hp.n_vocab)
        w.add_rope_dimension_count(hp.head_dim)
    if hp.arch.model_arch == gguf.MODEL_ARCH.QWEN3MOE:
        w.add_expert_feed_forward_length(hp.cfg["moe_intermediate_size"])
        if (shared := hp.cfg.get("shared_expert_intermediate_size")) is not None:
            w.add_expert_shared_feed_forward_length(shared)
    if hp.arch.model_arch == gguf.MODEL_ARCH.GPT_OSS:
        w.add_sliding_window(hp.need("sliding_window"))
        w.add_expert_feed_forward_length(hp.n_ff)
    if hp.arch.model_arch == gguf.MODEL_ARCH.GRANITE:
        # truthy values only, as llama.cpp's `if x := hparams.get(...)`
        if v := hp.cfg.get("attention_multiplier"):
            w.add_attention_scale(v)
        if v := hp.cfg.get("embedding_multiplier"):
            w.add_embedding_scale(v)
        if v := hp.cfg.get("residual_multiplier"):
            w.add_residual_scale(v)
        if v := hp.cfg.get("logits_scaling"):
            w.add_logit_scale(v)
    elif hp.arch.model_arch == gguf.MODEL_ARCH.GEMMA3:
        # Gemma3 re-adds some keys with its own defaults (same position, maybe new value)
        w.add_context_length(hp.cfg["max_position_embeddings"])
        w.add_head_count(hp.n_head)
        w.add_layer_norm_rms_eps(hp.cfg["rms_norm_eps"])
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
        w.add_rope_freq_base(rope.get("rope_theta", hp.arch.defaults["rope_theta"]))
        if hp.cfg.get("attn_logit_softcapping") is not None:
            raise CheckpointError("config.json: attn_logit_softcapping is set, which Gemma3 does not use")
        if softcap := hp.cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(softcap)
        if hp.cfg.get("sliding_window_pattern") != 1:
            w.add_sliding_window(hp.cfg["sliding_window"])
        w.add_head_count_kv(hp.n_head_kv)


def _write_gemma2_hparams(w: gguf.GGUFWriter, hp: HFConfig, file_type: int) -> None:
    """Gemma2's own list (llama.cpp's Gemma2Model does not start from the common one)."""
    cfg = hp.cfg
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layer)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(hp.head_dim)
    w.add_value_length(hp.head_dim)
    w.add_file_type(file_type)
    w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
    w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    w.add_sliding_window(cfg["sliding_window"])


def _phi3_rope(hp: HFConfig) -> tuple[int, int, int]:
    """(rope dims, context length, original context length) as llama.cpp's Phi3MiniModel reads them"""
    rope = hp.rope.get("full_attention", hp.rope)
    n_ctx = hp.find("n_positions", "max_position_embeddings")
    orig = rope.get("original_max_position_embeddings", hp.cfg.get("original_max_position_embeddings"))
    if not isinstance(orig, int) or not isinstance(n_ctx, int):
        raise CheckpointError("config.json: phi3 needs max_position_embeddings and original_max_position_embeddings")
    rot = rope.get("partial_rotary_factor", hp.cfg.get("partial_rotary_factor", 1.0))
    return int(rot * hp.n_embd) // hp.n_head, n_ctx, orig


def _write_phi3_hparams(w: gguf.GGUFWriter, hp: HFConfig, file_type: int) -> None:
    """Phi3's own list (llama.cpp's Phi3MiniModel does not start from the common one)."""
    rope_dims, n_ctx, orig = _phi3_rope(hp)
    w.add_context_length(n_ctx)
    w.add_rope_scaling_orig_ctx_len(orig)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_block_count(hp.n_layer)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_layer_norm_rms_eps(hp.cfg["rms_norm_eps"])
    w.add_rope_dimension_count(rope_dims)
    w.add_rope_freq_base(hp.rope.get("full_attention", hp.rope)["rope_theta"])
    w.add_file_type(file_type)
    w.add_sliding_window(hp.cfg.get("sliding_window") or 0)  # 0: llama.cpp's mark of a Phi-4


def write_early_hparams(w: gguf.GGUFWriter, hp: HFConfig) -> None:
    """Keys llama.cpp's converter adds while it prepares tensors, which it does
    before the metadata: they follow general.architecture."""
    if hp.arch.model_arch == gguf.MODEL_ARCH.PHI3 and (factors := _longrope(hp)) is not None:
        w.add_rope_scaling_attn_factors(factors[2])


def _longrope(hp: HFConfig) -> tuple[list[float], list[float], float] | None:
    """phi3's (long factors, short factors, attention factor), or None without LongRoPE"""
    rope = hp.rope.get("full_attention", hp.rope)
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long:
        return None
    rope_dims, n_ctx, orig = _phi3_rope(hp)
    kind = str(rope.get("rope_type", "")).lower()
    scale = n_ctx / orig
    if kind in ("su", "longrope"):
        attn_factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
    elif kind == "yarn":
        attn_factor = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
    else:
        raise CheckpointError(f"config.json: rope scaling {kind!r} with long/short factors is not supported")
    if short is None or len(long) != len(short) or len(long) != rope_dims / 2:
        raise CheckpointError(f"config.json: rope long_factor and short_factor must both have {rope_dims // 2} values")
    return list(long), list(short), attn_factor


def _write_rope_scaling(w: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
    rope_type = rope.get("rope_type")
    factor = rope.get("factor")
    if rope_type == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif rope_type == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        if (v := rope.get("extrapolation_factor")) is not None:
            w.add_rope_scaling_yarn_ext_factor(v)
        if (v := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
            w.add_rope_scaling_yarn_attn_factor(v)
        if (v := rope.get("beta_fast")) is not None:
            w.add_rope_scaling_yarn_beta_fast(v)
        if (v := rope.get("beta_slow")) is not None:
            w.add_rope_scaling_yarn_beta_slow(v)


# -- tensors ------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTensor:
    """One GGUF tensor: where its data comes from and how it is transformed."""

    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order, after the transform
    kind: gguf.MODEL_TENSOR
    hf_name: str | None  # None for generated and stacked tensors
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    generate: Callable[[], np.ndarray] | None = None
    stack: tuple[str, ...] = ()  # HF tensors stacked on a new first axis (experts), in order
    # MXFP4-packed source: the HF (blocks, scales) names, and which of their rows this
    # tensor takes: every step-th from start
    mxfp4: tuple[str, str] | None = None
    rows: tuple[int, int] = (0, 1)  # (start, step)


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half q/k rows -> ggml's interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def plan_tensors(hp: HFConfig, hf_shapes: dict[str, tuple[int, ...]], n_vocab_real: int | None) -> list[SourceTensor]:
    """Map every HF tensor to its GGUF name, check its shape against the config."""
    arch = hp.arch
    name_map = gguf.get_tensor_name_map(arch.model_arch, hp.n_layer)
    expected = _expected_shapes(hp)
    out: list[SourceTensor] = []
    if arch.llama_family and (t := _llama3_rope_freqs(hp)) is not None:
        out.append(t)
    if arch.model_arch == gguf.MODEL_ARCH.PHI3 and (factors := _longrope(hp)) is not None:
        for kind, values in ((T.ROPE_FACTORS_LONG, factors[0]), (T.ROPE_FACTORS_SHORT, factors[1])):
            vec = np.asarray(values, dtype=np.float32)
            out.append(
                SourceTensor(gguf.TENSOR_NAMES[kind] + ".weight", vec.shape, kind, None, generate=partial(_same, vec))
            )
    if arch.model_arch == gguf.MODEL_ARCH.BERT:
        _sentence_transformers_pooling(hp)  # an unsupported pooling mode is refused before any work
    experts: dict[tuple[int, str], dict[int, tuple[str, tuple[int, ...]]]] = {}
    packed: dict[tuple[int, str], dict[str, tuple[str, tuple[int, ...]]]] = {}
    for hf_name, shape in hf_shapes.items():
        if arch.model_arch == gguf.MODEL_ARCH.BERT:
            if (gguf_side := bert_source_name(hp, hf_name)) is None:
                continue
            mapped = name_map.get_type_and_name(gguf_side, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise CheckpointError(f"tensor {hf_name!r} {shape} has no GGUF name for the bert architecture")
            want = expected.get((mapped[0], mapped[1].endswith(".bias")))
            if want is not None and tuple(shape) != want:
                raise TensorShapeError(f"tensor {hf_name!r} has shape {tuple(shape)}; config.json implies {want}")
            out.append(SourceTensor(mapped[1], tuple(shape), mapped[0], hf_name))
            continue
        if hf_name.endswith(_SKIPPED_SUFFIXES) or (arch.skip_lm_head and hf_name == "lm_head.weight"):
            continue
        if m := _FUSED_EXPERTS.match(hf_name):
            out += _gpt_oss_experts(hp, hf_name, tuple(shape), int(m["layer"]), m["proj"], bool(m["bias"]))
            continue
        if hf_name.endswith(".self_attn.sinks"):
            hf_name_mapped = hf_name + ".weight"  # llama.cpp's name for the one logit per head
        else:
            hf_name_mapped = hf_name
        if (m := _PACKED_EXPERTS.match(hf_name)) and arch.model_arch == gguf.MODEL_ARCH.GPT_OSS and is_mxfp4(hp.cfg):
            packed.setdefault((int(m["layer"]), m["proj"]), {})[m["part"]] = (hf_name, tuple(shape))
            continue
        if hf_name.endswith(("_blocks", "_scales")):
            raise CheckpointError(
                f"tensor {hf_name!r}: MXFP4-packed weights are only read from gpt-oss experts in a checkpoint "
                "whose config.json says quant_method 'mxfp4'"
            )
        if m := _EXPERT.match(hf_name):
            experts.setdefault((int(m["layer"]), m["proj"]), {})[int(m["expert"])] = (hf_name, tuple(shape))
            continue
        mapped = name_map.get_type_and_name(hf_name_mapped, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise CheckpointError(f"tensor {hf_name!r} {shape} has no GGUF name for the {arch.name} architecture")
        kind, name = mapped
        want = expected.get((kind, name.endswith(".bias")))
        if want is not None and tuple(shape) != want:
            raise TensorShapeError(f"tensor {hf_name!r} has shape {tuple(shape)}; config.json implies {want}")
        transform = _transform(hp, hf_name, kind)
        if kind == T.TOKEN_EMBD and arch.model_arch == gguf.MODEL_ARCH.GEMMA3 and n_vocab_real is not None:
            # rows past the tokenizer's vocabulary are padding llama.cpp drops
            shape = (min(shape[0], n_vocab_real), *shape[1:])
            transform = lambda w, rows=shape[0]: w[:rows]
        out.append(SourceTensor(name, tuple(shape), kind, hf_name, transform))
    out += _expert_stacks(hp, experts)
    out += _gpt_oss_mxfp4_experts(hp, packed)
    _check_complete(hp, out)
    return out


_EXPERT = re.compile(
    r"^model\.layers\.(?P<layer>\d+)\.mlp\.experts\.(?P<expert>\d+)\.(?P<proj>gate|up|down)_proj\.weight$"
)
_EXPERT_KINDS = {"gate": T.FFN_GATE_EXP, "up": T.FFN_UP_EXP, "down": T.FFN_DOWN_EXP}
# gpt-oss: every expert of a layer in one tensor, [n_expert, in, out]
_FUSED_EXPERTS = re.compile(
    r"^model\.layers\.(?P<layer>\d+)\.mlp\.experts\.(?P<proj>gate_up_proj|down_proj)(?P<bias>_bias)?$"
)


def _gpt_oss_experts(
    hp: HFConfig, hf_name: str, shape: tuple[int, ...], layer: int, proj: str, bias: bool
) -> list[SourceTensor]:
    """gate_up_proj [X, E, 2F] (gate and up alternate along the last axis) ->
    ffn_gate_exps and ffn_up_exps [X, F, E]; down_proj [X, F, E] -> ffn_down_exps
    [X, E, F]; their biases [X, 2F] -> [X, F] twice, [X, E] as is (llama.cpp's split)."""
    X, E, F = hp.need("num_local_experts"), hp.n_embd, hp.n_ff
    want = {
        ("gate_up_proj", False): (X, E, 2 * F),
        ("gate_up_proj", True): (X, 2 * F),
        ("down_proj", False): (X, F, E),
        ("down_proj", True): (X, E),
    }[proj, bias]
    if shape != want:
        raise TensorShapeError(f"tensor {hf_name!r} has shape {shape}; config.json implies {want}")
    suffix = ".bias" if bias else ".weight"

    def one(kind: gguf.MODEL_TENSOR, out_shape: tuple[int, ...], fn: Callable[[np.ndarray], np.ndarray]):
        name = gguf.TENSOR_NAMES[kind].format(bid=layer) + suffix
        return SourceTensor(name, out_shape, kind, hf_name, lambda w: np.ascontiguousarray(fn(w)))

    if proj == "down_proj":
        if bias:
            return [one(T.FFN_DOWN_EXP, (X, E), _same)]
        return [one(T.FFN_DOWN_EXP, (X, E, F), lambda w: w.transpose(0, 2, 1))]
    if bias:
        return [one(T.FFN_GATE_EXP, (X, F), lambda w: w[:, ::2]), one(T.FFN_UP_EXP, (X, F), lambda w: w[:, 1::2])]
    return [
        one(T.FFN_GATE_EXP, (X, F, E), lambda w: w.transpose(0, 2, 1)[:, ::2]),
        one(T.FFN_UP_EXP, (X, F, E), lambda w: w.transpose(0, 2, 1)[:, 1::2]),
    ]


_PACKED_EXPERTS = re.compile(
    r"^model\.layers\.(?P<layer>\d+)\.mlp\.experts\.(?P<proj>gate_up_proj|down_proj)_(?P<part>blocks|scales)$"
)


def _gpt_oss_mxfp4_experts(
    hp: HFConfig, packed: dict[tuple[int, str], dict[str, tuple[str, tuple[int, ...]]]]
) -> list[SourceTensor]:
    """gpt-oss experts as released, MXFP4 rows [X, out, in/32, 16] + exponents
    [X, out, in/32]: gate_up's rows alternate gate and up (llama.cpp's split),
    down's are ffn_down_exps' rows. The GGUF tensors keep the bits
    (convert/hf/mxfp4.py); their shapes are the float ones, numpy order."""
    if not packed:
        return []
    X, E, F = hp.need("num_local_experts"), hp.n_embd, hp.n_ff
    out = []
    for (layer, proj), parts in sorted(packed.items()):
        rows, cols = (2 * F, E) if proj == "gate_up_proj" else (E, F)
        if cols % 32:
            raise TensorShapeError(f"layer {layer} {proj}: {cols} inputs are not a whole number of MXFP4 blocks of 32")
        want = {"blocks": (X, rows, cols // 32, 16), "scales": (X, rows, cols // 32)}
        for part in want:
            if part not in parts:
                raise CheckpointError(f"layer {layer}: {proj}_{part} missing (its {proj}_{next(iter(parts))} is there)")
            name, shape = parts[part]
            if shape != want[part]:
                raise TensorShapeError(f"tensor {name!r} has shape {shape}; config.json implies {want[part]}")
        src = (parts["blocks"][0], parts["scales"][0])

        # (GGUF tensor, its rows, which HF rows: (start, step))
        picks = (
            [(T.FFN_DOWN_EXP, E, (0, 1))]
            if proj == "down_proj"
            else [(T.FFN_GATE_EXP, F, (0, 2)), (T.FFN_UP_EXP, F, (1, 2))]
        )
        for kind, n_rows, take in picks:
            name = gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight"
            out.append(SourceTensor(name, (X, n_rows, cols), kind, None, mxfp4=src, rows=take))
    return out


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _expert_stacks(
    hp: HFConfig, experts: dict[tuple[int, str], dict[int, tuple[str, tuple[int, ...]]]]
) -> list[SourceTensor]:
    """One [n_expert, rows, cols] tensor per layer and projection, as llama.cpp merges them."""
    if not experts:
        return []
    n_expert = hp.find("num_local_experts", "num_experts", "n_routed_experts")
    n_ff = hp.cfg.get("moe_intermediate_size")
    if not isinstance(n_expert, int) or n_expert <= 0 or not isinstance(n_ff, int) or n_ff <= 0:
        raise CheckpointError("config.json: expert tensors need num_experts and moe_intermediate_size")
    out = []
    for (layer, proj), found in sorted(experts.items()):
        if sorted(found) != list(range(n_expert)):
            missing = sorted(set(range(n_expert)) - set(found))
            raise CheckpointError(
                f"layer {layer}: {proj}_proj of experts {missing[:5]} missing (config.json: {n_expert} experts)"
            )
        want = (hp.n_embd, n_ff) if proj == "down" else (n_ff, hp.n_embd)
        for name, shape in found.values():
            if shape != want:
                raise TensorShapeError(f"tensor {name!r} has shape {shape}; config.json implies {want}")
        kind = _EXPERT_KINDS[proj]
        stack = tuple(found[e][0] for e in range(n_expert))
        out.append(
            SourceTensor(
                gguf.TENSOR_NAMES[kind].format(bid=layer) + ".weight", (n_expert, *want), kind, None, stack=stack
            )
        )
    return out


def _transform(hp: HFConfig, hf_name: str, kind: gguf.MODEL_TENSOR) -> Callable[[np.ndarray], np.ndarray] | None:
    arch = hp.arch.model_arch
    if hp.arch.llama_family and kind == T.ATTN_Q:
        return lambda w: permute_rope(w, hp.n_head)
    if hp.arch.llama_family and kind == T.ATTN_K:
        return lambda w: permute_rope(w, hp.n_head_kv)
    if arch in (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3) and hf_name.endswith("norm.weight"):
        return lambda w: w + np.float32(1.0)
    return None


def _expected_shapes(hp: HFConfig) -> dict[tuple[gguf.MODEL_TENSOR, bool], tuple[int, ...]]:
    e, q, kv, ff = hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff
    shapes = {
        (T.TOKEN_EMBD, False): (hp.n_vocab, e),
        (T.OUTPUT, False): (hp.n_vocab, e),
        (T.ATTN_Q, False): (q, e),
        (T.ATTN_K, False): (kv, e),
        (T.ATTN_V, False): (kv, e),
        (T.ATTN_Q, True): (q,),
        (T.ATTN_K, True): (kv,),
        (T.ATTN_V, True): (kv,),
        (T.ATTN_OUT, False): (e, q),
        (T.FFN_GATE, False): (ff, e),
        (T.FFN_UP, False): (ff, e),
        (T.FFN_DOWN, False): (e, ff),
        (T.ATTN_Q_NORM, False): (hp.head_dim,),
        (T.ATTN_K_NORM, False): (hp.head_dim,),
    }
    if (n_expert := hp.find("num_local_experts", "num_experts", "n_routed_experts")) is not None:
        shapes[(T.FFN_GATE_INP, False)] = (n_expert, e)
        shapes[(T.FFN_GATE_INP, True)] = (n_expert,)
    if hp.arch.model_arch == gguf.MODEL_ARCH.GPT_OSS:
        shapes[(T.ATTN_SINKS, False)], shapes[(T.ATTN_OUT, True)] = (hp.n_head,), (e,)
    if hp.arch.model_arch == gguf.MODEL_ARCH.PHI3:  # fused q/k/v and gate/up
        shapes[(T.ATTN_QKV, False)] = (q + 2 * kv, e)
        shapes[(T.FFN_UP, False)] = (2 * ff, e)
    if hp.arch.model_arch == gguf.MODEL_ARCH.OLMO2:  # over the whole projections
        shapes[(T.ATTN_Q_NORM, False)], shapes[(T.ATTN_K_NORM, False)] = (q,), (kv,)
    if hp.arch.model_arch == gguf.MODEL_ARCH.BERT:
        shapes[(T.POS_EMBD, False)] = (hp.need("max_position_embeddings"), e)
        shapes[(T.TOKEN_TYPES, False)] = (hp.need("type_vocab_size"), e)
        shapes[(T.ATTN_OUT, True)], shapes[(T.FFN_UP, True)], shapes[(T.FFN_DOWN, True)] = (e,), (ff,), (e,)
        for norm in (T.TOKEN_EMBD_NORM, T.ATTN_OUT_NORM, T.LAYER_OUT_NORM):
            shapes[(norm, False)] = shapes[(norm, True)] = (e,)
    for norm in (T.OUTPUT_NORM, T.ATTN_NORM, T.FFN_NORM, T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM):
        shapes[(norm, False)] = (e,)
    return shapes


def _check_complete(hp: HFConfig, tensors: list[SourceTensor]) -> None:
    have = {t.name for t in tensors}
    want = [gguf.TENSOR_NAMES[k] + ".weight" for k in hp.arch.globals_required]
    want += [gguf.TENSOR_NAMES[k].format(bid=b) + ".weight" for b in range(hp.n_layer) for k in hp.arch.required]
    missing = [n for n in want if n not in have]
    if missing:
        raise CheckpointError(
            f"{len(missing)} tensor(s) the config implies are missing from the weights, first {missing[0]!r}"
        )


def _llama3_rope_freqs(hp: HFConfig) -> SourceTensor | None:
    rope = hp.rope.get("full_attention", hp.rope)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base = rope.get("rope_theta", 10000.0)
    dim = hp.head_dim
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)

    def generate() -> np.ndarray:
        # float32 like torch's arange/pow in llama.cpp's converter, then per-frequency factors
        freqs = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
        factors = []
        for f in freqs.astype(np.float32):
            wavelen = 2 * math.pi / float(f)
            if wavelen < old_ctx / high:
                factors.append(1.0)
            elif wavelen > old_ctx / low:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        return np.asarray(factors, dtype=np.float32)

    return SourceTensor(gguf.TENSOR_NAMES[T.ROPE_FREQS] + ".weight", (dim // 2,), T.ROPE_FREQS, None, generate=generate)


# -- bert ---------------------------------------------------------------------


def bert_labels(hp: HFConfig) -> list[str] | None:
    """The classifier's labels llama.cpp writes (none for AutoConfig's two dummy ones)."""
    labels = hp.cfg.get("id2label")
    if not labels or (len(labels) == 2 and str(labels.get("0", labels.get(0))) == "LABEL_0"):
        return None
    return [v for _, v in sorted(((int(k), v) for k, v in labels.items()))]


def bert_source_name(hp: HFConfig, hf_name: str) -> str | None:
    """The name llama.cpp's BertModel maps for an HF tensor, or None when it drops it
    (the pooler, the masked-LM and next-sentence heads, position_ids)."""
    name = hf_name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
        return None
    if name.startswith(("cls.predictions", "cls.seq_relationship")):
        return None
    if bert_labels(hp) and name in ("classifier.weight", "classifier.bias"):
        name = "classifier.out_proj." + name.rsplit(".", 1)[1]  # a sequence classifier's single projection
    return name


def write_bert_hparams(w: gguf.GGUFWriter, hp: HFConfig, file_type: int) -> None:
    """TextModel's common keys as a BertConfig yields them, then bert's own."""
    w.add_block_count(hp.n_layer)
    if (n_ctx := hp.find("max_position_embeddings", "n_ctx", "n_positions", "max_length")) is not None:
        w.add_context_length(n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    if (n_kv := hp.cfg.get("num_key_value_heads")) is not None:
        w.add_head_count_kv(n_kv)
    if hp.cfg.get("is_causal") is False:
        w.add_causal_attention(False)
    if (eps := hp.find("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")) is not None:
        w.add_layer_norm_eps(eps)
    w.add_file_type(file_type)
    w.add_causal_attention(False)
    if (pooling := _sentence_transformers_pooling(hp)) is not None:
        w.add_pooling_type(pooling)
    if (labels := bert_labels(hp)) is not None:
        w.add_classifier_output_labels(labels)


def _sentence_transformers_pooling(hp: HFConfig) -> gguf.PoolingType | None:
    """The Pooling module's mode from modules.json, as llama.cpp's _try_set_pooling_type reads it."""
    directory = hp.directory
    if directory is None:
        return None
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    path = next((m["path"] for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if path is None:
        return None
    pooling = _read_json(directory / path / "config.json")
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if pooling.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pooling.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if (mode := pooling.get("pooling_mode")) in modes:
        return modes[mode]
    raise CheckpointError(f"{directory / path / 'config.json'}: only mean, cls and lasttoken pooling are supported")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable: {' '.join(str(e).split())}") from None
