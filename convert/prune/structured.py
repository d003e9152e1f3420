"""Structured cuts of a checkpoint: whole decoder layers and FFN neurons.

    drop_layers(state, [20, 21, 22])           # layers removed, the rest renumbered
    prune_ffn(state, keep)                     # keep[l]: int [k] neuron indices of layer l

Both leave an ordinary checkpoint of the same architecture: fewer layers
(num_hidden_layers, and per-layer lists such as layer_types shortened), or a
smaller intermediate_size in every layer. The FFN keeps the same number of
neurons in every layer (each layer chooses its own): transformers' configs
have one intermediate_size, and llama.cpp's llama graph sizes every layer's
FFN from layer 0's feed_forward_length, so a file with per-layer sizes would
not load there.

The choices come from calibration (convert/prune/importance.py): layers by
the angular distance between a block's input and output hidden states
(Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers",
2024; ShortGPT's block influence is the per-layer case), neurons by the
norm of their activation over the calibration tokens times the norm of
their down-projection column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lamina.convert.prune.hf_state import ModelState
from lamina.convert.prune.masks import PruneError

_LAYER = re.compile(r"^(?P<pre>(?:model\.)?layers\.)(?P<il>\d+)\.(?P<rest>.+)$")
# config lists with one entry per layer
_PER_LAYER_KEYS = ("layer_types", "no_rope_layers")
_FFN = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")


def check_layer_indices(indices: Sequence[int], n_layer: int) -> list[int]:
    idx = sorted(set(int(i) for i in indices))
    bad = [i for i in idx if not 0 <= i < n_layer]
    if bad:
        raise PruneError(f"--drop-layers: layer {bad[0]} does not exist (the model has layers 0..{n_layer - 1})")
    if len(idx) >= n_layer:
        raise PruneError(f"--drop-layers: cannot drop all {n_layer} layers")
    return idx


def drop_layers(state: ModelState, indices: Sequence[int]) -> None:
    L = state.n_layer
    drop = set(check_layer_indices(indices, L))
    kept = [il for il in range(L) if il not in drop]
    new_index = {old: new for new, old in enumerate(kept)}
    tensors: dict[str, np.ndarray] = {}
    for name, t in state.tensors.items():
        m = _LAYER.match(name)
        if m is None:
            tensors[name] = t
        elif int(m["il"]) in new_index:
            tensors[f"{m['pre']}{new_index[int(m['il'])]}.{m['rest']}"] = t
    state.tensors = tensors
    state.config["num_hidden_layers"] = len(kept)
    for key in _PER_LAYER_KEYS:
        if isinstance(state.config.get(key), list) and len(state.config[key]) == L:
            state.config[key] = [state.config[key][il] for il in kept]


def ffn_names(state: ModelState, il: int) -> tuple[str, str, str]:
    names = tuple(f"model.layers.{il}.{s}" for s in _FFN)
    if not all(n in state.tensors for n in names):
        raise PruneError(
            f"--ffn-keep: layer {il} has no separate gate_proj/up_proj/down_proj "
            "(fused or expert FFNs are not pruned by neuron)"
        )
    return names  # type: ignore[return-value]


def ffn_keep_count(n_ff: int, keep: float) -> int:
    if not 0 < keep <= 1:
        raise PruneError(f"--ffn-keep must be a fraction in (0, 1], got {keep!r}")
    # a multiple of 32 where possible, so every quantized block type still fits the rows
    k = int(round(n_ff * keep))
    return max(32, k - k % 32) if n_ff >= 64 else max(1, k)


def choose_neurons(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest-scoring neurons, in their original order: int64 [k]."""
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])


def prune_ffn(state: ModelState, keep: Sequence[np.ndarray]) -> None:
    """keep[l]: the neuron indices layer l keeps (the same count in every layer)."""
    if len(keep) != state.n_layer or len({len(k) for k in keep}) != 1:
        raise PruneError("prune_ffn: one index list per layer, all of the same length")
    for il, idx in enumerate(keep):
        gate, up, down = ffn_names(state, il)
        state.tensors[gate] = np.ascontiguousarray(state.tensors[gate][idx])  # [k, n_embd]
        state.tensors[up] = np.ascontiguousarray(state.tensors[up][idx])  # [k, n_embd]
        state.tensors[down] = np.ascontiguousarray(state.tensors[down][:, idx])  # [n_embd, k]
    state.config["intermediate_size"] = int(len(keep[0]))


def neuron_scores(act_sumsq: np.ndarray, down: np.ndarray) -> np.ndarray:
    """||a_j||_2 * ||W_down[:, j]||_2: act_sumsq f [n_ff] (sum over tokens of a_j^2), down [n_embd, n_ff]."""
    return np.sqrt(np.maximum(act_sumsq.astype(np.float64), 0)) * np.linalg.norm(down.astype(np.float64), axis=0)


def angular_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over tokens of arccos(cos(a_t, b_t)) / pi: a, b [tokens, n_embd]."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-30)
    return float(np.mean(np.arccos(np.clip(cos, -1.0, 1.0))) / np.pi)


def layers_to_drop(dist: np.ndarray, n: int, choice: str) -> list[int]:
    """dist[l, j]: mean angular distance between the hidden states entering
    layer l and entering layer j (j > l; j = n_layer: the last layer's output).
    'block': the n consecutive layers whose input and output are closest
    (Gromov et al.); 'each': the n layers whose own input and output are closest."""
    L = dist.shape[0] - 1
    if not 0 < n < L:
        raise PruneError(f"--prune-layers must be in 1..{L - 1} for a {L}-layer model, got {n}")
    if choice == "block":
        start = int(np.argmin([dist[l, l + n] for l in range(L - n + 1)]))
        return list(range(start, start + n))
    if choice == "each":
        return sorted(int(i) for i in np.argsort([dist[l, l + 1] for l in range(L)], kind="stable")[:n])
    raise PruneError(f"--layer-choice must be 'block' or 'each', got {choice!r}")
