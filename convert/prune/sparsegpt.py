"""SparseGPT for one linear layer (Frantar & Alistarh, "SparseGPT: Massive
Language Models Can Be Accurately Pruned in One-Shot", 2023), in numpy.

    W2, keep = sparsegpt_prune(W, H, sparsity=0.5)        # or nm=(2, 4)

W f32 [out, in]; H = sum X^T X over the calibration inputs (f64 [in, in]),
the same Hessian sum GPTQ uses (convert/gptq/calibrate.py). Columns are
visited left to right; pruning a weight is an optimal-brain-surgeon step
whose error, scaled by 1/U[i, i], is pushed onto the columns not yet visited
through row i of U, the upper Cholesky factor of H^-1 (as GPTQ does for
rounding). The mask is chosen a block of `blocksize` columns at a time from
w^2 / U[i, i]^2 (the OBS saliency), so later columns are chosen after the
updates of earlier blocks ("adaptive mask selection"); with N:M it is chosen
every M columns inside the block.

Differences from the reference (IST-DASLab/sparsegpt), on purpose:
- float64 throughout.
- Within a block the unstructured mask removes the same count from every row
  (the reference thresholds the whole block at once, so rows get different
  counts); a row then ends at the target sparsity exactly, as Wanda's rows do.
- Dead inputs (diag(H) == 0) get H[i, i] = 1 and their weights are pruned
  first (they never reach the output on the calibration data).
"""

from __future__ import annotations

import numpy as np

from lamina.convert.prune.masks import PruneError, check_sparsity, n_pruned


def _upper_inverse_factor(H: np.ndarray, damp: float) -> np.ndarray:
    """U upper with H^-1 = U^T U, after damping H by damp * mean(diag(H))."""
    n = H.shape[0]
    H = H + damp * float(np.mean(np.diag(H))) * np.eye(n)
    try:
        Hinv = np.linalg.inv(np.linalg.cholesky(H))  # L^-1 with H = L L^T
        Hinv = Hinv.T @ Hinv  # H^-1
        return np.linalg.cholesky(Hinv).T
    except np.linalg.LinAlgError:
        raise PruneError("SparseGPT: the Hessian is not positive definite even after damping; raise --damp") from None


def sparsegpt_prune(
    W: np.ndarray,
    H: np.ndarray,
    sparsity: float = 0.0,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """(the pruned and updated weight f32 [out, in], keep mask bool [out, in])."""
    W = np.array(W, dtype=np.float64)
    rows, cols = W.shape
    H = np.array(H, dtype=np.float64)
    if H.shape != (cols, cols):
        raise PruneError(f"SparseGPT: the Hessian has shape {H.shape}, the weight {W.shape}")
    if nm is None:
        sparsity = check_sparsity(sparsity)
    elif cols % nm[1] or blocksize % nm[1]:
        raise PruneError(f"N:M {nm[0]}:{nm[1]} needs the input width ({cols}) to be a multiple of {nm[1]}")
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    U = _upper_inverse_factor(H, damp)
    keep = np.ones((rows, cols), dtype=bool)
    # dead inputs: pruned first, free (they add nothing on the calibration data)
    salience_bias = np.where(dead, -np.inf, 0.0)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].copy()  # [out, b]
        U1 = U[i1:i2, i1:i2]  # [b, b]
        d = np.diag(U1)  # [b]
        Err1 = np.zeros_like(W1)
        keep1 = np.ones_like(W1, dtype=bool)
        if nm is None:
            k = n_pruned(i2 - i1, sparsity)  # per block, so every row ends at the target
            score = W1**2 / d[None, :] ** 2 + salience_bias[None, i1:i2]
            order = np.argsort(score, axis=1, kind="stable")[:, :k]
            np.put_along_axis(keep1, order, False, axis=1)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                score = W1[:, i : i + m] ** 2 / d[None, i : i + m] ** 2 + salience_bias[None, i1 + i : i1 + i + m]
                order = np.argsort(score, axis=1, kind="stable")[:, : m - n]
                sub = np.ones((rows, m), dtype=bool)
                np.put_along_axis(sub, order, False, axis=1)
                keep1[:, i : i + m] = sub
            w = W1[:, i]
            q = np.where(keep1[:, i], w, 0.0)
            err = (w - q) / d[i]  # [out]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    W[~keep] = 0.0
    return W.astype(np.float32), keep
