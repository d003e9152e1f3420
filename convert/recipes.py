"""Quantization mixes: which ggml type each tensor gets, as llama-quantize picks.

A port of llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for the
mixes lamina writes, dense and mixture-of-experts models:
- only 2-D+ tensors whose name ends in "weight" are quantized, never norms;
- output.weight (or token_embd.weight when the embeddings are tied) -> Q6_K,
  or Q8_0 when its rows are not a multiple of the mix's block size;
- attn_v and ffn_down get more bits in some layers (`use_more_bits`: the
  first and last eighth of the layers and every third layer between);
- TQ1_0/TQ2_0 give an untied token_embd.weight Q4_K; MXFP4_MOE (llama-quantize's
  name for its MXFP4 mix) gives MXFP4 only to stacked expert tensors (ne[2] > 1)
  and Q8_0 to every other quantized tensor, the output head included;
- the i-quant mixes (IQ1_S .. IQ3_M) mix lattice types with K-quants per
  tensor role; IQ1_S, IQ1_M, IQ2_*, IQ3_XXS and IQ3_XS write tensors whose
  type llama-quantize refuses to make without an importance matrix
  (`imatrix_required`); `choose_types(has_imatrix=...)` changes IQ3_XXS's
  attn_v and ffn_down as llama-quantize's has_imatrix does;
- mixture-of-experts models (`{arch}.expert_count` > 1) take the layer of
  ffn_down/gate/up from the tensor's name (expert and shared-expert tensors
  share a layer), and 8-expert models (Mixtral's shape) get llama-quantize's
  extra bits: Q8_0 attn_k and attn_v, Q5_K attn_output in the low-bit mixes;
- a type whose block does not divide the row length falls back to a smaller
  block (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K/TQ1_0/TQ2_0 ->
  Q4_0, the i-quants -> IQ4_NL) and then to F16.
Layer counters run in llama-quantize's tensor order (`tensor_order`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F

from lamina.convert.errors import ConvertError, ImatrixRequiredError


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
        Mix("q2_k_s", F.MOSTLY_Q2_K_S, Q.Q2_K),
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
        Mix("iq2_xxs", F.MOSTLY_IQ2_XXS, Q.IQ2_XXS),
        Mix("iq2_xs", F.MOSTLY_IQ2_XS, Q.IQ2_XS),
        Mix("iq2_s", F.MOSTLY_IQ2_S, Q.IQ2_XS),  # sic: llama_ftype_get_default_type
        Mix("iq2_m", F.MOSTLY_IQ2_M, Q.IQ2_S),
        Mix("iq3_xxs", F.MOSTLY_IQ3_XXS, Q.IQ3_XXS),
        Mix("iq3_xs", F.MOSTLY_IQ3_XS, Q.IQ3_S),
        Mix("iq3_s", F.MOSTLY_IQ3_S, Q.IQ3_S),
        Mix("iq3_m", F.MOSTLY_IQ3_M, Q.IQ3_S),
        Mix("iq1_s", F.MOSTLY_IQ1_S, Q.IQ1_S),
        Mix("iq1_m", F.MOSTLY_IQ1_M, Q.IQ1_M),
        Mix("iq4_nl", F.MOSTLY_IQ4_NL, Q.IQ4_NL),
        Mix("iq4_xs", F.MOSTLY_IQ4_XS, Q.IQ4_XS),
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
    n_expert: int = 0  # `{arch}.expert_count`: mixture-of-experts rules where > 1

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
    n_dims = len(t.ne)
    while n_dims > 1 and t.ne[n_dims - 1] == 1:  # ggml_n_dims: a [64, 1] classifier row is a vector
        n_dims -= 1
    return (
        n_dims >= 2
        and t.name.endswith("weight")
        and "_norm.weight" not in t.name
        and "ffn_gate_inp.weight" not in t.name
        and t.name not in ("position_embd.weight", "token_types.weight")  # bert's, kept as they are
    )


def choose_types(
    tensors: list[TensorSpec], mix: Mix, shape: ModelShape, pure: bool = False, has_imatrix: bool = False
) -> dict[str, Q]:
    """Target type per tensor name; `tensors` must be in tensor_order.
    has_imatrix: an importance matrix will be given (llama-quantize's
    has_imatrix); imatrix_required says which tensors then need one."""
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
    has_imatrix: bool = False
    i_attn_v: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0


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


def _layer(counter: int, name: str, shape: ModelShape) -> int:
    """llama-quantize's layer_info: the counter of the tensor's role, or in a
    mixture-of-experts model the layer its name says (experts and shared
    experts of one layer would count twice)"""
    if shape.n_expert <= 1:
        return counter
    m = _LAYER.match(name)
    if not m or not 0 <= int(m.group(1)) < shape.n_layer:
        raise ConvertError(f"tensor {name!r}: no layer index in [0, {shape.n_layer}) in its name (blk.N.)")
    return int(m.group(1))


# 8-expert models' attn_output gets Q5_K in these mixes
_MOE8_OUTPUT_Q5_K = (
    F.MOSTLY_Q2_K,
    F.MOSTLY_IQ3_XS,
    F.MOSTLY_IQ3_XXS,
    F.MOSTLY_Q3_K_S,
    F.MOSTLY_Q3_K_M,
    F.MOSTLY_IQ4_NL,
    F.MOSTLY_Q4_K_S,
    F.MOSTLY_Q4_K_M,
    F.MOSTLY_IQ3_S,
    F.MOSTLY_IQ3_M,
    F.MOSTLY_IQ4_XS,
)


# the 1- and 2-bit i-quant mixes, which llama_tensor_get_type treats as one family
_IQ_LOW = (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ1_M)
# the output head gets Q5_K in these (Q6_K in the others)
_OUTPUT_Q5_K = (*_IQ_LOW, F.MOSTLY_IQ3_XXS)


def _mix_rule(s: _Counters, t: TensorSpec, mix: Mix, shape: ModelShape, new: Q) -> Q:
    cat, f = _category(t.name), mix.ftype
    if cat == "output" or (s.tied and cat == "token_embd"):
        if f == F.MOSTLY_MXFP4_MOE or t.ne[0] % _block(new) != 0:
            return Q.Q8_0
        if f in _OUTPUT_Q5_K:
            return Q.Q5_K
        return new if new == Q.Q8_0 else Q.Q6_K
    if f == F.MOSTLY_MXFP4_MOE:
        # MXFP4 for the stacked expert tensors (ne[2] experts), Q8_0 for the rest
        return Q.MXFP4 if len(t.ne) > 2 and t.ne[2] > 1 else Q.Q8_0
    if cat == "token_embd":
        if f in (F.MOSTLY_IQ2_XXS, F.MOSTLY_IQ2_XS, F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            return Q.Q2_K
        if f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M, F.MOSTLY_IQ3_XXS):
            return Q.IQ3_S
        return Q.Q4_K if f in (F.MOSTLY_TQ1_0, F.MOSTLY_TQ2_0) else new
    if f in _IQ_LOW:
        return _iq_low_rule(s, t.name, cat, f, shape, new)
    if cat == "attn_v":
        if f == F.MOSTLY_Q2_K:
            new = Q.Q4_K if shape.n_gqa >= 4 else Q.Q3_K
        elif f == F.MOSTLY_Q2_K_S and shape.n_gqa >= 4:
            new = Q.Q4_K
        elif f == F.MOSTLY_IQ3_XXS:
            new = Q.Q4_K if shape.n_gqa >= 4 else Q.IQ3_XXS if s.has_imatrix else Q.IQ3_S
        elif f == F.MOSTLY_IQ3_M or (f in (F.MOSTLY_IQ3_XS, F.MOSTLY_IQ3_S) and shape.n_gqa >= 4):
            new = Q.Q4_K
        elif f == F.MOSTLY_Q3_K_M:
            new = Q.Q5_K if s.i_attn_v < 2 else Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L or (f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and shape.n_gqa >= 4):
            new = Q.Q5_K
        elif f in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(s.i_attn_v, s.n_attn_v):
            new = Q.Q6_K
        elif f == F.MOSTLY_Q4_K_S and s.i_attn_v < 4:
            new = Q.Q5_K
        if shape.is_70b and new in (Q.Q3_K, Q.Q4_K):
            new = Q.Q5_K
        if shape.n_expert == 8:
            new = Q.Q8_0
        s.i_attn_v += 1
    elif cat == "attn_k" and shape.n_expert == 8:
        new = Q.Q8_0
    elif cat in ("attn_k", "attn_q"):
        if f == F.MOSTLY_IQ3_XS:
            new = Q.IQ3_XXS
        elif f == F.MOSTLY_IQ3_XXS:
            new = Q.IQ2_S
    elif cat == "ffn_down":
        i, n = _layer(s.i_ffn_down, t.name, shape), shape.n_layer
        if f == F.MOSTLY_Q2_K:
            new = Q.Q3_K
        elif f == F.MOSTLY_Q2_K_S:
            if i < n // 8:
                new = Q.Q4_K
        elif f == F.MOSTLY_IQ3_XXS and not s.has_imatrix:
            new = Q.Q4_K if i < n // 8 else Q.Q3_K
        elif f == F.MOSTLY_Q3_K_M:
            new = Q.Q5_K if i < n // 16 else Q.Q4_K
        elif f == F.MOSTLY_IQ3_M and (i < n // 8 or (shape.n_expert == 8 and _use_more_bits(i, n))):
            new = Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new = Q.Q5_K
        elif f == F.MOSTLY_Q4_K_M:
            if _use_more_bits(i, n):
                new = Q.Q6_K
        elif i < n // 8 and f in (F.MOSTLY_IQ4_NL, F.MOSTLY_IQ4_XS) and not s.has_imatrix:
            new = Q.Q5_K
        elif f == F.MOSTLY_Q5_K_M and _use_more_bits(i, n):
            new = Q.Q6_K
        elif f == F.MOSTLY_Q4_K_S and i < n // 8:
            new = Q.Q5_K
        elif f in (F.MOSTLY_Q4_0, F.MOSTLY_Q5_0) and s.has_imatrix and i < n // 8:
            # llama-quantize's guard for the first ffn_down layers, with an imatrix only
            new = Q.Q4_1 if f == F.MOSTLY_Q4_0 else Q.Q5_1
        s.i_ffn_down += 1
    elif cat == "attn_output" and shape.n_expert == 8:
        if f in _MOE8_OUTPUT_Q5_K:
            new = Q.Q5_K
    elif cat == "attn_output":
        if f == F.MOSTLY_Q2_K:
            new = Q.Q3_K
        elif f == F.MOSTLY_IQ3_XXS:
            new = Q.IQ3_S
        elif f in (F.MOSTLY_Q3_K_M, F.MOSTLY_IQ3_M):
            new = Q.Q4_K
        elif f == F.MOSTLY_Q3_K_L:
            new = Q.Q5_K
    elif cat in ("ffn_gate", "ffn_up"):
        i, n = _layer(s.i_ffn_gate if cat == "ffn_gate" else s.i_ffn_up, t.name, shape), shape.n_layer
        if f == F.MOSTLY_IQ3_XS and n // 8 <= i < 7 * n // 8:
            new = Q.IQ3_XXS
        if cat == "ffn_gate":
            s.i_ffn_gate += 1
        else:
            s.i_ffn_up += 1
    return new


def _iq_low_rule(s: _Counters, name: str, cat: str, f: F, shape: ModelShape, new: Q) -> Q:
    """IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M: more bits for attn_v, the
    first eighth of ffn_down (by count of ffn_down tensors, as llama-quantize
    counts here, experts' or not) and attn_output"""
    more = Q.IQ3_S if f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M) else Q.Q2_K
    if cat == "attn_v":
        new = Q.Q4_K if shape.n_gqa >= 4 or shape.n_expert >= 4 else more
        s.i_attn_v += 1
    elif cat == "attn_k" and shape.n_expert == 8:
        new = Q.Q4_K
    elif cat == "ffn_down":
        if s.i_ffn_down < shape.n_layer // 8:
            new = more
        s.i_ffn_down += 1
    elif cat == "attn_output" and shape.n_expert == 8:
        new = Q.Q5_K
    elif cat == "attn_output":
        if f in (F.MOSTLY_IQ1_S, F.MOSTLY_IQ1_M):
            new = Q.IQ2_XXS
        elif f in (F.MOSTLY_IQ2_S, F.MOSTLY_IQ2_M):
            new = Q.IQ3_S
    return new


# the types llama-quantize makes only with an importance matrix
# (tensor_requires_imatrix), except for the embeddings and the output head
_IMATRIX_TYPES = (Q.IQ3_XXS, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ1_M, Q.IQ1_S)
_NO_IMATRIX_NEEDED = ("token_embd.weight", "per_layer_token_embd.weight", "output.weight")


def requires_imatrix(name: str, qtype: Q, ftype: F) -> bool:
    """llama-quant.cpp's tensor_requires_imatrix: tensor `name` quantized to
    `qtype` in a file of `ftype` needs an importance matrix."""
    if name in _NO_IMATRIX_NEEDED:
        return False
    return qtype in _IMATRIX_TYPES or (qtype == Q.Q2_K and ftype == F.MOSTLY_Q2_K_S)


def imatrix_required(types: dict[str, Q], ftype: F) -> list[str]:
    """The tensors (of choose_types' answer) llama-quantize refuses to write
    without an importance matrix, in order."""
    return [name for name, q in types.items() if requires_imatrix(name, q, ftype)]


def check_imatrix(types: dict[str, Q], mix: Mix, has_imatrix: bool) -> None:
    """ImatrixRequiredError naming the first tensor that needs an importance
    matrix where none is given (llama-quantize: "this quantization requires
    an imatrix!")."""
    need = imatrix_required(types, mix.ftype)
    if need and not has_imatrix:
        raise ImatrixRequiredError(
            f"the {mix.name} mix requires an importance matrix: tensor {need[0]!r} would be "
            f"{types[need[0]].name} ({len(need)} tensors need one); give one (llama-imatrix) or choose another mix"
        )


_FALLBACK = {
    Q.Q2_K: Q.Q4_0,
    Q.Q3_K: Q.Q4_0,
    Q.Q4_K: Q.Q5_0,
    Q.Q5_K: Q.Q5_1,
    Q.Q6_K: Q.Q8_0,
    Q.TQ1_0: Q.Q4_0,
    Q.TQ2_0: Q.Q4_0,
    **{q: Q.IQ4_NL for q in (Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ4_XS)},
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
