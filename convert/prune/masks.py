"""Unstructured and N:M pruning masks from a score per weight.

    keep = magnitude_mask(W, 0.5)                     # bool [out, in], half of all weights kept
    keep = wanda_mask(W, col_sumsq, 0.5)              # per output row, |W| * ||X_j||_2
    keep = nm_mask(score, 2, 4)                       # in every 4 inputs of a row, the best 2

Magnitude ranks |W| over the whole matrix (as the Wanda paper's magnitude
baseline does per layer); Wanda (Sun et al., "A Simple and Effective Pruning
Approach for Large Language Models", 2023) ranks |W_ij| * ||X_j||_2, the
weight times the L2 norm of its input feature over the calibration tokens,
within each output row. col_sumsq is sum_t x_tj^2, the diagonal of the
GPTQ Hessian sum X^T X (or an imatrix's in_sum2), so ||X_j||_2 is its square
root. N:M keeps the N largest scores of every M consecutive inputs of a row
(2:4 is what sparse tensor cores run); its score is |W| (magnitude) or
Wanda's. Ties break by position (a stable sort), so masks are reproducible.
"""

from __future__ import annotations

import numpy as np

from lamina.convert.errors import ConvertError


class PruneError(ConvertError, ValueError):
    """A pruning setting that cannot apply (a sparsity outside [0, 1), an N:M that does not divide)."""


def check_sparsity(sparsity: object) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) or not 0 <= sparsity < 1:
        raise PruneError(f"--sparsity must be a fraction in [0, 1), got {sparsity!r}")
    return float(sparsity)


def parse_nm(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N of every M."""
    n_s, sep, m_s = str(text).partition(":")
    try:
        n, m = int(n_s), int(m_s)
    except ValueError:
        n = m = 0
    if sep != ":" or not 0 < n < m:
        raise PruneError(f"--nm must be N:M with 0 < N < M (e.g. 2:4, 4:8), got {text!r}")
    return n, m


def n_pruned(n: int, sparsity: float) -> int:
    """How many of n weights a sparsity removes (rounded down, as the papers' int(n * s))."""
    return int(n * sparsity)


def magnitude_mask(W: np.ndarray, sparsity: float) -> np.ndarray:
    """bool [out, in]: True where kept; the n_pruned smallest |W| of the whole matrix removed."""
    sparsity = check_sparsity(sparsity)
    flat = np.abs(np.asarray(W, dtype=np.float64)).reshape(-1)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[: n_pruned(flat.size, sparsity)]] = False
    return keep.reshape(np.shape(W))


def wanda_score(W: np.ndarray, col_sumsq: np.ndarray) -> np.ndarray:
    """|W_ij| * ||X_j||_2: f64 [out, in]."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.sqrt(np.maximum(np.asarray(col_sumsq, dtype=np.float64), 0.0))  # [in]
    if norms.shape != (W.shape[1],):
        raise PruneError(f"Wanda needs one input norm per column: {norms.shape} for a weight of shape {W.shape}")
    return np.abs(W) * norms[None, :]


def row_mask(score: np.ndarray, sparsity: float) -> np.ndarray:
    """bool [out, in]: in every row, the n_pruned(in) lowest scores removed."""
    sparsity = check_sparsity(sparsity)
    rows, cols = score.shape
    order = np.argsort(score, axis=1, kind="stable")[:, : n_pruned(cols, sparsity)]  # [out, k]
    keep = np.ones((rows, cols), dtype=bool)
    np.put_along_axis(keep, order, False, axis=1)
    return keep


def wanda_mask(W: np.ndarray, col_sumsq: np.ndarray, sparsity: float) -> np.ndarray:
    return row_mask(wanda_score(W, col_sumsq), sparsity)


def nm_mask(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """bool [out, in]: the n largest scores of every m consecutive columns kept."""
    rows, cols = score.shape
    if cols % m:
        raise PruneError(f"N:M {n}:{m} needs the input width to be a multiple of {m}, got {cols}")
    groups = np.asarray(score).reshape(rows, cols // m, m)  # [out, in/m, m]
    order = np.argsort(groups, axis=2, kind="stable")[:, :, : m - n]
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, order, False, axis=2)
    return keep.reshape(rows, cols)
