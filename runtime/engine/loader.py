"""From a validated GGUF file to a native `lm_model`.

    gguf = GGUFFile(path)
    hp = read_hparams(gguf)          # HParams: sizes + the per-architecture switches
    model = load_model(gguf, hp)     # NativeModel: pointers into the mmap, no copy

`read_hparams` reads the `{arch}.*` metadata and the tensor table and fills
one small dataclass that expresses every supported architecture (llama,
granite, smollm3, qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3, olmo2) as
switches of the same decoder layer. `load_model` checks every tensor the
layer needs (present, shape, type) and hands the native core pointers
straight into the file's memory map; the NativeModel keeps the GGUFFile
alive for as long as it lives. Every refusal is a typed error naming
the file, key or tensor, and what was expected versus found.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES, GGMLQuantizationType, Keys

from lamina.errors import (
    GGUFError,
    GGUFMissingKeyError,
    GGUFMissingTensorError,
    GGUFTensorError,
    UnsupportedArchitectureError,
)
from lamina.gguf.reader import GGUFFile, TensorInfo
from lamina.gptq.format import GPTQLinear, is_gptq_weight_name, read_gptq_linear

SUPPORTED_ARCHITECTURES = (
    "llama",
    "granite",
    "smollm3",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "gpt-oss",
    "phi3",
    "gemma2",
    "gemma3",
    "olmo2",
)


class ModelConfigError(GGUFError):
    """A hyperparameter is missing its partner, has the wrong type, or is out of range."""


# -- hyperparameters ---------------------------------------------------------


@dataclass(frozen=True)
class LayerConfig:
    rope_base: float
    rope_scale: float  # position multiplier: 1 / linear scaling factor; 0: no rope (NoPE layer)
    sliding_window: int  # attend to the last this-many positions; 0 = all
    # the model's rope factors (YaRN's divisors) and attention factor pass this
    # layer by: gemma3's sliding layers under YaRN, which llama.cpp leaves unscaled
    rope_plain: bool = False


@dataclass(frozen=True)
class HParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int  # gemma3: key_length, not n_embd / n_head
    n_rot: int  # rotated dims per head
    n_ctx_train: int
    norm_eps: float
    rope_neox: bool  # pairs (i, i + n_rot/2) instead of (2i, 2i+1)
    norm_plus_one: bool  # norms scale by (1 + w); GGUF gemma files have the 1 folded in already
    activation: str  # "silu" | "gelu_tanh" | "swiglu_oai"
    embd_scale: float
    attn_scale: float
    qkv_bias: bool
    qk_norm: bool
    post_norms: bool  # gemma: norm the attention and FFN outputs before the residual add
    tied_output: bool  # no output.weight: the output head reuses token_embd
    rope_freqs: bool  # llama 3.1: per-frequency divisors in rope_freqs.weight
    layers: tuple[LayerConfig, ...] = field(repr=False)
    two_pass_down: bool = False  # ffn_down input quantized twice (value + residual), see lamina.h
    residual_scale: float = 1.0  # granite: sublayer outputs scaled before the residual add
    logit_scale: float = 1.0  # granite: logits divided by this
    attn_softcap: float = 0.0  # gemma2: scores squashed by cap * tanh(s / cap); 0 = off
    final_softcap: float = 0.0  # gemma2: the same on the logits
    pre_norms: bool = True  # olmo2: False, sublayers read x itself (no attn_norm / ffn_norm)
    qk_norm_whole: bool = False  # olmo2: q/k norms span the whole projection, not one head
    n_expert: int = 0  # mixture of experts (qwen3moe): experts per layer; 0 = a dense FFN
    n_expert_used: int = 0  # experts mixed per token
    n_ff_exp: int = 0  # rows of one expert's gate and up
    expert_norm: bool = False  # the picked experts' weights divided by their sum
    fused_qkv: bool = False  # phi3: q, k, v are row ranges of one attn_qkv matrix
    fused_gate_up: bool = False  # phi3: gate and up are the two halves of ffn_up's rows
    long_rope: bool = False  # LongRoPE: rope_factors_short (rope_freqs' place) and rope_factors_long
    rope_long_ctx: int = 0  # contexts of more positions per sequence than this use the long factors
    rope_attn_factor: float = 1.0  # cos and sin times this (LongRoPE's attention factor)
    # gpt-oss: biases on the attention output, the router and the experts, a sink
    # logit per head, the FFN's norm stored as post_attention_norm, and the
    # picked experts' weights the softmax of their logits
    oai_moe: bool = False
    yarn_divisors: tuple[float, ...] | None = None  # YaRN: per-frequency divisors (rope_freqs' place)

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim


@dataclass(frozen=True)
class _ArchTraits:
    rope_neox: bool
    activation: str
    qkv_bias: bool | None  # None: optional, decided by the file
    qk_norm: bool
    post_norms: bool
    scaled_embd: bool  # embeddings * sqrt(n_embd)
    swa_pattern: int  # every swa_pattern-th layer is global, the rest slide; 0 = no sliding layers
    swa_rope_base: float  # rope base of the sliding layers unless the file says otherwise; 0: the global one
    two_pass_down: bool = False
    no_rope_period: int = 0  # smollm3: every no_rope_period-th layer has no rope (llama.cpp fixes it at 4)
    multipliers: bool = False  # granite: {arch}.embedding_scale, residual_scale, logit_scale
    softcaps: tuple[float, float] | None = None  # gemma2: (attention, final) defaults when the file has none
    big_layers: int = 0  # the 27B's layer count, whose attention scale is 1/sqrt(n_embd / n_head)
    pre_norms: bool = True
    qk_norm_whole: bool = False
    moe: bool = False  # every layer's FFN a mixture of experts ({arch}.expert_count, ...), weights normalized
    fused_ffn: bool = False  # phi3: ffn_up holds gate then up ([2 * n_ff] rows), no ffn_gate
    oai_moe: bool = False  # gpt-oss (HParams.oai_moe)
    # YaRN rope scaling is honoured (elsewhere refused): not for phi3, whose YaRN
    # neither llama.cpp's converter writes nor transformers' Phi3 has (it reads
    # "yarn" as LongRoPE, which the factor tensors say)
    yarn: bool = False
    # sliding layers take the file's rope scaling (linear factor, YaRN) as the
    # global ones do, as llama.cpp's rope_freq_scale_train_swa = rope_freq_scale_train
    # (gemma2, gpt-oss); False: they rotate unscaled (gemma3, as transformers'
    # local rotary embedding too)
    swa_rope_scaled: bool = False


_ARCHS: dict[str, _ArchTraits] = {
    "llama": _ArchTraits(False, "silu", None, False, False, False, 0, 0.0, yarn=True),
    # granite: llama with multipliers on the embeddings, attention, residual adds and logits
    "granite": _ArchTraits(False, "silu", None, False, False, False, 0, 0.0, multipliers=True, yarn=True),
    # smollm3: llama whose every 4th layer attends without rope (NoPE)
    "smollm3": _ArchTraits(False, "silu", None, False, False, False, 0, 0.0, no_rope_period=4, yarn=True),
    "qwen2": _ArchTraits(True, "silu", True, False, False, False, 0, 0.0, yarn=True),
    # qwen3: qwen2 without the q/k/v biases (unless the file has them), an RMS
    # norm over each query and key head before rope
    "qwen3": _ArchTraits(True, "silu", None, True, False, False, 0, 0.0, yarn=True),
    # phi3: fused q/k/v (or separate) and gate/up matrices, LongRoPE when the file has its factors;
    # its sliding window is ignored, as llama.cpp does
    "phi3": _ArchTraits(True, "silu", False, False, False, False, 0, 0.0, fused_ffn=True),
    # qwen3moe: qwen3 whose FFNs are mixtures of experts (llama.cpp normalizes the top-k weights)
    "qwen3moe": _ArchTraits(True, "silu", None, True, False, False, 0, 0.0, moe=True, yarn=True),
    # gpt-oss: every other layer slides (the first does; same rope base), YaRN, MoE with biases and sinks
    "gpt-oss": _ArchTraits(
        True, "swiglu_oai", True, False, False, False, 2, 0.0, moe=True, oai_moe=True, yarn=True, swa_rope_scaled=True
    ),
    # gemma3: 5 local (sliding, base 10k) layers then 1 global, as llama.cpp sets it
    # two_pass_down: GELU(gate) * up has outliers that one Q8_K pass rounds
    # away; with it the top-1 agreement with transformers goes from 91-96% to
    # 97-100% on short prompts. Decode does not notice (the 262k-row output
    # head dominates); prefill loses 10-25% (Model.load(two_pass_down=False))
    "gemma3": _ArchTraits(
        True, "gelu_tanh", False, True, True, True, 6, 10000.0, two_pass_down=True, big_layers=62, yarn=True
    ),
    # gemma2: every other layer slides (same rope base, the same rope scaling), soft-capped
    # scores and logits, no q/k norms
    "gemma2": _ArchTraits(
        True,
        "gelu_tanh",
        False,
        False,
        True,
        True,
        2,
        0.0,
        two_pass_down=True,
        softcaps=(50.0, 30.0),
        big_layers=46,
        yarn=True,
        swa_rope_scaled=True,
    ),
    # olmo2: norms after each sublayer only, q/k norms over the whole projections
    "olmo2": _ArchTraits(True, "silu", None, True, True, False, 0, 0.0, pre_norms=False, qk_norm_whole=True, yarn=True),
}
assert set(_ARCHS) == set(SUPPORTED_ARCHITECTURES)


def tensor_name(kind: MODEL_TENSOR, bid: int | None = None, suffix: str = "weight") -> str:
    base = TENSOR_NAMES[kind]
    return f"{base.format(bid=bid) if bid is not None else base}.{suffix}"


class _Meta:
    """Typed access to `{arch}.*` keys; every failure names its key."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf, self.arch = gguf, arch

    def key(self, template: str) -> str:
        return template.format(arch=self.arch)

    def _value(self, template: str, default: Any, required: bool) -> tuple[str, Any]:
        key = self.key(template)
        if key not in self.gguf.metadata:
            if required:
                raise GGUFMissingKeyError(self.gguf.path, f"required by the {self.arch} architecture", key=key)
            return key, default
        return key, self.gguf.metadata[key]

    def int(self, template: str, default: int | None = None, *, minimum: int = 1) -> int:
        key, v = self._value(template, default, default is None)
        if isinstance(v, (list, tuple, np.ndarray)):
            raise ModelConfigError(
                self.gguf.path, f"per-layer values are not supported, found an array of {len(v)}", key=key
            )
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ModelConfigError(self.gguf.path, f"expected an integer, found {v!r}", key=key)
        if v < minimum:
            raise ModelConfigError(self.gguf.path, f"expected an integer >= {minimum}, found {v}", key=key)
        return int(v)

    def float(self, template: str, default: float | None = None, *, positive: bool = True) -> float:
        key, v = self._value(template, default, default is None)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ModelConfigError(self.gguf.path, f"expected a number, found {v!r}", key=key)
        v = float(v)
        if not math.isfinite(v) or (positive and v <= 0):
            raise ModelConfigError(
                self.gguf.path, f"expected a finite {'positive ' if positive else ''}number, found {v}", key=key
            )
        return v


def _architecture(gguf: GGUFFile) -> str:
    arch = gguf.architecture
    if arch not in _ARCHS:
        raise UnsupportedArchitectureError(
            f"{gguf.path}: general.architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return arch


def _rope_scaling(meta: _Meta, traits: _ArchTraits, n_rot: int, rope_base: float) -> tuple[float, _Yarn | None]:
    """(linear position multiplier, YaRN or None) from rope.scaling.*; LongRoPE
    is read from its factor tensors, and anything else is refused."""
    key = meta.key(Keys.Rope.SCALING_TYPE)
    kind = meta.gguf.get(key, "linear")
    if kind == "yarn" and traits.yarn:
        return 1.0, _yarn(meta, n_rot, rope_base)
    if kind not in ("none", "linear"):
        supported = "none, linear, yarn" if traits.yarn else "none, linear"
        why = ""
        if kind == "yarn" and meta.arch == "phi3":
            why = (
                "; no phi3 model has it: llama.cpp's converter never writes it and transformers' "
                "Phi3 reads 'yarn' as LongRoPE, whose factor tensors the file would hold"
            )
        raise ModelConfigError(
            meta.gguf.path,
            f"rope scaling {kind!r} is not supported for {meta.arch} (supported: {supported}){why}",
            key=key,
        )
    factor = meta.float(Keys.Rope.SCALING_FACTOR, 0.0, positive=False)
    if kind == "none" or factor == 0.0:
        return 1.0, None
    if factor < 0:
        raise ModelConfigError(
            meta.gguf.path, f"expected a positive factor, found {factor}", key=meta.key(Keys.Rope.SCALING_FACTOR)
        )
    return 1.0 / factor, None


@dataclass(frozen=True)
class _Yarn:
    divisors: tuple[float, ...]  # [n_rot/2] theta_i / blended theta_i (rope_freqs' place)
    mscale: float  # cos and sin times this


# llama.cpp reads none of these keys for the architectures here (only grok,
# mistral3 and deepseek2 do): its YaRN always uses ext_factor 1, beta_fast 32,
# beta_slow 1, no log multiplier. A file that says otherwise is refused rather
# than run with either value.
_YARN_FIXED: tuple[tuple[str, float], ...] = (
    (Keys.Rope.SCALING_YARN_EXT_FACTOR, 1.0),
    (Keys.Rope.SCALING_YARN_BETA_FAST, 32.0),
    (Keys.Rope.SCALING_YARN_BETA_SLOW, 1.0),
    (Keys.Rope.SCALING_YARN_LOG_MUL, 0.0),
)


def _yarn(meta: _Meta, n_rot: int, rope_base: float) -> _Yarn:
    """YaRN as llama.cpp (ggml's rope_yarn) computes it: each frequency
    theta_i = base^(-2i/n_rot) is blended between itself (extrapolation) and
    theta_i / factor (interpolation) by a ramp over the pair index between the
    rounded correction dims of beta_fast and beta_slow; cos and sin are
    multiplied by 1 + 0.1 ln factor (rope.scaling.attn_factor, when present,
    multiplies that, as llama.cpp's context does).

    Where transformers differs, this follows llama.cpp: the ramp's ends are
    always rounded (transformers' `truncate: false`, gpt-oss, keeps them
    fractional), and the multiplier is always 1 + 0.1 ln factor: llama.cpp reads
    neither rope.scaling.yarn_attn_factor (HF's attention_factor) nor HF's
    mscale / mscale_all_dim, so a file whose yarn_attn_factor differs is refused."""
    for template, fixed in _YARN_FIXED:
        if (value := meta.gguf.get(meta.key(template))) is not None and float(value) != fixed:
            raise ModelConfigError(
                meta.gguf.path, f"YaRN with {value} is not supported (llama.cpp uses {fixed})", key=meta.key(template)
            )
    factor = meta.float(Keys.Rope.SCALING_FACTOR)
    n_ctx_orig = meta.int(Keys.Rope.SCALING_ORIG_CTX_LEN, meta.int(Keys.LLM.CONTEXT_LENGTH))
    if factor <= 1.0:
        raise ModelConfigError(
            meta.gguf.path, f"YaRN factor {factor}: expected > 1", key=meta.key(Keys.Rope.SCALING_FACTOR)
        )
    mscale = 1.0 + 0.1 * math.log(factor)
    attn_key = meta.key(Keys.Rope.SCALING_YARN_ATTN_FACTOR)
    if (value := meta.gguf.get(attn_key)) is not None and not math.isclose(float(value), mscale, rel_tol=1e-6):
        raise ModelConfigError(
            meta.gguf.path,
            f"YaRN attention factor {value} is not supported (llama.cpp ignores the key and uses "
            f"1 + 0.1 ln {factor} = {mscale:.6g})",
            key=attn_key,
        )

    def corr_dim(n_rotations: float) -> float:  # f32 as ggml_rope_yarn_corr_dim
        return float(
            np.float32(n_rot)
            * np.log(np.float32(n_ctx_orig) / (np.float32(n_rotations) * 2 * np.float32(math.pi)))
            / (2 * np.log(np.float32(rope_base)))
        )

    low = max(0.0, math.floor(corr_dim(32.0)))
    high = min(n_rot - 1.0, math.ceil(corr_dim(1.0)))
    freq_scale = 1.0 / factor
    divisors = []
    for i in range(n_rot // 2):
        ramp = 1.0 - min(1.0, max(0.0, (i - low) / max(0.001, high - low)))  # 1: extrapolate, 0: interpolate
        divisors.append(1.0 / (freq_scale * (1.0 - ramp) + ramp))
    return _Yarn(tuple(divisors), mscale)


def _sliding_layers(meta: _Meta, traits: _ArchTraits, n_layer: int) -> list[bool]:
    key = meta.key(Keys.Attention.SLIDING_WINDOW_PATTERN)
    pattern = meta.gguf.get(key, traits.swa_pattern)
    if isinstance(pattern, (list, tuple, np.ndarray)):
        if len(pattern) != n_layer:
            raise ModelConfigError(meta.gguf.path, f"expected {n_layer} per-layer flags, found {len(pattern)}", key=key)
        return [bool(x) for x in pattern]
    if isinstance(pattern, bool) or not isinstance(pattern, (int, np.integer)) or pattern < 0:
        raise ModelConfigError(
            meta.gguf.path, f"expected a layer period or per-layer flags, found {pattern!r}", key=key
        )
    period = int(pattern)  # a Python int: np.integer comparisons would give np.bool_ flags
    return [period > 0 and il % period < period - 1 for il in range(n_layer)]


def read_hparams(gguf: GGUFFile) -> HParams:
    """Every size and switch the native model needs, from metadata and the tensor table."""
    arch = _architecture(gguf)
    traits = _ARCHS[arch]
    meta = _Meta(gguf, arch)
    names = {t.name for t in gguf.tensors}

    n_embd = meta.int(Keys.LLM.EMBEDDING_LENGTH)
    n_layer = meta.int(Keys.LLM.BLOCK_COUNT)
    if n_layer > len(
        gguf.tensors
    ):  # every layer has tensors: a bigger count is a lie, refused before any list of layers
        raise ModelConfigError(
            gguf.path,
            f"block_count {n_layer} is more layers than the file has tensors ({len(gguf.tensors)})",
            key=meta.key(Keys.LLM.BLOCK_COUNT),
        )
    n_ff = meta.int(Keys.LLM.FEED_FORWARD_LENGTH)
    n_head = meta.int(Keys.Attention.HEAD_COUNT)
    n_head_kv = meta.int(Keys.Attention.HEAD_COUNT_KV, n_head)
    if n_head % n_head_kv:
        raise ModelConfigError(
            gguf.path,
            f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}",
            key=meta.key(Keys.Attention.HEAD_COUNT_KV),
        )
    if Keys.Attention.KEY_LENGTH.format(arch=arch) not in gguf.metadata and n_embd % n_head:
        raise ModelConfigError(
            gguf.path,
            f"embedding_length {n_embd} is not a multiple of head_count {n_head}",
            key=meta.key(Keys.Attention.KEY_LENGTH),
        )
    head_dim = meta.int(Keys.Attention.KEY_LENGTH, n_embd // n_head)
    value_dim = meta.int(Keys.Attention.VALUE_LENGTH, head_dim)
    if value_dim != head_dim:
        raise ModelConfigError(
            gguf.path,
            f"value_length {value_dim} != key_length {head_dim} is not supported",
            key=meta.key(Keys.Attention.VALUE_LENGTH),
        )
    n_rot = meta.int(Keys.Rope.DIMENSION_COUNT, head_dim, minimum=0)
    if n_rot % 2 or n_rot > head_dim:
        raise ModelConfigError(
            gguf.path,
            f"expected an even count <= head dim {head_dim}, found {n_rot}",
            key=meta.key(Keys.Rope.DIMENSION_COUNT),
        )

    embd_name = tensor_name(MODEL_TENSOR.TOKEN_EMBD)
    if embd_name not in names:
        raise GGUFMissingTensorError(gguf.path, f"required by the {arch} architecture", tensor=embd_name)
    embd_ne = gguf.tensor(embd_name).ne
    if len(embd_ne) != 2:
        raise GGUFTensorError(gguf.path, f"shape (ggml ne) {embd_ne}: expected ({n_embd}, n_vocab)", tensor=embd_name)
    n_vocab = embd_ne[1]
    declared = gguf.get(meta.key(Keys.LLM.VOCAB_SIZE))
    if declared is not None and declared != n_vocab:
        raise ModelConfigError(
            gguf.path, f"vocab_size {declared} != {n_vocab} rows of {embd_name}", key=meta.key(Keys.LLM.VOCAB_SIZE)
        )

    if arch == "olmo2" and meta.key(Keys.Attention.SLIDING_WINDOW) in gguf.metadata:
        raise ModelConfigError(
            gguf.path,
            "sliding-window olmo2 files (OLMo 3) are not supported yet",
            key=meta.key(Keys.Attention.SLIDING_WINDOW),
        )
    rope_base = meta.float(Keys.Rope.FREQ_BASE, 10000.0)
    rope_scale, yarn = _rope_scaling(meta, traits, n_rot, rope_base)
    window = meta.int(Keys.Attention.SLIDING_WINDOW, minimum=0) if traits.swa_pattern else 0
    sliding = _sliding_layers(meta, traits, n_layer) if traits.swa_pattern else [False] * n_layer
    swa_default = traits.swa_rope_base or rope_base
    swa_base = meta.float(Keys.Rope.FREQ_BASE_SWA, swa_default) if traits.swa_pattern else rope_base
    swa_scaled = traits.swa_rope_scaled
    swa_scale = rope_scale if swa_scaled else 1.0
    swa_layer = LayerConfig(swa_base, swa_scale, window, rope_plain=yarn is not None and not swa_scaled)
    layers = tuple(swa_layer if slides else LayerConfig(rope_base, rope_scale, 0) for slides in sliding)
    if yarn is not None and swa_scaled and swa_base != rope_base and any(sliding):
        # the divisors depend on the base, and the native core has one set of them
        raise ModelConfigError(
            gguf.path,
            f"YaRN with sliding layers of another rope base ({swa_base} vs {rope_base}) is not supported",
            key=meta.key(Keys.Rope.FREQ_BASE_SWA),
        )
    if traits.no_rope_period:
        period = traits.no_rope_period  # layers il with (il + 1) % period == 0, as llama.cpp
        layers = tuple(
            LayerConfig(lc.rope_base, 0.0, lc.sliding_window) if (il + 1) % period == 0 else lc
            for il, lc in enumerate(layers)
        )

    default_scale = 1.0 / math.sqrt(head_dim)
    if traits.big_layers and n_layer == traits.big_layers:
        default_scale = 1.0 / math.sqrt(n_embd / n_head)  # the 27B: query_pre_attn_scalar = n_embd / n_head
    attn_scale = meta.float(Keys.Attention.SCALE, default_scale)
    embd_scale = math.sqrt(n_embd) if traits.scaled_embd else 1.0
    residual_scale = logit_scale = 1.0
    if traits.multipliers:
        embd_scale = meta.float(Keys.LLM.EMBEDDING_SCALE, 1.0)
        residual_scale = meta.float(Keys.LLM.RESIDUAL_SCALE, 1.0)
        logit_scale = meta.float(Keys.LLM.LOGIT_SCALE, 1.0)
    n_expert = n_expert_used = n_ff_exp = 0
    if traits.moe:
        n_expert = meta.int(Keys.LLM.EXPERT_COUNT)
        n_expert_used = meta.int(Keys.LLM.EXPERT_USED_COUNT)
        n_ff_exp = meta.int(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH)
        if n_expert > 512 or n_expert_used > n_expert:
            raise ModelConfigError(
                gguf.path,
                f"expert_used_count {n_expert_used} of expert_count {n_expert}: expected at most 512 experts, "
                "and no more used than there are",
                key=meta.key(Keys.LLM.EXPERT_USED_COUNT),
            )
    long_rope = tensor_name(MODEL_TENSOR.ROPE_FACTORS_LONG) in names
    if long_rope != (tensor_name(MODEL_TENSOR.ROPE_FACTORS_SHORT) in names):
        raise GGUFMissingTensorError(
            gguf.path, "LongRoPE needs both factor tensors", tensor=tensor_name(MODEL_TENSOR.ROPE_FACTORS_SHORT)
        )
    if long_rope and tensor_name(MODEL_TENSOR.ROPE_FREQS) in names:
        raise GGUFTensorError(
            gguf.path, "rope_freqs and LongRoPE factors together", tensor=tensor_name(MODEL_TENSOR.ROPE_FREQS)
        )
    n_ctx_train = meta.int(Keys.LLM.CONTEXT_LENGTH)
    rope_long_ctx = meta.int(Keys.Rope.SCALING_ORIG_CTX_LEN, n_ctx_train) if long_rope else 0
    rope_attn_factor = meta.float(Keys.Rope.SCALING_ATTN_FACTOR, 1.0)
    if rope_attn_factor != 1.0 and any(lc.rope_plain for lc in layers):
        # llama.cpp would scale the plain layers' cos/sin by it, the native core does not
        raise ModelConfigError(
            gguf.path,
            f"attention factor {rope_attn_factor} with unscaled sliding layers is not supported",
            key=meta.key(Keys.Rope.SCALING_ATTN_FACTOR),
        )
    if yarn is not None:
        if tensor_name(MODEL_TENSOR.ROPE_FREQS) in names or long_rope:
            raise GGUFTensorError(
                gguf.path, "YaRN and rope factor tensors together", tensor=tensor_name(MODEL_TENSOR.ROPE_FREQS)
            )
        rope_attn_factor *= yarn.mscale
    attn_softcap = final_softcap = 0.0
    if traits.softcaps:
        attn_softcap = meta.float(Keys.LLM.ATTN_LOGIT_SOFTCAPPING, traits.softcaps[0])
        final_softcap = meta.float(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, traits.softcaps[1])

    bias_name = tensor_name(MODEL_TENSOR.ATTN_Q, 0, "bias")
    return HParams(
        arch=arch,
        n_vocab=n_vocab,
        n_embd=n_embd,
        n_layer=n_layer,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        n_ctx_train=n_ctx_train,
        norm_eps=meta.float(Keys.Attention.LAYERNORM_RMS_EPS),
        rope_neox=traits.rope_neox,
        norm_plus_one=False,
        activation=traits.activation,
        embd_scale=embd_scale,
        attn_scale=attn_scale,
        qkv_bias=traits.qkv_bias if traits.qkv_bias is not None else bias_name in names,
        qk_norm=traits.qk_norm,
        post_norms=traits.post_norms,
        tied_output=tensor_name(MODEL_TENSOR.OUTPUT) not in names,
        rope_freqs=tensor_name(MODEL_TENSOR.ROPE_FREQS) in names,
        layers=layers,
        two_pass_down=traits.two_pass_down,
        residual_scale=residual_scale,
        logit_scale=logit_scale,
        attn_softcap=attn_softcap,
        final_softcap=final_softcap,
        pre_norms=traits.pre_norms,
        qk_norm_whole=traits.qk_norm_whole,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        n_ff_exp=n_ff_exp,
        expert_norm=traits.moe and not traits.oai_moe,
        fused_qkv=tensor_name(MODEL_TENSOR.ATTN_QKV, 0) in names,
        fused_gate_up=traits.fused_ffn,
        long_rope=long_rope,
        rope_long_ctx=rope_long_ctx,
        rope_attn_factor=rope_attn_factor,
        oai_moe=traits.oai_moe,
        yarn_divisors=yarn.divisors if yarn else None,
    )


# -- tensors -----------------------------------------------------------------


def _supported_types() -> list[str]:
    from lamina.native import lib

    return [t.name for t in GGMLQuantizationType if lib.lm_type_supported(int(t))]


def _check_tensor(gguf: GGUFFile, name: str, ne: tuple[int, ...], arch: str) -> TensorInfo:
    try:
        info = gguf.tensor(name)
    except GGUFMissingTensorError:
        raise GGUFMissingTensorError(
            gguf.path, f"required by the {arch} architecture with these hyperparameters", tensor=name
        ) from None
    if tuple(info.ne) != ne:
        raise GGUFTensorError(gguf.path, f"shape (ggml ne) {tuple(info.ne)}: expected {ne}", tensor=name)
    from lamina.native import lib

    t = info.ggml_type
    if not lib.lm_type_supported(int(t)):
        raise GGUFTensorError(
            gguf.path, f"type {t.name} is not supported (supported: {', '.join(_supported_types())})", tensor=name
        )
    partner = lib.lm_type_vec_dot_type(int(t))
    for bt in (int(t), partner):
        bs = int(lib.lm_type_block_size(bt))
        if ne[0] % bs:
            raise GGUFTensorError(
                gguf.path,
                f"row length {ne[0]} is not a multiple of {lib.lm_type_name(bt)}'s block size {bs}",
                tensor=name,
            )
    return info


class NativeModel:
    """An lm_model whose weights are pointers into `gguf`'s memory map.

    Holds the GGUFFile and every buffer the pointers refer to, so nothing can
    be unmapped or collected while the native model exists."""

    def __init__(
        self, gguf: GGUFFile, hparams: HParams | None = None, overrides: Mapping[str, np.ndarray] | None = None
    ) -> None:
        from lamina.native import ffi, last_error, lib

        self.gguf = gguf
        self._overrides = dict(overrides or {})
        self._used_overrides = set()
        self.hparams = hp = hparams if hparams is not None else read_hparams(gguf)
        self._keep: list[Any] = []
        self._ffi = ffi
        params = ffi.new("lm_model_params *")
        layers = ffi.new("lm_layer_weights[]", hp.n_layer)
        self._keep += [params, layers]

        E, V = hp.n_embd, hp.n_vocab
        params.n_vocab, params.n_embd, params.n_layer, params.n_ff = V, E, hp.n_layer, hp.n_ff
        params.n_head, params.n_head_kv, params.head_dim, params.n_rot = hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_rot
        params.rope_layout = lib.LM_ROPE_NEOX if hp.rope_neox else lib.LM_ROPE_NORMAL
        params.norm_kind = lib.LM_NORM_RMS_PLUS_ONE if hp.norm_plus_one else lib.LM_NORM_RMS
        params.activation = {
            "silu": lib.LM_ACT_SILU,
            "gelu_tanh": lib.LM_ACT_GELU_TANH,
            "swiglu_oai": lib.LM_ACT_SWIGLU_OAI,
        }[hp.activation]
        params.expert_gating = lib.LM_GATING_SOFTMAX_PICKED if hp.oai_moe else lib.LM_GATING_SOFTMAX
        params.norm_eps, params.embd_scale, params.attn_scale = hp.norm_eps, hp.embd_scale, hp.attn_scale
        params.two_pass_down = int(hp.two_pass_down)
        params.residual_scale, params.logit_scale = hp.residual_scale, hp.logit_scale
        params.attn_softcap, params.final_softcap = hp.attn_softcap, hp.final_softcap
        params.qk_norm_whole = int(hp.qk_norm_whole)
        params.n_expert, params.n_expert_used, params.n_ff_exp = hp.n_expert, hp.n_expert_used, hp.n_ff_exp
        params.expert_norm = int(hp.expert_norm)
        params.rope_freqs = (
            self._vector(tensor_name(MODEL_TENSOR.ROPE_FREQS), hp.n_rot // 2, positive=True)
            if hp.rope_freqs
            else ffi.NULL
        )
        if hp.long_rope:
            half = hp.n_rot // 2
            params.rope_freqs = self._vector(tensor_name(MODEL_TENSOR.ROPE_FACTORS_SHORT), half, positive=True)
            params.rope_freqs_long = self._vector(tensor_name(MODEL_TENSOR.ROPE_FACTORS_LONG), half, positive=True)
            params.rope_long_ctx = hp.rope_long_ctx
        if hp.yarn_divisors is not None:
            divisors = np.asarray(hp.yarn_divisors, dtype=np.float32)
            buf = ffi.from_buffer("float[]", divisors)
            self._keep += [divisors, buf]
            params.rope_freqs = ffi.cast("const float *", buf)
        params.rope_attn_factor = hp.rope_attn_factor
        params.tok_embd = self._matrix(tensor_name(MODEL_TENSOR.TOKEN_EMBD), (E, V))
        params.output_norm = self._vector(tensor_name(MODEL_TENSOR.OUTPUT_NORM), E)
        params.output = params.tok_embd if hp.tied_output else self._matrix(tensor_name(MODEL_TENSOR.OUTPUT), (E, V))

        for il in range(hp.n_layer):
            L, cfg = layers[il], hp.layers[il]
            if hp.pre_norms:
                L.attn_norm = self._vector(tensor_name(MODEL_TENSOR.ATTN_NORM, il), E)
            if hp.fused_qkv:  # [q_dim + 2 kv_dim] rows: q, then k, then v
                qkv, rows = tensor_name(MODEL_TENSOR.ATTN_QKV, il), hp.q_dim + 2 * hp.kv_dim
                L.wq = self._rows(qkv, (E, rows), 0, hp.q_dim)
                L.wk = self._rows(qkv, (E, rows), hp.q_dim, hp.kv_dim)
                L.wv = self._rows(qkv, (E, rows), hp.q_dim + hp.kv_dim, hp.kv_dim)
            else:
                L.wq = self._matrix(tensor_name(MODEL_TENSOR.ATTN_Q, il), (E, hp.q_dim))
                L.wk = self._matrix(tensor_name(MODEL_TENSOR.ATTN_K, il), (E, hp.kv_dim))
                L.wv = self._matrix(tensor_name(MODEL_TENSOR.ATTN_V, il), (E, hp.kv_dim))
            if hp.qkv_bias:
                L.bq = self._vector(tensor_name(MODEL_TENSOR.ATTN_Q, il, "bias"), hp.q_dim)
                L.bk = self._vector(tensor_name(MODEL_TENSOR.ATTN_K, il, "bias"), hp.kv_dim)
                L.bv = self._vector(tensor_name(MODEL_TENSOR.ATTN_V, il, "bias"), hp.kv_dim)
            if hp.qk_norm:
                q_n, k_n = (hp.q_dim, hp.kv_dim) if hp.qk_norm_whole else (hp.head_dim, hp.head_dim)
                L.q_norm = self._vector(tensor_name(MODEL_TENSOR.ATTN_Q_NORM, il), q_n)
                L.k_norm = self._vector(tensor_name(MODEL_TENSOR.ATTN_K_NORM, il), k_n)
            L.wo = self._matrix(tensor_name(MODEL_TENSOR.ATTN_OUT, il), (hp.q_dim, E))
            if hp.oai_moe:
                L.bo = self._vector(tensor_name(MODEL_TENSOR.ATTN_OUT, il, "bias"), E)
                L.attn_sinks = self._vector(tensor_name(MODEL_TENSOR.ATTN_SINKS, il), hp.n_head)
                # llama.cpp's name for the FFN's pre-norm of gpt-oss
                L.ffn_norm = self._vector(tensor_name(MODEL_TENSOR.ATTN_POST_NORM, il), E)
            elif hp.pre_norms:
                L.ffn_norm = self._vector(tensor_name(MODEL_TENSOR.FFN_NORM, il), E)
            if hp.n_expert:
                X, Fe = hp.n_expert, hp.n_ff_exp
                L.moe_router = self._matrix(tensor_name(MODEL_TENSOR.FFN_GATE_INP, il), (E, X))
                L.moe_gate = self._matrix(tensor_name(MODEL_TENSOR.FFN_GATE_EXP, il), (E, Fe, X))
                L.moe_up = self._matrix(tensor_name(MODEL_TENSOR.FFN_UP_EXP, il), (E, Fe, X))
                L.moe_down = self._matrix(tensor_name(MODEL_TENSOR.FFN_DOWN_EXP, il), (Fe, E, X))
                if hp.oai_moe:
                    L.moe_router_b = self._vector(tensor_name(MODEL_TENSOR.FFN_GATE_INP, il, "bias"), (X,))
                    L.moe_gate_b = self._vector(tensor_name(MODEL_TENSOR.FFN_GATE_EXP, il, "bias"), (Fe, X))
                    L.moe_up_b = self._vector(tensor_name(MODEL_TENSOR.FFN_UP_EXP, il, "bias"), (Fe, X))
                    L.moe_down_b = self._vector(tensor_name(MODEL_TENSOR.FFN_DOWN_EXP, il, "bias"), (E, X))
            elif hp.fused_gate_up:  # [2 n_ff] rows: gate, then up
                up = tensor_name(MODEL_TENSOR.FFN_UP, il)
                L.w_gate = self._rows(up, (E, 2 * hp.n_ff), 0, hp.n_ff)
                L.w_up = self._rows(up, (E, 2 * hp.n_ff), hp.n_ff, hp.n_ff)
                L.w_down = self._matrix(tensor_name(MODEL_TENSOR.FFN_DOWN, il), (hp.n_ff, E))
            else:
                L.w_gate = self._matrix(tensor_name(MODEL_TENSOR.FFN_GATE, il), (E, hp.n_ff))
                L.w_up = self._matrix(tensor_name(MODEL_TENSOR.FFN_UP, il), (E, hp.n_ff))
                L.w_down = self._matrix(tensor_name(MODEL_TENSOR.FFN_DOWN, il), (hp.n_ff, E))
            if hp.post_norms:
                L.attn_post_norm = self._vector(tensor_name(MODEL_TENSOR.ATTN_POST_NORM, il), E)
                L.ffn_post_norm = self._vector(tensor_name(MODEL_TENSOR.FFN_POST_NORM, il), E)
            L.rope_base, L.rope_scale, L.sliding_window = cfg.rope_base, cfg.rope_scale, cfg.sliding_window
            L.rope_plain = int(cfg.rope_plain)

        unused = set(self._overrides) - self._used_overrides
        if unused:
            raise ModelConfigError(
                gguf.path, f"overrides name weight matrices this model does not have: {', '.join(sorted(unused))}"
            )
        ptr = lib.lm_model_create(params, layers)
        if ptr == ffi.NULL:
            raise GGUFError(gguf.path, f"the native core refused the model: {last_error()}")
        self.ptr = ffi.gc(ptr, lib.lm_model_free)

    _used_overrides: set[str]

    def close(self) -> None:
        """Free the native model now and drop the file mapping; only after every
        context made from it is closed (they point into it)."""
        from lamina.native import ffi

        if self.ptr is not None:
            ffi.release(self.ptr)
            self.ptr = None
            self._keep = []
            self.gguf.close()

    def _matrix(self, name: str, ne: tuple[int, ...]) -> Any:
        """ne: ggml's (cols, rows), or (cols, rows, n_expert) for a stack of experts"""
        if name not in self._overrides and is_gptq_weight_name(name):
            gptq = read_gptq_linear(self.gguf, name)
            if gptq is not None:
                return self._gptq_matrix(gptq, (ne[0], ne[1]))
        info = _check_tensor(self.gguf, name, ne, self.hparams.arch)
        if name in self._overrides:
            data, ggml_type = self._override(name, (ne[0], ne[1])), GGMLQuantizationType.F32
        else:
            data, ggml_type = self.gguf.tensor_bytes(name), info.ggml_type
        m = self._view_matrix(data, ggml_type)
        m.scale = self._output_scale(name, ne[2] if len(ne) > 2 else 1)
        return m

    def _rows(self, name: str, ne: tuple[int, int], row0: int, n_rows: int) -> Any:
        """Rows [row0, row0 + n_rows) of a fused matrix of shape ne, as a matrix of its own (no copy)."""
        info = _check_tensor(self.gguf, name, ne, self.hparams.arch)
        data = self.gguf.tensor_bytes(name).reshape(ne[1], -1)  # [rows, row bytes]
        m = self._view_matrix(data[row0 : row0 + n_rows], info.ggml_type)
        m.scale = self._output_scale(name, 1)
        return m

    def _output_scale(self, name: str, n: int) -> Any:
        """NULL, or the matrix's output scale: llama.cpp's converter keeps an
        NVFP4 checkpoint's per-tensor scale_2 as <name>.scale (f32 [1], or
        [n_expert] for a stack of experts), which llama.cpp multiplies into
        the matmul's output"""
        scale = name.removesuffix(".weight") + ".scale"
        if not self.gguf.has_tensor(scale):
            return self._ffi.NULL
        if name == tensor_name(MODEL_TENSOR.TOKEN_EMBD) or name in self._overrides:
            # llama.cpp applies none to embedding rows, and refuses a tied head with one
            raise GGUFTensorError(
                self.gguf.path, f"has an output scale {scale}, which an embedding or override cannot take", tensor=name
            )
        return self._vector(scale, n)

    def _view_matrix(self, data: np.ndarray, ggml_type: int) -> Any:
        """An lm_matrix over data (no copy); data is kept alive with the model."""
        buf = self._ffi.from_buffer(data)
        self._keep += [data, buf]
        return self._lm_matrix(buf, ggml_type)

    def _lm_matrix(self, ptr: Any, ggml_type: int) -> Any:
        m = self._ffi.new("lm_matrix *", {"data": ptr, "type": int(ggml_type)})
        self._keep.append(m)
        return m[0]

    def _gptq_matrix(self, gptq: GPTQLinear, ne: tuple[int, int]) -> Any:
        """A GPTQ INT4 linear run from its packed tensors (views of the map)."""
        from lamina.gptq.kernels import GPTQMatrix
        from lamina.native import lib

        if (gptq.n_in, gptq.n_out) != ne:
            raise GGUFTensorError(
                self.gguf.path,
                f"GPTQ linear is {gptq.n_out} x {gptq.n_in} (outputs x inputs): expected {ne[1]} x {ne[0]}",
                tensor=gptq.name,
            )
        packed = GPTQMatrix(gptq.qweight, gptq.scales, gptq.qzeros, gptq.g_idx, gptq.group_size, name=gptq.name)
        self._keep.append(packed)
        return self._lm_matrix(packed.native, lib.LM_TYPE_GPTQ_INT4)

    def _override(self, name: str, ne: tuple[int, int]) -> np.ndarray:
        """The caller's f32 [rows, cols] replacement of a weight matrix (GPTQ
        calibration runs the model with the layers it has already quantized)."""
        w = self._overrides[name]
        rows_cols = (ne[1], ne[0])
        if not isinstance(w, np.ndarray) or w.shape != rows_cols or w.dtype.kind != "f":
            raise ModelConfigError(
                self.gguf.path,
                f"override of {name}: expected a float array of shape "
                f"{rows_cols}, got {getattr(w, 'dtype', type(w).__name__)} "
                f"{getattr(w, 'shape', '')}",
            )
        w = np.ascontiguousarray(w, dtype=np.float32)
        if not np.all(np.isfinite(w)):
            raise ModelConfigError(self.gguf.path, f"override of {name}: has non-finite values")
        self._used_overrides.add(name)
        return w

    def _vector(self, name: str, n: int | tuple[int, ...], *, positive: bool = False) -> Any:
        """f32 pointer to a small vector (or ggml ne, e.g. a bias per expert):
        into the map when F32, else a dequantized copy."""
        info = _check_tensor(self.gguf, name, (n,) if isinstance(n, int) else n, self.hparams.arch)
        raw = self.gguf.tensor_bytes(name)
        if info.ggml_type == GGMLQuantizationType.F32:
            values = raw.reshape(-1).view(np.float32)
        else:
            from lamina.quants import dequantize

            values = dequantize(raw.reshape(1, -1), info.ggml_type).reshape(-1)
        if not np.all(np.isfinite(values)) or (positive and not np.all(values > 0)):
            raise GGUFTensorError(
                self.gguf.path, f"expected {'positive ' if positive else ''}finite values", tensor=name
            )
        buf = self._ffi.from_buffer("float[]", values)
        self._keep += [values, buf]
        return self._ffi.cast("const float *", buf)


def load_model(
    gguf: GGUFFile, hparams: HParams | None = None, overrides: Mapping[str, np.ndarray] | None = None
) -> NativeModel:
    """The native model of an open GGUF file (hparams: override what the file
    says, for tests; overrides: f32 [rows, cols] arrays used instead of the
    file's weight matrices of those names)."""
    return NativeModel(gguf, hparams, overrides)
