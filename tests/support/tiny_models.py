"""Tiny random decoder models written as real GGUF files (gguf-py's
GGUFWriter), one per architecture shape the native forward must express:
llama with or without GQA, tied or untied output, rope scaling and llama-3.1
rope factors; granite (llama with embedding, attention, residual and logit
multipliers); smollm3 (llama whose every 4th layer has no rope; with YaRN); qwen2 (q/k/v
biases, NeoX rope); qwen3 (q/k norms, head_dim wider than n_embd / n_head);
gemma2 (alternating sliding layers, soft-capped scores and logits); olmo2
(post-norms only, q/k norms over whole projections); gemma3 (q/k norms, post
norms, GELU, sliding-window layers with their own rope base, scaled
embeddings). Matrices are stored in any type lamina quantizes
(runtime.quants.quantize, or ggml's quantizer through libggml-python for the
types lamina runs but does not write); vectors stay F32 as converters write them."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSOR, GGMLQuantizationType, GGUFWriter, RopeScalingType

from lamina.engine.loader import tensor_name
from lamina.quants import quantize


@dataclass(frozen=True)
class TinyConfig:
    arch: str = "llama"
    n_vocab: int = 96
    n_embd: int = 64
    n_layer: int = 2
    n_ff: int = 128
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int | None = None  # None: n_embd // n_head (no key_length key written)
    n_rot: int | None = None  # None: no rope.dimension_count key
    n_ctx_train: int = 256
    rope_base: float = 10000.0
    rope_linear_factor: float | None = None
    rope_freqs: bool = False  # llama 3.1 style rope_freqs.weight
    sliding_window: int = 0  # gemma3
    swa_pattern: int | None = None  # gemma3: written when not None
    tied: bool = False
    qtype: str = "F32"  # matrices
    embd_qtype: str | None = None  # token_embd (default: qtype)
    norm_eps: float = 1e-5
    seed: int = 0
    # granite: (embedding, attention, residual, logit) scales written as metadata
    multipliers: tuple[float, float, float, float] | None = None
    softcaps: tuple[float, float] | None = None  # gemma2: (attention, final) written as metadata
    n_expert: int = 0  # qwen3moe: experts per layer (n_ff_exp rows each), n_expert_used per token
    n_expert_used: int = 0
    n_ff_exp: int = 0
    fused: bool = False  # phi3: attn_qkv and a [2 * n_ff] ffn_up instead of separate matrices
    long_rope: tuple[int, float] | None = None  # phi3 LongRoPE: (original context, attention factor)
    yarn: tuple[float, int] | None = None  # YaRN: (factor, original context)

    @property
    def hd(self) -> int:
        return self.head_dim or self.n_embd // self.n_head


LLAMA = TinyConfig()
LLAMA_MHA_TIED = TinyConfig(n_head=4, n_head_kv=4, tied=True, seed=1)
LLAMA_ROPE_SCALED = TinyConfig(rope_linear_factor=4.0, rope_freqs=True, n_head_kv=1, seed=2)
LLAMA_PARTIAL_ROT = TinyConfig(n_rot=8, seed=3)
QWEN2 = TinyConfig(arch="qwen2", n_head=4, n_head_kv=2, rope_base=1e6, seed=4)
QWEN3 = TinyConfig(arch="qwen3", n_head=4, n_head_kv=2, head_dim=32, rope_base=1e6, norm_eps=1e-6, seed=6)
GEMMA3 = TinyConfig(
    arch="gemma3",
    n_embd=64,
    n_head=2,
    n_head_kv=1,
    head_dim=64,
    n_layer=3,
    sliding_window=5,
    swa_pattern=3,
    tied=True,
    rope_base=1e6,
    norm_eps=1e-6,
    seed=5,
)
GRANITE = TinyConfig(arch="granite", multipliers=(4.0, 0.05, 0.3, 2.5), seed=7)
SMOLLM3 = TinyConfig(arch="smollm3", n_layer=4, rope_base=2e6, seed=8)  # layer 3 has no rope
# YaRN past a 16-position original context (its ramp spans pairs 0..2), and a NoPE layer it must leave alone
SMOLLM3_YARN = TinyConfig(arch="smollm3", n_layer=4, rope_base=100.0, yarn=(4.0, 16), seed=13)
GEMMA2 = TinyConfig(
    arch="gemma2",
    n_embd=64,
    n_head=2,
    n_head_kv=1,
    head_dim=32,
    n_layer=3,
    sliding_window=5,
    tied=True,
    softcaps=(2.0, 3.0),  # tight, so tanh bends the scores and logits of a tiny model
    norm_eps=1e-6,
    seed=9,
)
# llama.cpp scales gemma2's sliding layers too (rope_freq_scale_train_swa = rope_freq_scale_train)
GEMMA2_LINEAR = replace(GEMMA2, rope_linear_factor=4.0, seed=14)
GEMMA2_YARN = replace(GEMMA2, rope_base=100.0, yarn=(4.0, 16), seed=15)
# YaRN on the global layer only: the two sliding ones rotate unscaled at the local base (10k)
GEMMA3_YARN = replace(GEMMA3, rope_base=100.0, yarn=(4.0, 16), seed=16)
QWEN3MOE = TinyConfig(
    arch="qwen3moe", n_head=4, n_head_kv=2, head_dim=32, n_expert=8, n_expert_used=2, n_ff_exp=64, seed=11
)
# contexts of more than 64 positions a sequence rotate by the long factors
PHI3 = TinyConfig(arch="phi3", n_head=4, n_head_kv=2, fused=True, long_rope=(64, 1.19), seed=12)
OLMO2 = TinyConfig(arch="olmo2", n_head=4, n_head_kv=2, rope_base=5e5, seed=10)
CONFIGS = {
    "llama": LLAMA,
    "llama_mha_tied": LLAMA_MHA_TIED,
    "llama_rope_scaled": LLAMA_ROPE_SCALED,
    "llama_partial_rot": LLAMA_PARTIAL_ROT,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
    "gemma3": GEMMA3,
    "granite": GRANITE,
    "smollm3": SMOLLM3,
    "smollm3_yarn": SMOLLM3_YARN,
    "gemma2": GEMMA2,
    "gemma2_linear": GEMMA2_LINEAR,
    "gemma2_yarn": GEMMA2_YARN,
    "gemma3_yarn": GEMMA3_YARN,
    "olmo2": OLMO2,
    "qwen3moe": QWEN3MOE,
    "phi3": PHI3,
}


def for_block(cfg: TinyConfig, block: int) -> TinyConfig:
    """The same shape family, every row length a multiple of `block` (256 for K-quants)."""
    if cfg.n_embd % block == 0 and cfg.n_ff % block == 0 and (cfg.n_head * cfg.hd) % block == 0:
        return cfg
    scale = block // math.gcd(block, cfg.n_embd)
    n_embd = cfg.n_embd * scale
    head_dim = cfg.head_dim * scale if cfg.head_dim else None
    n_ff_exp = max(cfg.n_ff_exp * scale, block) if cfg.n_expert else 0
    return replace(cfg, n_embd=n_embd, n_ff=max(cfg.n_ff * scale, block), head_dim=head_dim, n_ff_exp=n_ff_exp)


# the models every offload split is checked on: one per architecture shape,
# gemma3 with one more global layer, and a k-quant llama
SPLIT_CASES = {
    "llama": LLAMA,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
    "granite": GRANITE,
    "smollm3": SMOLLM3,
    "smollm3_yarn": SMOLLM3_YARN,
    "gemma2": replace(GEMMA2, n_layer=4),
    "gemma3": replace(GEMMA3, n_layer=4),
    "gemma3_yarn": replace(GEMMA3_YARN, n_layer=4),
    "olmo2": OLMO2,
    "qwen3moe": QWEN3MOE,
    "phi3": PHI3,
    "llama-q4_k": replace(for_block(LLAMA, 256), qtype="Q4_K", n_layer=3),
}


def _matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)


def _norm(rng: np.random.Generator, n: int) -> np.ndarray:
    return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)


# the lattice i-quants
IQ_LATTICE = {
    GGMLQuantizationType.IQ2_XXS,
    GGMLQuantizationType.IQ2_XS,
    GGMLQuantizationType.IQ2_S,
    GGMLQuantizationType.IQ3_XXS,
    GGMLQuantizationType.IQ3_S,
    GGMLQuantizationType.IQ1_S,
    GGMLQuantizationType.IQ1_M,
}


def _add_matrix(w: GGUFWriter, name: str, x: np.ndarray, qtype: str) -> None:
    """x: [rows, cols], or [n_expert, rows, cols] for a stack of experts"""
    qt = GGMLQuantizationType[qtype]
    if qt == GGMLQuantizationType.F32:
        w.add_tensor(name, x)
    elif qt == GGMLQuantizationType.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        rows = x.reshape(-1, x.shape[-1])
        # the lattice i-quants with an importance matrix, which some need
        imatrix = (np.mean(rows.astype(np.float64) ** 2, axis=0) + 1e-3).astype(np.float32)
        q = quantize(rows, qt, imatrix=imatrix if qt in IQ_LATTICE else None)  # [all rows, row bytes]
        w.add_tensor(name, q.reshape(*x.shape[:-1], -1), raw_dtype=qt)


def write_tiny_model(
    path: Path,
    cfg: TinyConfig,
    *,
    drop: Collection[str] = (),
    override: Mapping[str, np.ndarray] | None = None,
    extra: Callable[[GGUFWriter], None] | None = None,
) -> Path:
    """drop: tensor names to leave out; override: tensors written as given
    instead; extra: adds more metadata (broken-file tests use all three)."""
    rng = np.random.default_rng(cfg.seed)
    override = override or {}
    arch = cfg.arch
    E, F, V, D = cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.hd
    w = GGUFWriter(path, arch=arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.n_ctx_train)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_vocab_size(V)
    if cfg.head_dim is not None:
        w.add_key_length(D)
        w.add_value_length(D)
    if cfg.n_rot is not None:
        w.add_rope_dimension_count(cfg.n_rot)
    if cfg.rope_linear_factor is not None:
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(cfg.rope_linear_factor)
    if cfg.yarn is not None:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg.yarn[0])
        w.add_rope_scaling_orig_ctx_len(cfg.yarn[1])
    if arch in (MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA3], MODEL_ARCH_NAMES[MODEL_ARCH.GEMMA2]):
        w.add_sliding_window(cfg.sliding_window)
    if cfg.multipliers is not None:
        embedding, attention, residual, logit = cfg.multipliers
        w.add_embedding_scale(embedding)
        w.add_attention_scale(attention)
        w.add_residual_scale(residual)
        w.add_logit_scale(logit)
    if cfg.long_rope is not None:
        w.add_rope_scaling_orig_ctx_len(cfg.long_rope[0])
        w.add_rope_scaling_attn_factors(cfg.long_rope[1])
    if cfg.n_expert:
        w.add_expert_count(cfg.n_expert)
        w.add_expert_used_count(cfg.n_expert_used)
        w.add_expert_feed_forward_length(cfg.n_ff_exp)
    if cfg.softcaps is not None:
        w.add_attn_logit_softcapping(cfg.softcaps[0])
        w.add_final_logit_softcapping(cfg.softcaps[1])
    if cfg.swa_pattern is not None:
        w.add_sliding_window_pattern(cfg.swa_pattern)

    if extra is not None:
        extra(w)

    def add(name: str, x: np.ndarray, qtype: str) -> None:
        if name in override:
            w.add_tensor(name, override[name])
        elif name not in drop:
            _add_matrix(w, name, x, qtype)

    mat = lambda name, rows, cols: add(name, _matrix(rng, rows, cols), cfg.qtype)
    vec = lambda name, x: add(name, x, "F32")
    add(
        tensor_name(MODEL_TENSOR.TOKEN_EMBD),
        rng.standard_normal((V, E)).astype(np.float32),
        cfg.embd_qtype or cfg.qtype,
    )
    vec(tensor_name(MODEL_TENSOR.OUTPUT_NORM), _norm(rng, E))
    if not cfg.tied:
        mat(tensor_name(MODEL_TENSOR.OUTPUT), V, E)
    if cfg.rope_freqs:
        vec(tensor_name(MODEL_TENSOR.ROPE_FREQS), (1.0 + 3.0 * rng.random((cfg.n_rot or D) // 2)).astype(np.float32))
    if cfg.long_rope is not None:
        half = (cfg.n_rot or D) // 2
        vec(tensor_name(MODEL_TENSOR.ROPE_FACTORS_SHORT), (1.0 + 0.5 * rng.random(half)).astype(np.float32))
        vec(tensor_name(MODEL_TENSOR.ROPE_FACTORS_LONG), (1.0 + 8.0 * rng.random(half)).astype(np.float32))
    q_dim, kv_dim = cfg.n_head * D, cfg.n_head_kv * D
    for il in range(cfg.n_layer):
        n = lambda kind, suffix="weight", il=il: tensor_name(kind, il, suffix)
        if arch != "olmo2":  # olmo2 norms sublayer outputs only
            vec(n(MODEL_TENSOR.ATTN_NORM), _norm(rng, E))
        if cfg.fused:
            mat(n(MODEL_TENSOR.ATTN_QKV), q_dim + 2 * kv_dim, E)
        else:
            mat(n(MODEL_TENSOR.ATTN_Q), q_dim, E)
            mat(n(MODEL_TENSOR.ATTN_K), kv_dim, E)
            mat(n(MODEL_TENSOR.ATTN_V), kv_dim, E)
        if arch == "qwen2":
            vec(n(MODEL_TENSOR.ATTN_Q, "bias"), (0.5 * rng.standard_normal(q_dim)).astype(np.float32))
            vec(n(MODEL_TENSOR.ATTN_K, "bias"), (0.5 * rng.standard_normal(kv_dim)).astype(np.float32))
            vec(n(MODEL_TENSOR.ATTN_V, "bias"), (0.5 * rng.standard_normal(kv_dim)).astype(np.float32))
        if arch in ("gemma3", "qwen3", "qwen3moe"):
            vec(n(MODEL_TENSOR.ATTN_Q_NORM), _norm(rng, D))
            vec(n(MODEL_TENSOR.ATTN_K_NORM), _norm(rng, D))
        if arch == "olmo2":  # over the whole projections
            vec(n(MODEL_TENSOR.ATTN_Q_NORM), _norm(rng, q_dim))
            vec(n(MODEL_TENSOR.ATTN_K_NORM), _norm(rng, kv_dim))
        if arch in ("gemma3", "gemma2", "olmo2"):
            vec(n(MODEL_TENSOR.ATTN_POST_NORM), _norm(rng, E))
            vec(n(MODEL_TENSOR.FFN_POST_NORM), _norm(rng, E))
        mat(n(MODEL_TENSOR.ATTN_OUT), E, q_dim)
        if arch != "olmo2":
            vec(n(MODEL_TENSOR.FFN_NORM), _norm(rng, E))
        if cfg.n_expert:
            X, Fe = cfg.n_expert, cfg.n_ff_exp
            # the router stays F32 as llama-quantize leaves it; scaled up so it has favourites
            add(n(MODEL_TENSOR.FFN_GATE_INP), 3.0 * _matrix(rng, X, E), "F32")
            stack = lambda rows, cols, X=X: np.stack([_matrix(rng, rows, cols) for _ in range(X)])
            add(n(MODEL_TENSOR.FFN_GATE_EXP), stack(Fe, E), cfg.qtype)
            add(n(MODEL_TENSOR.FFN_UP_EXP), stack(Fe, E), cfg.qtype)
            add(n(MODEL_TENSOR.FFN_DOWN_EXP), stack(E, Fe), cfg.qtype)
            continue
        if cfg.fused:
            mat(n(MODEL_TENSOR.FFN_UP), 2 * F, E)
            mat(n(MODEL_TENSOR.FFN_DOWN), E, F)
            continue
        mat(n(MODEL_TENSOR.FFN_GATE), F, E)
        mat(n(MODEL_TENSOR.FFN_UP), F, E)
        mat(n(MODEL_TENSOR.FFN_DOWN), E, F)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
