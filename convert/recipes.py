"""Quantization mixes: which ggml type each tensor gets, as llama-quantize picks.

A port of llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for the
mixes lamina writes and for dense (non-MoE) models without an imatrix:
- only 2-D+ tensors whose name ends in "weight" are quantized, never norms;
- output.weight (or token_embd.weight when the embeddings are tied) -> Q6_K,
  or Q8_0 when its rows are not a multiple of the mix's block size;
- attn_v and ffn_down get more bits in some layers (`use_more_bits`: the
  first and last eighth of the layers and every third layer between);
- TQ1_0/TQ2_0 give an untied token_embd.weight Q4_K; MXFP4_MOE (llama-quantize's
  name for its MXFP4 mix) gives MXFP4 only to stacked expert tensors (ne[2] > 1)
  and Q8_0 to every other quantized tensor, the output head included;
- a type whose block does not divide the row length falls back to a smaller
  block (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K/TQ1_0/TQ2_0 ->
  Q4_0) and then to F16.
Layer counters run in llama-quantize's tensor order (`tensor_order`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F

from lamina.convert.errors import ConvertError


@dataclass(frozen=True)
class Mix:
    name: str  # CLI spelling, e.g. "q4_k_m"
    ftype: F  # general.file_type
    default: Q  # the type most tensors get


MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Mix("f32", F.ALL_F32, Q.F32),
        Mix("f16", F.MOSTLY_F16, Q.F16),
        Mix("bf16", F.MOSTLY_BF16, Q.BF16),
        Mix("q8_0", F.MOSTLY_Q8_0, Q.Q8_0),
        Mix("q4_0", F.MOSTLY_Q4_0, Q.Q4_0),
        Mix("q4_1", F.MOSTLY_Q4_1, Q.Q4_1),
        Mix("q5_0", F.MOSTLY_Q5_0, Q.Q5_0),
        Mix("q5_1", F.MOSTLY_Q5_1, Q.Q5_1),
        Mix("q2_k", F.MOSTLY_Q2_K, Q.Q2_K),
        Mix("q3_k_s", F.MOSTLY_Q3_K_S, Q.Q3_K),
        Mix("q3_k_m", F.MOSTLY_Q3_K_M, Q.Q3_K),
        Mix("q3_k_l", F.MOSTLY_Q3_K_L, Q.Q3_K),
        Mix("q4_k_s", F.MOSTLY_Q4_K_S, Q.Q4_K),
        Mix("q4_k_m", F.MOSTLY_Q4_K_M, Q.Q4_K),
        Mix("q5_k_s", F.MOSTLY_Q5_K_S, Q.Q5_K),
        Mix("q5_k_m", F.MOSTLY_Q5_K_M, Q.Q5_K),
        Mix("q6_k", F.MOSTLY_Q6_K, Q.Q6_K),
        Mix("tq1_0", F.MOSTLY_TQ1_0, Q.TQ1_0),
        Mix("tq2_0", F.MOSTLY_TQ2_0, Q.TQ2_0),
        Mix("mxfp4_moe", F.MOSTLY_MXFP4_MOE, Q.MXFP4),
    )
}
# shorthands: --q4_k means the mix llama.cpp recommends
ALIASES = {"q4_k": "q4_k_m", "q5_k": "q5_k_m", "q3_k": "q3_k_m"}


def get_mix(name: str) -> Mix:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MIXES:
        raise ConvertError(f"unknown output type {name!r}; choose one of {', '.join(MIXES)}")
    return MIXES[key]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    type: Q  # the type it has now (the source's)


@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    n_head: int
    n_head_kv: int
    is_70b: bool  # llama.cpp's LLM_TYPE_70B: more bits for attn_v

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


_LAYER = re.compile(r"^blk\.(\d+)\.")


def tensor_order(names: list[str]) -> list[str]:
    """llama-quantize's order: by layer (non-layer tensors first), then by name."""

    def key(name: str) -> tuple[int, str]:
        m = _LAYER.match(name)
        return (int(m.group(1)) if m else -1, name)

    return sorted(names, key=key)


def allows_quantization(t: TensorSpec) -> bool:
    return (
        len(t.ne) >= 2
        and t.name.endswith("weight")
        and "_norm.weight" not in t.name
        and "ffn_gate_inp.weight" not in t.name
    )


def choose_types(
    tensors: list[TensorSpec], mix: Mix, shape: ModelShape, pure: bool = False, has_imatrix: bool = False
) -> dict[str, Q]:
    """Target type per tensor name; `tensors` must be in tensor_order."""
    state = _Counters(
        n_attn_v=sum(_category(t.name) == "attn_v" for t in tensors),
        tied=not any(t.name == "output.weight" for t in tensors),
        has_imatrix=has_imatrix,
    )
    out: dict[str, Q] = {}
    for t in tensors:
        if not allows_quantization(t):
            out[t.name] = t.type
            continue
        new = mix.default
        if _is_quantized(mix.default):
            if not pure:
                new = _mix_rule(state, t, mix, shape, new)
            new = _fallback(t, new)
        out[t.name] = new
    return out


@dataclass
class _Counters:
    n_attn_v: int
    tied: bool
    has_imatrix: bool = False  # llama-quantize's qs.has_imatrix
    i_attn_v: int = 0
    i_ffn_down: int = 0


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for needle, cat in (
        ("attn_qkv.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if needle in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mix_rule(s: _Counters, t: TensorSpec, mix: Mix, shape: ModelShape, new: Q) -> Q:
    cat, f = _category(t.name), mix.ftype
    if cat == "output" or (s.tied and cat == "token_embd"):
        if f == F.MOSTLY_MXFP4_MOE or t.ne[0] % _block(new) != 0:
            return Q.Q8_0
        return new if new == Q.Q8_0 else Q.Q6_K
    if f == F.MOSTLY_MXFP4_MOE:
        # MXFP4 for the stacked expert tensors (ne[2] experts), Q8_0 for the rest
        return Q.MXFP4 if len(t.ne) > 2 and t.ne[2] > 1 else Q.Q8_0
    if cat == "token_embd":
        return Q.Q4_K if f in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0) else new
    if cat == "attn_v":
        if f == F.MOSTLY_Q2_K:
            new = Q.Q4_K if shape.n_gqa >= 4 else Q.Q3_K
        elif f == F.MOSTLY_Q3_K_M:
            new = Q.Q5_K if s.i_attn_v < 2 else Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new = Q.Q5_K
        elif f in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(s.i_attn_v, s.n_attn_v):
            new = Q.Q6_K
        elif f == F.MOSTLY_Q4_K_S and s.i_attn_v < 4:
            new = Q.Q5_K
        if shape.is_70b and new in (Q.Q3_K, Q.Q4_K):
            new = Q.Q5_K
        s.i_attn_v += 1
    elif cat == "ffn_down":
        i, n = s.i_ffn_down, shape.n_layer
        if f == F.MOSTLY_Q2_K:
            new = Q.Q3_K
        elif f == F.MOSTLY_Q3_K_M:
            new = Q.Q5_K if i < n // 16 else Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new = Q.Q5_K
        elif f == F.MOSTLY_Q4_K_M:
            if _use_more_bits(i, n):
                new = Q.Q6_K
        elif f == F.MOSTLY_Q5_K_M and _use_more_bits(i, n):
            new = Q.Q6_K
        elif f == F.MOSTLY_Q4_K_S and i < n // 8:
            new = Q.Q5_K
        elif f in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and s.has_imatrix and i < n // 8:
            # llama-quantize's guard for the first ffn_down layers, with an imatrix only
            new = Q.Q4_1 if f == F.MOSTLY_Q4_0 else Q.Q5_1
        s.i_ffn_down += 1
    elif cat == "attn_output":
        if f == F.MOSTLY_Q2_K:
            new = Q.Q3_K
        elif f == F.MOSTLY_Q3_K_M:
            new = Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new = Q.Q5_K
    return new


_FALLBACK = {
    Q.Q2_K: Q.Q4_0,
    Q.Q3_K: Q.Q4_0,
    Q.Q4_K: Q.Q5_0,
    Q.Q5_K: Q.Q5_1,
    Q.Q6_K: Q.Q8_0,
    Q.TQ1_0: Q.Q4_0,
    Q.TQ2_0: Q.Q4_0,
}


def _fallback(t: TensorSpec, new: Q) -> Q:
    if t.ne[0] % _block(new) == 0:
        return new
    new = _FALLBACK.get(new, new)
    return new if t.ne[0] % _block(new) == 0 else Q.F16


def _block(q: Q) -> int:
    return GGML_QUANT_SIZES[q][0]


def _is_quantized(q: Q) -> bool:
    return q not in (Q.F32, Q.F16, Q.BF16)
