"""Unstructured / N:M sparsity of every linear, layer by layer on lamina's engine.

    plan = SparsityPlan("wanda", 0.5, nm=None)
    calibrate(f32_gguf, windows, plan, n_threads)     # convert/gptq/calibrate.py's driver
    plan.pruned                                       # GGUF name -> f32 [out, in], zeros where pruned

The driver is GPTQ's: each layer's linears see the calibration inputs that
the already-pruned layers before them produce (the sequential order the
Wanda and SparseGPT papers use), and H = sum X^T X at each linear's input.
Magnitude needs no inputs; Wanda uses diag(H) = sum_t x_tj^2; SparseGPT the
whole H. token_embd and the output head are left dense, as in the papers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lamina.convert.gptq.calibrate import LinearOutcome
from lamina.convert.prune.masks import PruneError, check_sparsity, magnitude_mask, nm_mask, wanda_mask, wanda_score
from lamina.convert.prune.sparsegpt import sparsegpt_prune

METHODS = ("magnitude", "wanda", "sparsegpt")


@dataclass
class SparsityPlan:
    method: str
    sparsity: float = 0.0
    nm: tuple[int, int] | None = None
    damp: float = 0.01
    pruned: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PruneError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.nm is None:
            self.sparsity = check_sparsity(self.sparsity)

    def describe(self) -> str:
        what = f"{self.nm[0]}:{self.nm[1]}" if self.nm else f"{self.sparsity:.0%} unstructured"
        return f"{what} sparsity by {self.method}"

    def needs_hessian(self, name: str) -> bool:
        return self.method != "magnitude"

    def quantize(self, name: str, W: np.ndarray, H: np.ndarray | None) -> LinearOutcome:
        W2 = prune_linear(W, H, self.method, self.sparsity, self.nm, self.damp)
        self.pruned[name] = W2
        return LinearOutcome(W2, None, self.method)


def prune_linear(
    W: np.ndarray, H: np.ndarray | None, method: str, sparsity: float, nm: tuple[int, int] | None, damp: float = 0.01
) -> np.ndarray:
    """One linear pruned: f32 [out, in] with zeros where pruned."""
    if method == "sparsegpt":
        if H is None:
            raise PruneError("SparseGPT needs the calibration Hessian")
        return sparsegpt_prune(W, H, sparsity, nm, damp=damp)[0]
    if method == "wanda":
        if H is None:
            raise PruneError("Wanda needs the calibration input norms")
        colsq = np.diag(H)
        keep = nm_mask(wanda_score(W, colsq), *nm) if nm else wanda_mask(W, colsq, sparsity)
    else:
        keep = nm_mask(np.abs(W), *nm) if nm else magnitude_mask(W, sparsity)
    return np.where(keep, W, np.float32(0)).astype(np.float32)
