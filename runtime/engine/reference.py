"""The decoder forward pass in plain numpy (float64): the oracle the native
forward is tested against. Written for reading, not speed.

    weights = load_reference_weights(gguf)     # every tensor dequantized by gguf-py
    logits = forward(hparams, weights, tokens) # [T, n_vocab], positions 0..T-1

Shapes: T tokens, E = n_embd, H / Hkv query / key-value heads, D = head_dim,
F = n_ff, V = n_vocab. Matrices are [out, in] (numpy order of a GGUF tensor).

kv_type emulates what the native KV cache stores ("f32", "f16" or "q8_0"):
the keys and values every query reads are rounded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gguf import MODEL_TENSOR, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from lamina.engine.encoder import EncoderHParams
from lamina.engine.loader import HParams, LayerConfig, tensor_name
from lamina.gguf.reader import GGUFFile


def load_reference_weights(gguf: GGUFFile) -> dict[str, np.ndarray]:
    """name -> float64 array in numpy shape, dequantized by gguf-py (not by lamina)."""
    out = {}
    for info in gguf.tensors:
        values = gguf_dequantize(gguf.tensor_bytes(info.name), info.ggml_type)  # [rows, ne[0]]
        out[info.name] = values.astype(np.float64).reshape(info.np_shape)
    # <name>.scale (NVFP4's per-tensor scale_2): W's output times it, per expert for a stack
    for name in [n for n in out if n.endswith(".scale")]:
        weight = name.removesuffix(".scale") + ".weight"
        if weight in out:
            w = out[weight]
            out[weight] = w * out[name].reshape((-1,) + (1,) * (w.ndim - 1))
    return out


# -- building blocks ---------------------------------------------------------


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, plus_one: bool) -> np.ndarray:
    # x: [..., n], w: [n]
    scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * scale * (w + 1.0 if plus_one else w)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def rope_angles(
    hp: HParams, layer: LayerConfig, positions: np.ndarray, freq_factors: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: [T, n_rot/2] of theta[t, i] = pos_t * scale * base^(-2i/n_rot) / factor_i,
    times LongRoPE's or YaRN's attention factor; a NoPE layer (scale 0) is not rotated nor scaled,
    a plain layer neither divided by the factors nor scaled"""
    i = np.arange(hp.n_rot // 2)
    if layer.rope_scale == 0.0:
        return np.ones((len(positions), len(i))), np.zeros((len(positions), len(i)))
    inv_freq = layer.rope_scale * layer.rope_base ** (-2.0 * i / hp.n_rot)  # [n_rot/2]
    if freq_factors is not None and not layer.rope_plain:
        inv_freq = inv_freq / freq_factors
    theta = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [T, n_rot/2]
    ms = 1.0 if layer.rope_plain else hp.rope_attn_factor
    return np.cos(theta) * ms, np.sin(theta) * ms


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int, neox: bool) -> np.ndarray:
    # x: [T, heads, D]; cos, sin: [T, n_rot/2]; dims >= n_rot pass through
    half = n_rot // 2
    a_idx = np.arange(half) if neox else np.arange(0, n_rot, 2)
    b_idx = a_idx + half if neox else a_idx + 1
    a, b = x[..., a_idx], x[..., b_idx]  # [T, heads, n_rot/2]
    c, s = cos[:, None, :], sin[:, None, :]  # [T, 1, n_rot/2]
    out = x.copy()
    out[..., a_idx] = a * c - b * s
    out[..., b_idx] = a * s + b * c
    return out


def round_kv(x: np.ndarray, kv_type: str) -> np.ndarray:
    # x: [T, Hkv, D] -> the values the cache gives back
    if kv_type == "f32":
        return x.astype(np.float32).astype(np.float64)
    if kv_type == "f16":
        return x.astype(np.float16).astype(np.float64)
    if kv_type == "q8_0":
        rows = x.reshape(x.shape[0], -1).astype(np.float32)  # [T, Hkv*D]
        q = gguf_quantize(rows, GGMLQuantizationType.Q8_0)
        return gguf_dequantize(q, GGMLQuantizationType.Q8_0).astype(np.float64).reshape(x.shape)
    raise ValueError(f"kv_type must be f32, f16 or q8_0, got {kv_type!r}")


def moe_ffn(hp: HParams, W: Mapping[str, np.ndarray], il: int, h: np.ndarray, act) -> np.ndarray:
    """The mixture of experts of layer il: h [T, E] -> [T, E]. Each row mixes the
    n_expert_used experts of highest router probability, in id order."""
    name = lambda kind: tensor_name(kind, il)
    logits = h @ W[name(MODEL_TENSOR.FFN_GATE_INP)].T  # [T, n_expert]
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    gate, up = W[name(MODEL_TENSOR.FFN_GATE_EXP)], W[name(MODEL_TENSOR.FFN_UP_EXP)]  # [n_expert, F, E]
    down = W[name(MODEL_TENSOR.FFN_DOWN_EXP)]  # [n_expert, E, F]
    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        picked = np.sort(np.argsort(-p[t], kind="stable")[: hp.n_expert_used])
        w = p[t][picked]
        if hp.expert_norm:
            w = w / max(w.sum(), 6.103515625e-5)
        for e, we in zip(picked, w):
            out[t] += we * ((act(gate[e] @ h[t]) * (up[e] @ h[t])) @ down[e].T)
    return out


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    """cap * tanh(x / cap); cap 0: x unchanged (gemma2's scores and logits)"""
    return cap * np.tanh(x / cap) if cap > 0 else x


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, window: int, cap: float = 0.0) -> np.ndarray:
    """Causal grouped-query attention over positions 0..T-1, scores soft-capped by cap.
    q: [T, H, D]; k, v: [T, Hkv, D] -> [T, H, D]"""
    T, H, D = q.shape
    group = H // k.shape[1]
    k = np.repeat(k, group, axis=1)  # [T, H, D]
    v = np.repeat(v, group, axis=1)  # [T, H, D]
    scores = softcap(np.einsum("thd,shd->hts", q, k) * scale, cap)  # [H, T(query), T(key)]
    t_idx, s_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    masked = s_idx > t_idx  # [T, T] future keys
    if window > 0:
        masked |= t_idx - s_idx >= window  # keys out of the window
    scores = np.where(masked[None], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)  # [H, T, T]
    return np.einsum("hts,shd->thd", p, v)  # [T, H, D]


# -- the model ---------------------------------------------------------------


def forward(
    hp: HParams,
    weights: Mapping[str, np.ndarray],
    tokens,
    kv_type: str = "f32",
    hidden: bool = False,
    long_rope: bool = False,
) -> np.ndarray:
    """Logits [T, n_vocab] of every position of `tokens` (positions 0..T-1);
    hidden: output_norm(x) [T, n_embd] instead, what embeddings pool;
    long_rope: LongRoPE's long factors (a context past rope_long_ctx), else the short ones."""
    if hp.oai_moe:
        # its oracle is transformers (tests/convert/test_arch_checkpoints.py), not this reference
        raise NotImplementedError("the numpy reference does not model gpt-oss (sinks, biases)")
    W = weights
    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    positions = np.arange(T)
    norm = lambda x, name: rms_norm(x, W[name], hp.norm_eps, hp.norm_plus_one)
    act = gelu_tanh if hp.activation == "gelu_tanh" else silu
    freq_factors = W[tensor_name(MODEL_TENSOR.ROPE_FREQS)] if hp.rope_freqs else None
    if hp.yarn_divisors is not None:
        freq_factors = np.asarray(hp.yarn_divisors, dtype=np.float32)
    if hp.long_rope:
        freq_factors = W[tensor_name(MODEL_TENSOR.ROPE_FACTORS_LONG if long_rope else MODEL_TENSOR.ROPE_FACTORS_SHORT)]

    x = W[tensor_name(MODEL_TENSOR.TOKEN_EMBD)][tokens] * hp.embd_scale  # [T, E]
    for il, layer in enumerate(hp.layers):
        name = lambda kind, suffix="weight", il=il: tensor_name(kind, il, suffix)
        # attention
        h = norm(x, name(MODEL_TENSOR.ATTN_NORM)) if hp.pre_norms else x  # [T, E]
        if hp.fused_qkv:  # phi3: one [H*D + 2*Hkv*D, E] matrix
            q, k, v = np.split(h @ W[name(MODEL_TENSOR.ATTN_QKV)].T, [hp.q_dim, hp.q_dim + hp.kv_dim], axis=-1)
        else:
            q = h @ W[name(MODEL_TENSOR.ATTN_Q)].T  # [T, H*D]
            k = h @ W[name(MODEL_TENSOR.ATTN_K)].T  # [T, Hkv*D]
            v = h @ W[name(MODEL_TENSOR.ATTN_V)].T  # [T, Hkv*D]
        if hp.qkv_bias:
            q = q + W[name(MODEL_TENSOR.ATTN_Q, "bias")]
            k = k + W[name(MODEL_TENSOR.ATTN_K, "bias")]
            v = v + W[name(MODEL_TENSOR.ATTN_V, "bias")]
        if hp.qk_norm and hp.qk_norm_whole:  # olmo2: over the whole projection
            q = norm(q, name(MODEL_TENSOR.ATTN_Q_NORM))
            k = norm(k, name(MODEL_TENSOR.ATTN_K_NORM))
        q = q.reshape(T, hp.n_head, hp.head_dim)  # [T, H, D]
        k = k.reshape(T, hp.n_head_kv, hp.head_dim)  # [T, Hkv, D]
        v = v.reshape(T, hp.n_head_kv, hp.head_dim)  # [T, Hkv, D]
        if hp.qk_norm and not hp.qk_norm_whole:
            q = norm(q, name(MODEL_TENSOR.ATTN_Q_NORM))
            k = norm(k, name(MODEL_TENSOR.ATTN_K_NORM))
        cos, sin = rope_angles(hp, layer, positions, freq_factors)  # [T, n_rot/2]
        q = apply_rope(q, cos, sin, hp.n_rot, hp.rope_neox)
        k = round_kv(apply_rope(k, cos, sin, hp.n_rot, hp.rope_neox), kv_type)
        v = round_kv(v, kv_type)
        att = attention(q, k, v, hp.attn_scale, layer.sliding_window, hp.attn_softcap)  # [T, H, D]
        out = att.reshape(T, hp.q_dim) @ W[name(MODEL_TENSOR.ATTN_OUT)].T  # [T, E]
        if hp.post_norms:
            out = norm(out, name(MODEL_TENSOR.ATTN_POST_NORM))
        x = x + out * hp.residual_scale
        # feed-forward
        h = norm(x, name(MODEL_TENSOR.FFN_NORM)) if hp.pre_norms else x  # [T, E]
        if hp.n_expert:
            out = moe_ffn(hp, W, il, h, act)  # [T, E]
        elif hp.fused_gate_up:  # phi3: ffn_up rows are gate, then up
            gate, up = np.split(h @ W[name(MODEL_TENSOR.FFN_UP)].T, 2, axis=-1)  # [T, F] each
            out = (act(gate) * up) @ W[name(MODEL_TENSOR.FFN_DOWN)].T  # [T, E]
        else:
            gate = h @ W[name(MODEL_TENSOR.FFN_GATE)].T  # [T, F]
            up = h @ W[name(MODEL_TENSOR.FFN_UP)].T  # [T, F]
            out = (act(gate) * up) @ W[name(MODEL_TENSOR.FFN_DOWN)].T  # [T, E]
        if hp.post_norms:
            out = norm(out, name(MODEL_TENSOR.FFN_POST_NORM))
        x = x + out * hp.residual_scale

    x = norm(x, tensor_name(MODEL_TENSOR.OUTPUT_NORM))  # [T, E]
    if hidden:
        return x
    head = MODEL_TENSOR.TOKEN_EMBD if hp.tied_output else MODEL_TENSOR.OUTPUT
    return softcap(x @ W[tensor_name(head)].T / hp.logit_scale, hp.final_softcap)  # [T, V]


# -- encoders (bert) -----------------------------------------------------------


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    # x: [..., n]
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def encoder_forward(
    hp: EncoderHParams, W: Mapping[str, np.ndarray], tokens: np.ndarray, types: np.ndarray | None = None
) -> np.ndarray:
    """llama.cpp's bert graph: the last layer's output [T, E] (float64), every
    token attending to every token; types None: all 0."""
    T_, E, H = len(tokens), hp.n_embd, hp.n_head
    D = E // H

    def lin(x: np.ndarray, kind: MODEL_TENSOR, il: int) -> np.ndarray:
        return x @ W[tensor_name(kind, il)].T + W[tensor_name(kind, il, "bias")]

    def norm(x: np.ndarray, kind: MODEL_TENSOR, il: int | None = None) -> np.ndarray:
        return layer_norm(x, W[tensor_name(kind, il)], W[tensor_name(kind, il, "bias")], hp.norm_eps)

    tt = np.zeros(T_, dtype=np.int64) if types is None else np.asarray(types)
    x = W[tensor_name(MODEL_TENSOR.TOKEN_EMBD)][tokens] + W[tensor_name(MODEL_TENSOR.TOKEN_TYPES)][tt]
    x = norm(x + W[tensor_name(MODEL_TENSOR.POS_EMBD)][:T_], MODEL_TENSOR.TOKEN_EMBD_NORM)  # [T, E]
    for il in range(hp.n_layer):
        q, k, v = (
            lin(x, kind, il).reshape(T_, H, D)
            for kind in (MODEL_TENSOR.ATTN_Q, MODEL_TENSOR.ATTN_K, MODEL_TENSOR.ATTN_V)
        )
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(D)  # [H, T, T], no mask
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        att = np.einsum("htu,uhd->thd", p, v).reshape(T_, E)
        x = norm(x + lin(att, MODEL_TENSOR.ATTN_OUT, il), MODEL_TENSOR.ATTN_OUT_NORM, il)
        h = gelu_erf(lin(x, MODEL_TENSOR.FFN_UP, il))  # [T, F]
        x = norm(x + lin(h, MODEL_TENSOR.FFN_DOWN, il), MODEL_TENSOR.LAYER_OUT_NORM, il)
    return x
