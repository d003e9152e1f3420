"""Calibration statistics for structured cuts, from lamina's own engine.

    stats = measure(f32_gguf, windows, n_threads)
    stats.dist         # f64 [L+1, L+1]: mean angular distance between the
                       #   hidden states entering layers l and j (j = L: the last output)
    stats.act_sumsq    # f64 [L, n_ff]: sum over tokens of each FFN neuron's
                       #   activation^2 (act(gate) * up, the input of ffn_down)
    stats.head_gram    # f64 [L, n_head_kv, G*D, G*D] (heads=True): sum over tokens of
                       #   x_g x_g^T, x_g the o_proj input of KV group g's query heads

One pass of the unpruned model over the windows, a layer at a time
(Context.eval_layers), capturing ffn_down's (and o_proj's) input on the way; the residual
stream entering every layer is kept so the distance between any two layers
is known (a 30-layer 576-wide model over 8 x 256 tokens: ~150 MB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lamina.convert.prune.structured import angular_distance


@dataclass
class Importance:
    dist: np.ndarray  # f64 [L+1, L+1], upper triangle filled
    act_sumsq: np.ndarray  # f64 [L, n_ff]
    n_tokens: int
    head_gram: np.ndarray | None = None  # f64 [L, n_head_kv, G*D, G*D]


def measure(
    f32_gguf: str | os.PathLike[str], windows: np.ndarray, n_threads: int | None = None, heads: bool = False
) -> Importance:
    from lamina.engine.context import Context, Model

    model = Model.load(f32_gguf, n_threads=n_threads)
    hp = model.hparams
    ns, T = windows.shape
    L = hp.n_layer
    ctx = Context(model, n_ctx=T, n_batch=T, kv_type="f32")
    states = np.empty((L + 1, ns, T, hp.n_embd), dtype=np.float32)  # stream entering layer l
    act = np.zeros((L, hp.n_ff), dtype=np.float64)
    n_kv = hp.n_head_kv
    width = hp.n_head // n_kv * hp.head_dim  # o_proj input columns of one KV group
    gram = np.zeros((L, n_kv, width, width), dtype=np.float64) if heads else None
    try:
        for s in range(ns):
            x: np.ndarray | None = None
            for il in range(L):
                ctx.capture(il, down_in=True, wo_in=heads)
                ctx.truncate(0)
                y = ctx.eval_layers(windows[s], il, il + 1, x)
                a = ctx.captured["down_in"][:T].astype(np.float64)  # [T, n_ff]
                act[il] += (a * a).sum(0)
                if gram is not None:
                    o = ctx.captured["wo_in"][:T].astype(np.float64).reshape(T, n_kv, width)  # [T, Hkv, G*D]
                    gram[il] += np.einsum("tgi,tgj->gij", o, o)
                if il == 0:
                    states[0, s] = _embeddings(model, windows[s])  # the stream entering layer 0
                states[il + 1, s] = y
                x = y
        ctx.capture(None)
    finally:
        ctx.close()
        model.close()
    dist = np.full((L + 1, L + 1), np.nan)
    flat = states.reshape(L + 1, ns * T, hp.n_embd)
    for l in range(L + 1):
        for j in range(l + 1, L + 1):
            dist[l, j] = angular_distance(flat[l], flat[j])
    return Importance(dist, act, ns * T, gram)


def _embeddings(model, tokens: np.ndarray) -> np.ndarray:
    """token_embd rows of the tokens (f32 [T, n_embd]), scaled as the architecture scales them."""
    from lamina.gguf.reader import GGUFFile

    g = GGUFFile(model.path)
    info = g.tensor("token_embd.weight")
    E = g.tensor_bytes("token_embd.weight").reshape(-1).view(np.float32).reshape(info.np_shape)
    x = E[np.asarray(tokens)].astype(np.float32)
    scale = getattr(model.hparams, "embd_scale", None)
    return x * np.float32(scale) if scale else x
