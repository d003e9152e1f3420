"""The memory-bandwidth bound of decode: what one generated token must read.

Decoding one token reads every weight matrix once (of a mixture of experts,
only the picked experts' share), one row of the token embedding (all of it
when the output head is tied to it), and every cached key and value row the
token attends to (per layer: all earlier positions, or the last
sliding_window of them). Bytes over the read bandwidth is the fastest decode
the memory allows; `lamina bench` shows measured tg against it."""

from __future__ import annotations

from lamina.engine.loader import HParams, read_hparams
from lamina.gguf.reader import GGUFFile

KV_BYTES_PER_VALUE = 2  # the f16 cache bench runs with, as llama-bench's default type_k/type_v


def weight_bytes_per_token(gguf: GGUFFile, hp: HParams) -> int:
    total = 0
    for t in gguf.tensors:
        if t.name == "token_embd.weight":
            total += t.nbytes if hp.tied_output else t.nbytes // t.n_rows
        elif "_exps." in t.name and hp.n_expert:
            total += t.nbytes * hp.n_expert_used // hp.n_expert
        else:
            total += t.nbytes
    return total


def kv_bytes_per_token(hp: HParams, n_past: int) -> int:
    """K and V rows one token at position n_past reads (itself included)."""
    row = hp.kv_dim * KV_BYTES_PER_VALUE
    keys = sum(min(n_past + 1, L.sliding_window) if L.sliding_window else n_past + 1 for L in hp.layers)
    return 2 * row * keys


def decode_bytes(path: str, n_depth: int, n_gen: int) -> float:
    """Mean bytes per token of n_gen tokens decoded after n_depth cached ones."""
    with GGUFFile(path) as g:
        hp = read_hparams(g)
        weights = weight_bytes_per_token(g, hp)
    kv = sum(kv_bytes_per_token(hp, n_depth + i) for i in range(n_gen)) / max(n_gen, 1)
    return weights + kv
