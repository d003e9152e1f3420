"""Random GPTQ INT4 linears for kernel tests: packed as the ecosystem packs
them (runtime/gptq/pack.py, zeros in v2 form)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class GPTQCase(NamedTuple):
    packed: Any  # convert.gptq_pack.GPTQPacked
    g_idx: np.ndarray  # int32 [n_in]: the group of each input column
    n_groups: int
    weights: np.ndarray  # float64 [n_out, n_in]: what the packed linear means


def random_gptq(
    rng: np.random.Generator,
    n_in: int,
    n_out: int,
    group_size: int,
    act_order: bool,
    sym: bool = False,
    scale: tuple[float, float] = (0.001, 0.05),
) -> GPTQCase:
    """Random levels, signed f16 scales with |scale| in `scale`, zeros (8 when
    sym); group_size -1 or 0: one group per row."""
    from lamina.gptq.pack import pack

    gs = n_in if group_size in (-1, 0) else group_size
    G = -(-n_in // gs)
    levels = rng.integers(0, 16, (n_out, n_in))  # [n_out, n_in]
    zeros = np.full((G, n_out), 8) if sym else rng.integers(0, 16, (G, n_out))  # [G, n_out]
    scales = (rng.uniform(*scale, (G, n_out)) * rng.choice([-1, 1], (G, n_out))).astype(np.float16)
    g_idx = np.arange(n_in) // gs
    if act_order:
        g_idx = rng.permutation(g_idx)
    weights = scales.astype(np.float64)[g_idx].T * (levels - zeros[g_idx].T)
    return GPTQCase(pack(levels, scales, zeros, g_idx, fmt="v2"), g_idx.astype(np.int32), G, weights)
