"""Random GPTQ INT4 linears for kernel tests: packed as the ecosystem packs
them (convert/gptq_pack.py, zeros in v2 form)."""
from __future__ import annotations

import numpy as np


def random_gptq(rng: np.random.Generator, n_in: int, n_out: int, group_size: int, act_order: bool):
    """-> (GPTQPacked, g_idx int32 [n_in], n_groups); group_size -1 or 0: one group per row"""
    from convert.gptq_pack import pack
    gs = n_in if group_size in (-1, 0) else group_size
    G = -(-n_in // gs)
    levels = rng.integers(0, 16, (n_out, n_in))                       # [n_out, n_in]
    zeros = rng.integers(0, 16, (G, n_out))                           # [G, n_out]
    scales = (rng.uniform(0.001, 0.05, (G, n_out)) * rng.choice([-1, 1], (G, n_out))).astype(np.float16)
    g_idx = np.arange(n_in) // gs
    if act_order:
        g_idx = rng.permutation(g_idx)
    return pack(levels, scales, zeros, g_idx, fmt="v2"), g_idx.astype(np.int32), G
