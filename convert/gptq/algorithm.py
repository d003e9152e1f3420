"""GPTQ for one linear layer (Frantar et al., "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", 2022), in numpy.

    acc = HessianAccumulator(n_in)
    for x in calibration_inputs:          # x: [tokens, n_in], the layer's input
        acc.add_batch(x)
    res = gptq_quantize(W, acc.H, GPTQConfig(group_size=128, act_order=True))
    res.levels   # uint8 [out, in]  integer levels 0..15, original column order
    res.scales   # f32   [groups, out]
    res.zeros    # int32 [groups, out]
    res.g_idx    # int32 [in]       group of each input column
    res.perm     # int64 [in]       order the columns were quantized in

    W ~= res.dequantize() = scales[g_idx].T * (levels - zeros[g_idx].T)

The algorithm, as the reference implementations (IST-DASLab/gptq `gptq.py`,
AutoGPTQ `quantization/gptq.py`) run it:

1. H = 2/N * sum(X X^T) over the calibration samples (its scale does not
   matter: the update below is invariant to it).
2. Dead inputs (diag(H) == 0) get H[i, i] = 1 and W[:, i] = 0.
3. Act-order: columns are processed in order of decreasing diag(H).
4. Damping: H += percdamp * mean(diag(H)) * I; then the upper Cholesky
   factor U of H^-1 (Cholesky, inverse from the factor, Cholesky again).
5. Columns are rounded one at a time onto the group's grid; the rounding
   error, scaled by 1/U[i, i], is pushed onto the columns not yet quantized
   through row i of U (the optimal-brain-surgeon update). Inside a block of
   `blocksize` columns the update is applied at once; the rest of the matrix
   gets the block's accumulated errors in one matmul when the block ends
   ("lazy batch" updates).
6. Groups: with static_groups the grids of all groups are computed up front
   from the (unpermuted) weights; otherwise a group's grid is computed when
   its first column comes up, from the matrix as the outer loop holds it.
   Like the reference, that is the weights as of the start of the current
   lazy block: the error feedback of columns earlier in the same block is
   not yet in them (this matters only when group_size < blocksize).

Deliberate differences from the reference, all documented knobs:
- float64 throughout by default (the reference runs float32 on a GPU).
- `scale_dtype="float16"` (default) rounds each grid scale to f16 before it is
  used, so GPTQ's error feedback sees the grid that is actually stored
  (GPTQ checkpoints store f16 scales). "float32" keeps the reference's scales.
- Levels are `clip(rint(w/scale + zero), 0, maxq)`; the reference writes
  `clip(rint(w/scale) + zero, ...)`, equal for integer zeros except on exact
  float ties. The single form also serves custom grids with fractional
  zeros (Q4_K's `d*q - m`, where zero = m/d).
- act-order sorts diag(H) with a stable sort (torch.argsort is not stable);
  ties keep their column order.
- A `grid` callable can replace the min-max grid (GGUF's own grids: Q4_0,
  Q4_K with fixed scales), see `gptq_quantize`. It returns (scale, zero) or
  an `AffineGrid`: value = scale * level - offset evaluated in float32 exactly
  as ggml's dequantizers do (Q4_K: d*sc and dmin*m), so the weights GPTQ
  commits to (and feeds its error back from) are bit for bit what the file
  will dequantize to; its scale may be 0 (a Q4_K sub-block whose 6-bit scale
  rounded to 0 holds -offset whatever its levels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lamina.convert.errors import ConvertError
from lamina.gptq.format import SUPPORTED_BITS  # what GPTQ INT4 files, imports and --gptq --bits take

GRID_BITS = (4, 5)  # what the algorithm runs with: INT4, and Q5_0's 5-bit levels
SCALE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class AffineGrid:
    """One group's grid in ggml's own form: value = scale * level - offset,
    computed in float32 (both are float32-representable per row)."""

    scale: np.ndarray  # [rows]; 0 allowed: every level means -offset
    offset: np.ndarray  # [rows]


# grid(w [rows, n] f64, group index) -> (scale [rows], zero [rows]) or AffineGrid
Grid = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray] | AffineGrid"]


class GPTQError(ConvertError, ValueError):
    """GPTQ was asked for something it cannot do (bits, shapes, a singular Hessian)."""


def check_bits(bits: object) -> int:
    """The one place that says which bit widths lamina's GPTQ supports."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in SUPPORTED_BITS:
        supported = ", ".join(str(b) for b in SUPPORTED_BITS)
        raise GPTQError(
            f"GPTQ bits={bits!r} is not supported: lamina supports bits={supported} "
            f"(INT4); 2-, 3- and 8-bit GPTQ are not implemented"
        )
    return int(bits)


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = 4
    group_size: int = 128  # -1: one group spanning all input columns
    sym: bool = True
    act_order: bool = False  # "desc_act" in quantize_config.json
    static_groups: bool = False
    percdamp: float = 0.01  # "damp_percent"
    blocksize: int = 128  # lazy-batch block (columns)
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        b = self.bits
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or int(b) not in GRID_BITS:
            raise GPTQError(
                f"GPTQConfig bits={b!r}: the algorithm runs with bits="
                f"{', '.join(map(str, GRID_BITS))} (lamina supports bits=4 for GPTQ INT4 files)"
            )
        gs = self.group_size
        if isinstance(gs, bool) or not isinstance(gs, (int, np.integer)) or not (gs == -1 or gs >= 1):
            raise GPTQError(f"group_size must be -1 (one group per row) or a positive integer, got {gs!r}")
        if not (isinstance(self.percdamp, (int, float)) and 0 <= self.percdamp < 1):
            raise GPTQError(f"percdamp (damp) must be in [0, 1), got {self.percdamp!r}")
        if isinstance(self.blocksize, bool) or not isinstance(self.blocksize, (int, np.integer)) or self.blocksize < 1:
            raise GPTQError(f"blocksize must be a positive integer, got {self.blocksize!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise GPTQError(f"scale_dtype must be one of {', '.join(SCALE_DTYPES)}, got {self.scale_dtype!r}")
        if self.static_groups and gs == -1:
            raise GPTQError("static_groups needs a group_size (got -1)")

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1


# ----------------------------------------------------------------------------
# Hessian


class HessianAccumulator:
    """H = 2/N * sum_samples X^T X for one layer's inputs, accumulated in float64.

    add_batch takes the layer input as [n_in] or [tokens, n_in] (one sample,
    as the reference counts a 2-D input) or [batch, tokens, n_in] (batch
    samples). N only scales H, which GPTQ is invariant to."""

    def __init__(self, n_in: int) -> None:
        if not isinstance(n_in, (int, np.integer)) or n_in < 1:
            raise GPTQError(f"n_in must be a positive integer, got {n_in!r}")
        self.n_in = int(n_in)
        self._sum = np.zeros((self.n_in, self.n_in), dtype=np.float64)
        self.nsamples = 0

    def add_batch(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, None, :]
        elif x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.n_in:
            raise GPTQError(f"calibration input must be [..., {self.n_in}] (1-3 dims), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise GPTQError("calibration input holds NaN or Inf")
        flat = x.reshape(-1, self.n_in).astype(np.float64, copy=False)
        self._sum += flat.T @ flat
        self.nsamples += x.shape[0]

    @property
    def H(self) -> np.ndarray:
        if self.nsamples == 0:
            raise GPTQError("no calibration samples were added to the Hessian")
        return (2.0 / self.nsamples) * self._sum


# ----------------------------------------------------------------------------
# grids


def _round_scale(scale: np.ndarray, scale_dtype: str) -> np.ndarray:
    if scale_dtype == "float16":
        return scale.astype(np.float16).astype(np.float64)
    return scale.astype(np.float32).astype(np.float64)


def minmax_grid(
    w: np.ndarray, bits: int = 4, sym: bool = True, scale_dtype: str = "float16"
) -> tuple[np.ndarray, np.ndarray]:
    """The reference quantizer's per-row grid (Quantizer.find_params, perchannel, mse off).

    The range always includes 0; sym uses [-max|w|, max|w|] with zero at
    (maxq+1)/2; an all-zero row gets the range [-1, 1]. Returns scale [rows]
    (rounded to scale_dtype) and integer zero [rows]."""
    maxq = (1 << bits) - 1
    w = np.asarray(w, dtype=np.float64)
    xmin = np.minimum(w.min(axis=1), 0.0)
    xmax = np.maximum(w.max(axis=1), 0.0)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    both_zero = (xmin == 0) & (xmax == 0)
    xmin = np.where(both_zero, -1.0, xmin)
    xmax = np.where(both_zero, 1.0, xmax)
    scale = _round_scale((xmax - xmin) / maxq, scale_dtype)
    if np.any(scale == 0):  # a range below f16's smallest subnormal
        scale = np.where(scale == 0, np.float64(np.finfo(np.float16).smallest_subnormal), scale)
    if sym:
        zero = np.full_like(scale, (maxq + 1) // 2)
    else:
        zero = np.clip(np.rint(-xmin / scale), 0, maxq)
    return scale, zero


def quantize_levels(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, maxq: int) -> np.ndarray:
    """Integer levels of w on the grid (scale, zero), float64 holding integers."""
    return np.clip(np.rint(w / scale + zero), 0, maxq)


def affine_levels(w: np.ndarray, scale: np.ndarray, offset: np.ndarray, maxq: int) -> np.ndarray:
    """Nearest levels of w on an AffineGrid (level 0 where the scale is 0)."""
    safe = np.where(scale == 0, 1.0, scale)
    return np.where(scale == 0, 0.0, np.clip(np.rint((w + offset) / safe), 0, maxq))


def affine_values(levels: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """scale * level - offset in float32, as ggml's dequantizers compute it (f64 out)."""
    # d1 * q is exact in float32 for 4-bit levels and f16-born scales, so this
    # equals ggml's `d1 * q - m1` whether or not its compiler fused it
    return (scale.astype(np.float32) * levels.astype(np.float32) - offset.astype(np.float32)).astype(np.float64)


# ----------------------------------------------------------------------------
# result


@dataclass
class GPTQResult:
    levels: np.ndarray  # uint8 [out, in]
    scales: np.ndarray  # float32 [groups, out]
    zeros: np.ndarray  # int32 [groups, out] (float32 if a custom grid gave fractional zeros)
    g_idx: np.ndarray  # int32 [in]
    perm: np.ndarray  # int64 [in]: perm[k] = the input column quantized k-th
    bits: int
    group_size: int  # as configured (-1: one group)
    loss: float = 0.0  # sum((w - q)^2 / d^2) / 2, the reference's "error"
    offsets: np.ndarray | None = None  # float32 [groups, out]: AffineGrid results (zeros = offset / scale)

    @property
    def n_groups(self) -> int:
        return int(self.scales.shape[0])

    def dequantize(self) -> np.ndarray:
        """f32 [out, in]: scale * (level - zero) with each column's group
        (AffineGrid results: scale * level - offset in float32, as ggml)."""
        if self.offsets is not None:
            return affine_values(self.levels, self.scales[self.g_idx].T, self.offsets[self.g_idx].T).astype(np.float32)
        s = self.scales.astype(np.float64)[self.g_idx].T
        z = self.zeros.astype(np.float64)[self.g_idx].T
        return (s * (self.levels.astype(np.float64) - z)).astype(np.float32)


def _check_weight(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] < 1:
        raise GPTQError(f"weight must be a non-empty 2-D matrix [out, in], got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise GPTQError("weight holds NaN or Inf")
    return W.astype(np.float64)  # a copy: the algorithm writes into it


def _n_groups(n_in: int, group_size: int) -> int:
    return 1 if group_size == -1 else -(-n_in // group_size)


def _zeros_out(zeros: np.ndarray) -> np.ndarray:
    if np.all(zeros == np.rint(zeros)):
        return zeros.astype(np.int32)
    return zeros.astype(np.float32)


def _default_grid(cfg: GPTQConfig) -> Grid:
    return lambda w, g: minmax_grid(w, cfg.bits, cfg.sym, cfg.scale_dtype)


class _Grids:
    """Per-group grid parameters as the grid callable gives them: (scale, zero)
    pairs, or AffineGrids (then `zeros` holds offsets); one kind per matrix."""

    def __init__(self, grid: Grid, n_groups: int, rows: int) -> None:
        self.grid, self.rows = grid, rows
        self.scales = np.zeros((n_groups, rows))
        self.zeros = np.zeros((n_groups, rows))  # zero points, or offsets when affine
        self.affine: bool | None = None

    def compute(self, w: np.ndarray, g: int) -> None:
        got = self.grid(w, g)
        affine = isinstance(got, AffineGrid)
        if self.affine is not None and affine != self.affine:
            raise GPTQError(f"grid of group {g} mixes AffineGrid and (scale, zero) results")
        self.affine = affine
        if isinstance(got, AffineGrid):
            scale, zero = got.scale, got.offset
        else:
            scale, zero = got
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (self.rows,))
        zero = np.broadcast_to(np.asarray(zero, dtype=np.float64), (self.rows,))
        if not (np.all(np.isfinite(scale)) and (affine or np.all(scale != 0)) and np.all(np.isfinite(zero))):
            raise GPTQError(f"grid of group {g} has a zero, NaN or Inf scale or zero point")
        self.scales[g], self.zeros[g] = scale, zero

    def quantize(self, w: np.ndarray, g: int, maxq: int) -> tuple[np.ndarray, np.ndarray]:
        """(levels, values) of column(s) w on group g's grid."""
        s, z = self.scales[g], self.zeros[g]
        if w.ndim == 2:
            s, z = s[:, None], z[:, None]
        if self.affine:
            lv = affine_levels(w, s, z, maxq)
            return lv, affine_values(lv, s, z)
        lv = quantize_levels(w, s, z, maxq)
        return lv, s * (lv - z)

    def result(
        self, levels: np.ndarray, g_idx: np.ndarray, perm: np.ndarray, cfg: GPTQConfig, loss: float = 0.0
    ) -> GPTQResult:
        lv = levels.astype(np.uint8)
        if self.affine:
            safe = np.where(self.scales == 0, 1.0, self.scales)
            zeros = np.where(self.scales == 0, 0.0, self.zeros / safe).astype(np.float32)
            return GPTQResult(
                lv,
                self.scales.astype(np.float32),
                zeros,
                g_idx.astype(np.int32),
                perm.astype(np.int64),
                cfg.bits,
                cfg.group_size,
                loss,
                self.zeros.astype(np.float32),
            )
        return GPTQResult(
            lv,
            self.scales.astype(np.float32),
            _zeros_out(self.zeros),
            g_idx.astype(np.int32),
            perm.astype(np.int64),
            cfg.bits,
            cfg.group_size,
            loss,
        )


# ----------------------------------------------------------------------------
# round to nearest (the baseline GPTQ must beat)


def quantize_rtn(W: np.ndarray, cfg: GPTQConfig = GPTQConfig(), grid: Grid | None = None) -> GPTQResult:
    """Round-to-nearest on the same grid GPTQ uses (no Hessian, no error feedback)."""
    W = _check_weight(W)
    rows, cols = W.shape
    gs = cols if cfg.group_size == -1 else cfg.group_size
    G = _n_groups(cols, cfg.group_size)
    grids = _Grids(grid or _default_grid(cfg), G, rows)
    levels = np.empty((rows, cols))
    for g in range(G):
        c0, c1 = g * gs, min((g + 1) * gs, cols)
        grids.compute(W[:, c0:c1], g)
        levels[:, c0:c1] = grids.quantize(W[:, c0:c1], g, cfg.maxq)[0]
    return grids.result(levels, np.arange(cols) // gs, np.arange(cols), cfg)


# ----------------------------------------------------------------------------
# GPTQ


def _hinv_upper(H: np.ndarray, percdamp: float) -> np.ndarray:
    """Upper Cholesky factor of (H + damp*I)^-1, damp = percdamp * mean(diag(H))."""
    n = H.shape[0]
    H = H + (percdamp * float(np.mean(np.diag(H)))) * np.eye(n)
    try:
        L = np.linalg.cholesky(H)
        Linv = np.linalg.inv(L)
        Hinv = Linv.T @ Linv  # cholesky_inverse
        return np.linalg.cholesky(Hinv).T  # upper: Hinv = U^T U
    except np.linalg.LinAlgError:
        raise GPTQError(
            f"the damped Hessian is not positive definite (percdamp={percdamp}); "
            f"raise --damp or use more calibration data"
        ) from None


def gptq_quantize(W: np.ndarray, H: np.ndarray, cfg: GPTQConfig = GPTQConfig(), grid: Grid | None = None) -> GPTQResult:
    """Quantize W [out, in] with GPTQ given the Hessian H [in, in] of its inputs.

    grid(w, g) -> (scale [rows], zero [rows]) replaces the min-max grid: w is
    [rows, n] float64, the columns of group g (in processing order without
    static groups, original order with them); dequantized values are
    scale * (level - zero), levels in [0, 2^bits - 1]. Scales may be negative
    (Q4_0's d) and zeros fractional (Q4_K); the callable does its own scale
    rounding. An AffineGrid result (value = scale * level - offset, in
    float32) is what ggml-shaped grids return; see the module doc."""
    W = _check_weight(W)
    rows, cols = W.shape
    H = np.array(H, dtype=np.float64)
    if H.shape != (cols, cols):
        raise GPTQError(f"Hessian must be [{cols}, {cols}] for a weight of shape {W.shape}, got {H.shape}")
    if not np.all(np.isfinite(H)):
        raise GPTQError("Hessian holds NaN or Inf")
    maxq, bs = cfg.maxq, int(cfg.blocksize)
    gs = cols if cfg.group_size == -1 else int(cfg.group_size)
    G = _n_groups(cols, cfg.group_size)
    grids = _Grids(grid or _default_grid(cfg), G, rows)

    if cfg.group_size == -1:
        # the reference finds the one grid before zeroing dead columns
        grids.compute(W, 0)

    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    if cfg.static_groups:
        for g in range(G):
            grids.compute(W[:, g * gs : (g + 1) * gs], g)

    if cfg.act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
    else:
        perm = np.arange(cols)

    U = _hinv_upper(H, cfg.percdamp)
    levels = np.zeros((rows, cols))
    loss = 0.0
    cur = 0

    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if cfg.group_size != -1:
                if cfg.static_groups:
                    cur = int(perm[c]) // gs
                elif c % gs == 0:
                    cur = c // gs
                    # W (not W1): the weights as of the start of this block
                    grids.compute(W[:, c : c + gs], cur)
            w = W1[:, i]
            d = U1[i, i]
            lv, q = grids.quantize(w, cur, maxq)
            levels[:, c] = lv
            err = (w - q) / d
            loss += float(np.sum(err * err)) / 2
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]

    invperm = np.argsort(perm)
    if cfg.static_groups or not cfg.act_order:
        g_idx = np.arange(cols) // gs
    else:
        g_idx = invperm // gs  # the group of the position each column was quantized at
    return grids.result(levels[:, invperm], g_idx, perm, cfg, loss)


def output_error(W: np.ndarray, Q: np.ndarray, X: np.ndarray) -> float:
    """||W X^T - Q X^T||_F for inputs X [tokens, in]: what GPTQ minimizes."""
    D = np.asarray(W, dtype=np.float64) - np.asarray(Q, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(X, dtype=np.float64) @ D.T))
