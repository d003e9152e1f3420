"""Structured attention-head pruning: whole KV groups (a key/value head and the
query heads that share it), the same count in every layer.

    k = groups_keep_count(n_head_kv, 0.5)
    scores = group_scores(gram, w_o, n_head, n_head_kv, head_dim)   # f64 [n_head_kv]
    keep = choose_groups(scores, k)                                 # int [k], ascending
    prune_heads(state, keep_per_layer)

A group's importance is the norm of what its heads write into the residual
stream through o_proj over the calibration tokens: with X_g the o_proj input
columns of the group's query heads [tokens, G*D] and W_g the matching o_proj
columns [n_embd, G*D], ||X_g W_g^T||_F = sqrt(trace(W_g (X_g^T X_g) W_g^T)).
Calibration accumulates X_g^T X_g (importance.py), so the score needs no
second pass.

GQA fixes the unit: query head h reads key/value head h // G (G = n_head /
n_head_kv, in transformers' repeat_kv and in llama.cpp's broadcast matmul),
so removing a query head alone would break the grouping unless every group
lost as many; removing a whole group keeps G and the head layout. head_dim
does not change, so the config carries it explicitly (`head_dim`) and the
GGUF writer puts attention.key_length / value_length in, since n_embd /
n_head no longer gives it. One count for every layer: both transformers'
configs and llama.cpp's GGUF keys have one head count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.convert.prune.hf_state import ModelState
from lamina.convert.prune.masks import PruneError

# config model_types whose head size cannot be written down once n_embd / n_head no
# longer gives it, or whose q/k/v are fused; refused rather than mis-written
_REFUSED = {
    "granite": "granite's config has no head_dim (transformers and llama.cpp both take hidden_size / heads)",
    "phi3": "phi3 fuses q/k/v into one qkv_proj",
}


# model_types whose llama.cpp graph sizes attn_q as n_embd x n_embd (its qwen2 and olmo2
# load_arch_tensors, llama.cpp 0.3.36's vendored tree): lamina and transformers run their
# head-cut files, llama.cpp refuses them ("attn_q.weight has wrong shape")
_LLAMA_CPP_FIXED_Q = {"qwen2", "olmo2"}


def llama_cpp_note(config: dict) -> str | None:
    """What the plan says when llama.cpp will not load this model's head-cut GGUF."""
    arch = str(config.get("model_type"))
    if arch not in _LLAMA_CPP_FIXED_Q:
        return None
    return (
        f"note: llama.cpp will not load the result (its {arch} graph assumes query heads x head_dim = hidden size); "
        "lamina and transformers run it"
    )


def head_geometry(config: dict) -> tuple[int, int, int]:
    """(n_head, n_head_kv, head_dim) of a config."""
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // n_head)
    return n_head, n_kv, head_dim


def check_supported(config: dict) -> None:
    why = _REFUSED.get(str(config.get("model_type")))
    if why is not None:
        raise PruneError(f"--heads-keep: cannot prune heads of a {config.get('model_type')} model: {why}")


def attention_names(state: ModelState, il: int) -> tuple[str, str, str, str]:
    """q/k/v/o projection weights of layer il, or a typed error for fused or unknown layouts."""
    pre = f"model.layers.{il}.self_attn."
    names = tuple(pre + p for p in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
    missing = [n for n in names if n not in state.tensors]
    if missing:
        raise PruneError(f"--heads-keep: layer {il} has no {missing[0]} (fused or unknown attention is not pruned)")
    return names  # type: ignore[return-value]


def groups_keep_count(n_head_kv: int, keep: float) -> int:
    if not 0 < keep <= 1:
        raise PruneError(f"--heads-keep must be a fraction in (0, 1], got {keep!r}")
    k = max(1, int(round(n_head_kv * keep)))
    if k == n_head_kv and keep < 1:
        raise PruneError(
            f"--heads-keep {keep} keeps all {n_head_kv} KV groups of this model "
            f"(one group is {1 / n_head_kv:.3f} of them; at least one stays): nothing would be cut"
        )
    return k


def group_scores(gram: np.ndarray, w_o: np.ndarray, n_head: int, n_head_kv: int, head_dim: int) -> np.ndarray:
    """gram f64 [n_head_kv, G*D, G*D]: sum over tokens of x_g x_g^T of each
    group's o_proj input; w_o [n_embd, n_head*D] (HF order). Returns f64
    [n_head_kv]: ||X_g W_g^T||_F."""
    width = n_head // n_head_kv * head_dim
    out = np.empty(n_head_kv, dtype=np.float64)
    for g in range(n_head_kv):
        W = w_o[:, g * width : (g + 1) * width].astype(np.float64)  # [n_embd, G*D]
        out[g] = np.sqrt(max(float(np.einsum("ij,jk,ik->", W, gram[g], W)), 0.0))
    return out


def choose_groups(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest-scoring groups, in their original order: int64 [k]."""
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])


def _rows(groups: np.ndarray, per_group: int) -> np.ndarray:
    """Row indices of the kept groups when each group owns per_group consecutive rows."""
    return (groups[:, None] * per_group + np.arange(per_group)[None, :]).reshape(-1)


def prune_heads(state: ModelState, keep: Sequence[np.ndarray]) -> None:
    """keep[l]: the KV groups layer l keeps (the same count in every layer)."""
    check_supported(state.config)
    if len(keep) != state.n_layer or len({len(k) for k in keep}) != 1:
        raise PruneError("prune_heads: one group list per layer, all of the same length")
    H, Hkv, D = head_geometry(state.config)
    G = H // Hkv
    for il, groups in enumerate(keep):
        groups = np.asarray(groups, dtype=np.int64)
        if groups.min() < 0 or groups.max() >= Hkv:
            raise PruneError(f"prune_heads: layer {il} keeps group {int(groups.max())} of {Hkv}")
        q_rows, kv_rows = _rows(groups, G * D), _rows(groups, D)
        pre = f"model.layers.{il}.self_attn."
        attention_names(state, il)
        names = [n for n in state.tensors if n.startswith(pre)]
        for name in names:
            t = state.tensors[name]
            part = name[len(pre) :]
            if part.startswith("q_proj."):  # weight [H*D, n_embd], bias [H*D]
                t = t[q_rows]
            elif part.startswith(("k_proj.", "v_proj.")):  # [Hkv*D, n_embd], [Hkv*D]
                t = t[kv_rows]
            elif part == "o_proj.weight":  # [n_embd, H*D]
                t = t[:, q_rows]
            elif part == "o_proj.bias":
                pass
            elif part == "q_norm.weight":  # one head's [D], or the whole projection's [H*D] (olmo2)
                t = t if t.shape[0] == D else t[q_rows]
            elif part == "k_norm.weight":
                t = t if t.shape[0] == D else t[kv_rows]
            else:
                raise PruneError(f"--heads-keep: {name} is not a tensor head pruning knows how to cut")
            state.tensors[name] = np.ascontiguousarray(t)
    k = len(keep[0])
    state.config["num_attention_heads"] = k * G
    state.config["num_key_value_heads"] = k
    state.config["head_dim"] = D  # n_embd / n_head no longer gives it
