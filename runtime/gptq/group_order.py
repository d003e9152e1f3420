"""Act-order (desc_act) GPTQ linears repacked into group order at load.

An act-order file's g_idx scatters each group's inputs over the matrix, so a
kernel has to look up a scale for every input. Sorting the inputs by group
gives an ordinary matrix again, whose kernels scale once per group:

    perm = argsort(g_idx, stable)               # [n_in]: input k of the copy is input perm[k] of x
    qweight_grouped[k] = level of input perm[k] # repacked 8 to a word, as the file packs them
    y = W_grouped @ x[perm]                      # the same sum in another order

The CPU kernels read the copy and gather x through perm (lamina_gptq.h's
*_grouped fields); the file's own arrays stay for the device backends. Only
worth it when every word of the copy holds one group (group sizes that are
multiples of 8, as every GPTQ file has): otherwise there is no copy."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina.gptq.format import PER_WORD

_SHIFTS = (4 * np.arange(PER_WORD, dtype=np.uint32))[None, :, None]  # [1, 8, 1]


class GroupOrder(NamedTuple):
    qweight: np.ndarray  # int32 [n_in/8, n_out], inputs in group order
    g_idx: np.ndarray | None  # int32 [n_in] sorted, or None when it is k // group_size
    perm: np.ndarray  # int32 [n_in]: input k of the copy is input perm[k]


def group_order(qweight: np.ndarray, g_idx: np.ndarray | None, group_size: int) -> GroupOrder | None:
    """The group-order copy of an act-order matrix, or None when g_idx is
    absent, already in order, or its groups do not fill whole words."""
    if g_idx is None:
        return None
    n_in = qweight.shape[0] * PER_WORD
    perm = np.argsort(g_idx, kind="stable").astype(np.int32)  # [n_in]
    if np.array_equal(perm, np.arange(n_in, dtype=np.int32)):
        return None  # already in order: the kernels' ordinary path takes it as is
    g_sorted = g_idx[perm]  # [n_in], non-decreasing
    words = g_sorted.reshape(-1, PER_WORD)  # [n_in/8, 8]
    if not np.all(words == words[:, :1]):
        return None
    q = qweight.view(np.uint32)
    levels = ((q[:, None, :] >> _SHIFTS) & 15).astype(np.uint8).reshape(n_in, -1)  # [n_in, n_out]
    moved = levels[perm].reshape(-1, PER_WORD, levels.shape[1]).astype(np.uint32)  # [n_in/8, 8, n_out]
    packed = np.bitwise_or.reduce(moved << _SHIFTS, axis=1)  # [n_in/8, n_out]
    gs = n_in if group_size <= 0 else group_size
    plain = np.array_equal(g_sorted, np.arange(n_in) // gs)
    return GroupOrder(
        np.ascontiguousarray(packed.view(np.int32)),
        None if plain else np.ascontiguousarray(g_sorted, dtype=np.int32),
        perm,
    )
