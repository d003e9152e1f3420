"""GPTQ rounding into GGUF's own block formats: Q4_0, Q5_0 and Q4_K.

GPTQ (convert/gptq/algorithm.py) chooses each weight's 4-bit level with error feedback;
here the levels live on the grids of ggml's block types, so the result is
ordinary Q4_0 / Q5_0 / Q4_K blocks that llama.cpp loads unchanged, and the bytes
dequantize exactly to the weights GPTQ committed to (its grids are
`AffineGrid`s evaluated in float32 the way ggml's dequantizers do).

Q4_0 and Q5_0 (32 weights, w = d * (q - h), d f16, h = 8 resp. 16, levels
    0..2h-1): the group is the 32-weight block. d is computed as ggml's
    quantize_row_q{4,5}_0_ref computes it, d = m / -h with m the block's
    signed weight of largest magnitude, rounded to f16. Two choices of which
    weights it is computed from (`BLOCK_GRIDS`):
      "original": from the weights before GPTQ (what plain llama-quantize
                  would store), fixed up front;
      "feedback": from the block's weights as GPTQ's error feedback has left
                  them when the block comes up (the reference GPTQ's way of
                  finding a group's grid), using lazy blocks of 32 columns so
                  every earlier column's feedback is in.
    DEFAULT_BLOCK_GRID is the one that measured lower output error:
    "feedback". With act-order the blocks are visited out of order, so the
    grids are always "original" then.

Q4_K (256-weight super-blocks of eight 32-weight sub-blocks, w = d*sc*q -
    dmin*m, d/dmin f16, sc/m 6-bit): the super-block scales d, dmin and the
    sub-block sc, m are exactly what ggml's quantize_row_q4_K_ref picks from
    the original weights (we run lamina's bit-exact native quantizer and read
    them back out of its blocks); GPTQ then chooses only the 4-bit levels on
    those fixed grids (group = sub-block of 32). Round-to-nearest on the same
    grids reproduces ggml's own Q4_K quantization.

Every grid is per output row and per 32 input columns in the original column
order (g_idx = i // 32), so act-order changes only the order in which GPTQ
visits columns, never the block layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.gptq.algorithm import AffineGrid, GPTQConfig, GPTQError, GPTQResult, gptq_quantize, quantize_rtn
from lamina.quants import dequantize, quantize

BLOCK = 32  # Q4_0/Q5_0 block = Q4_K sub-block = the GPTQ group
QK_K = 256
Q4_0_BYTES = 18  # f16 d + 16 bytes of nibbles
Q5_0_BYTES = 22  # f16 d + 4 bytes of 5th bits + 16 bytes of nibbles
Q4_K_BYTES = 144  # f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
Q4_K_HEAD = 16  # d, dmin, scales: what GPTQ keeps from ggml's quantization
# the symmetric 32-weight types: w = d * (q - HALF), levels 0 .. 2*HALF - 1
HALF = {Q.Q4_0: 8, Q.Q5_0: 16}
GGML_GRID_TYPES = (Q.Q4_0, Q.Q5_0, Q.Q4_K)
BLOCK_GRIDS = ("original", "feedback")
# Measured on SmolLM2-135M-Instruct, all 210 linears, 16 windows of 256 tokens
# of asyoulik.txt, output error ||(W - Q) X^T||^2 on the calibration inputs:
# "feedback" was lower than "original" for 207 of 210 (mean error relative to
# ggml's round-to-nearest 0.255 vs 0.259; act-order, always "original": 0.209).
DEFAULT_BLOCK_GRID = "feedback"


class GGMLGridError(GPTQError):
    """A weight cannot be GPTQ-rounded into the asked ggml type (type, shape)."""


@dataclass
class GridQuant:
    """A linear in a ggml block type, and what GPTQ (or RTN) committed to."""

    qtype: Q
    data: np.ndarray  # u8 [rows, row_bytes]: the GGUF tensor bytes
    result: GPTQResult | None  # the levels/grids behind data (None for plain ggml RTN)

    def dequantize(self) -> np.ndarray:
        """f32 [rows, cols] the file holds (lamina's native dequantizer)."""
        return dequantize(self.data, self.qtype)


def _check(name: str, W: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype not in GGML_GRID_TYPES:
        raise GGMLGridError(
            f"{name}: GPTQ rounds into {', '.join(t.name for t in GGML_GRID_TYPES)} only, not {Q(qtype).name}"
        )
    W = np.asarray(W)
    if W.ndim != 2:
        raise GGMLGridError(f"{name}: weight must be 2-D [out, in], got shape {W.shape}")
    block = QK_K if qtype == Q.Q4_K else BLOCK
    if W.shape[1] % block:
        raise GGMLGridError(
            f"{name}: row length {W.shape[1]} is not a multiple of {qtype.name}'s block size "
            f"{block} (weight shape {W.shape})"
        )
    return np.ascontiguousarray(W, dtype=np.float32)


# ----------------------------------------------------------------------------
# Q4_0, Q5_0


def block_d(w: np.ndarray, qtype: Q) -> np.ndarray:
    """Per row of w [rows, 32]: ggml's d = max / -HALF (max: the signed weight
    of largest magnitude, the first one on ties), as the f16 the block stores."""
    w = np.asarray(w, dtype=np.float32)
    idx = np.argmax(np.abs(w), axis=1)  # first maximum, as ggml's strict '>' scan keeps
    m = w[np.arange(w.shape[0]), idx]
    return (m / np.float32(-HALF[qtype])).astype(np.float16).astype(np.float64)


def _block_grid(d: np.ndarray, qtype: Q) -> AffineGrid:
    # w = d * (q - h) = d*q - h*d, exact in float32 for an f16 d
    return AffineGrid(d, HALF[qtype] * d)


def static_block_grid(W: np.ndarray, qtype: Q):
    """The Grid whose group g is ggml's own block g of the original W."""
    G = W.shape[1] // BLOCK
    ds = [block_d(W[:, g * BLOCK : (g + 1) * BLOCK], qtype) for g in range(G)]
    return lambda w, g: _block_grid(ds[g], qtype)


def feedback_block_grid(qtype: Q):
    """A Grid: d from the block's weights as GPTQ hands them over (error fed)."""
    return lambda w, g: _block_grid(block_d(w, qtype), qtype)


def encode_block(levels: np.ndarray, d: np.ndarray, qtype: Q) -> np.ndarray:
    """levels uint8 [rows, n] (0 .. 2*HALF-1), d [G, rows] (f16 values) -> Q4_0
    or Q5_0 bytes [rows, n/32*block_bytes]. ggml: qs[j] holds the low nibbles
    of q[j] | q[j + 16] << 4; Q5_0's qh bit j is q[j]'s 5th bit."""
    rows, n = levels.shape
    nb = n // BLOCK
    nbytes = Q4_0_BYTES if qtype == Q.Q4_0 else Q5_0_BYTES
    out = np.empty((rows, nb, nbytes), dtype=np.uint8)
    out[:, :, :2] = np.ascontiguousarray(np.asarray(d).T.astype(np.float16)).view(np.uint8).reshape(rows, nb, 2)
    lv = np.asarray(levels, dtype=np.uint8).reshape(rows, nb, BLOCK)
    if qtype == Q.Q5_0:
        bits = (lv >> 4).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
        out[:, :, 2:6] = np.bitwise_or.reduce(bits, axis=2).astype("<u4")[..., None].view(np.uint8)
    lo = lv & 0xF
    out[:, :, nbytes - 16 :] = lo[:, :, :16] | (lo[:, :, 16:] << 4)
    return out.reshape(rows, nb * nbytes)


# ----------------------------------------------------------------------------
# Q4_K


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def q4_k_scales(blocks: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K bytes [rows, nb*144] -> per sub-block (scale = d*sc, offset = dmin*m),
    each float32 [rows, nb*8], as ggml's dequantize_row_q4_K forms them."""
    b = np.asarray(blocks, dtype=np.uint8).reshape(rows, -1, Q4_K_BYTES)
    d, dmin = _f16(b[:, :, 0:2]), _f16(b[:, :, 2:4])  # [rows, nb]
    q = b[:, :, 4:16].astype(np.uint8)
    sc = np.empty(b.shape[:2] + (8,), dtype=np.uint8)
    m = np.empty_like(sc)
    # get_scale_min_k4
    sc[..., :4] = q[..., 0:4] & 63
    m[..., :4] = q[..., 4:8] & 63
    sc[..., 4:] = (q[..., 8:12] & 0xF) | ((q[..., 0:4] >> 6) << 4)
    m[..., 4:] = (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)
    scale = d[..., None] * sc.astype(np.float32)
    offset = dmin[..., None] * m.astype(np.float32)
    return scale.reshape(rows, -1), offset.reshape(rows, -1)


def q4_k_reference(W: np.ndarray) -> np.ndarray:
    """ggml's own Q4_K quantization of W (f32 [rows, n]), bytes [rows, n/256*144]."""
    return quantize(np.ascontiguousarray(W, dtype=np.float32), Q.Q4_K)


def q4_k_static_grid(blocks: np.ndarray, rows: int):
    scale, offset = q4_k_scales(blocks, rows)  # [rows, G]
    return lambda w, g: AffineGrid(scale[:, g].astype(np.float64), offset[:, g].astype(np.float64))


def encode_q4_k(levels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """levels uint8 [rows, n] on the grids of `reference` (Q4_K bytes of the
    same weight) -> Q4_K bytes: the reference's d, dmin and scales, new nibbles."""
    rows, n = levels.shape
    nb = n // QK_K
    out = np.array(np.asarray(reference, dtype=np.uint8).reshape(rows, nb, Q4_K_BYTES))
    lv = np.asarray(levels, dtype=np.uint8).reshape(rows, nb, 4, 2, 32)  # 64-weight chunks: two sub-blocks
    out[:, :, Q4_K_HEAD:] = (lv[:, :, :, 0] | (lv[:, :, :, 1] << 4)).reshape(rows, nb, 128)
    return out.reshape(rows, nb * Q4_K_BYTES)


# ----------------------------------------------------------------------------
# GPTQ / round-to-nearest into a ggml type


def ggml_config(act_order: bool, percdamp: float, qtype: Q, block_grid: str = DEFAULT_BLOCK_GRID) -> GPTQConfig:
    """The GPTQConfig that rounds into qtype's grid: groups of 32 fixed in place
    (static) unless Q4_0/Q5_0 take their d from the error-fed weights."""
    if block_grid not in BLOCK_GRIDS:
        raise GGMLGridError(f"Q4_0/Q5_0 grid must be one of {', '.join(BLOCK_GRIDS)}, got {block_grid!r}")
    feedback = qtype in HALF and block_grid == "feedback" and not act_order
    return GPTQConfig(
        bits=5 if qtype == Q.Q5_0 else 4,
        group_size=BLOCK,
        sym=True,
        act_order=act_order,
        static_groups=not feedback,
        percdamp=percdamp,
        blocksize=BLOCK if feedback else 128,
    )


def gptq_ggml(
    name: str,
    W: np.ndarray,
    H: np.ndarray,
    qtype: Q,
    *,
    act_order: bool = False,
    percdamp: float = 0.01,
    block_grid: str = DEFAULT_BLOCK_GRID,
) -> GridQuant:
    """GPTQ of W [out, in] (Hessian H [in, in]) into Q4_0, Q5_0 or Q4_K blocks."""
    W = _check(name, W, qtype)
    cfg = ggml_config(act_order, percdamp, qtype, block_grid)
    if qtype == Q.Q4_K:
        ref = q4_k_reference(W)
        res = gptq_quantize(W, H, cfg, grid=q4_k_static_grid(ref, W.shape[0]))
        return GridQuant(qtype, encode_q4_k(res.levels, ref), res)
    grid = feedback_block_grid(qtype) if not cfg.static_groups else static_block_grid(W, qtype)
    res = gptq_quantize(W, H, cfg, grid=grid)
    return GridQuant(qtype, encode_block(res.levels, res.scales, qtype), res)


def rtn_ggml(name: str, W: np.ndarray, qtype: Q) -> GridQuant:
    """Round-to-nearest on the same fixed grids GPTQ uses ("original" Q4_0/Q5_0
    d, ggml's Q4_K scales): the baseline GPTQ must beat."""
    W = _check(name, W, qtype)
    cfg = ggml_config(False, 0.0, qtype, "original")
    if qtype == Q.Q4_K:
        ref = q4_k_reference(W)
        res = quantize_rtn(W, cfg, grid=q4_k_static_grid(ref, W.shape[0]))
        return GridQuant(qtype, encode_q4_k(res.levels, ref), res)
    res = quantize_rtn(W, cfg, grid=static_block_grid(W, qtype))
    return GridQuant(qtype, encode_block(res.levels, res.scales, qtype), res)
