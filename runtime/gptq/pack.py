"""GPTQ INT4 tensors as the ecosystem packs them (AutoGPTQ / GPTQModel /
transformers' GPTQ loaders), both ways.

For a linear layer with weight W [out, in] (rows = outputs), group size gs
and G = ceil(in / gs) groups:

    qweight  int32 [in/8, out]   nibble j (bits 4j..4j+3) of qweight[r, o] is
                                 the level of W[o, 8r + j]: packed along the
                                 input dimension
    qzeros   int32 [G, out/8]    nibble j of qzeros[g, c] is the zero point of
                                 output 8c + j in group g: packed along the
                                 output dimension
    scales   f16   [G, out]
    g_idx    int32 [in]          group of each input column (act-order files
                                 have a non-monotonic g_idx)

    W[o, i] = scales[g, o] * (level[o, i] - zero[g, o]),  g = g_idx[i]

Zero points come in two conventions:
- "v1" (checkpoint_format "gptq", AutoGPTQ's historical format): the file
  stores zero - 1 ("zero minus one"); readers add 1 to each unpacked nibble,
  so stored zeros 0..15 mean 1..16. A zero point of 0 (an asymmetric group
  whose weights are all >= 0) cannot be written in v1.
- "v2" (checkpoint_format "gptq_v2", GPTQModel): the zero is stored as is.

Integers are packed as uint32 and reinterpreted as int32 (torch has no
uint32), exactly the bit patterns the Python packers produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lamina.errors import LaminaError
from lamina.gptq.format import PER_WORD, SUPPORTED_BITS

if TYPE_CHECKING:
    from lamina.convert.gptq.algorithm import GPTQResult

FORMATS = ("v1", "v2")
SHIFTS = np.arange(PER_WORD, dtype=np.uint32) * 4


class GPTQPackError(LaminaError, ValueError):
    """Shapes or values that the GPTQ packing cannot represent."""


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise GPTQPackError(
            f"GPTQ zero-point format must be one of {', '.join(FORMATS)} "
            f"('v1' = checkpoint_format gptq, zero minus one; 'v2' = gptq_v2), got {fmt!r}"
        )
    return fmt


def _ints(a: np.ndarray, name: str, lo: int, hi: int) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.rint(a)):
            raise GPTQPackError(f"{name} must hold integers, got non-integer values")
    elif a.dtype.kind not in "iub":
        raise GPTQPackError(f"{name} must be an integer array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        raise GPTQPackError(f"{name} must be in [{lo}, {hi}], got values in [{a.min()}, {a.max()}]")
    return a


def _nibbles_to_words(v: np.ndarray, axis: int) -> np.ndarray:
    """Pack groups of 8 consecutive 4-bit values along axis into int32 words."""
    v = np.moveaxis(v.astype(np.uint32), axis, -1)
    v = v.reshape(*v.shape[:-1], v.shape[-1] // PER_WORD, PER_WORD)
    words = np.bitwise_or.reduce(v << SHIFTS, axis=-1).astype(np.uint32)
    return np.moveaxis(words, -1, axis).view(np.int32)


def _words_to_nibbles(w: np.ndarray, axis: int) -> np.ndarray:
    w = np.moveaxis(np.ascontiguousarray(w).view(np.uint32), axis, -1)
    v = (w[..., None] >> SHIFTS) & 0xF
    v = v.reshape(*w.shape[:-1], w.shape[-1] * PER_WORD)
    return np.moveaxis(v, -1, axis).astype(np.uint8)


def _int32_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise GPTQPackError(f"{name} must be 2-D, got shape {a.shape}")
    if a.dtype not in (np.int32, np.uint32):
        raise GPTQPackError(f"{name} must be int32, got dtype {a.dtype}")
    return a


# ----------------------------------------------------------------------------
# qweight


def pack_qweight(levels: np.ndarray) -> np.ndarray:
    """levels [out, in] (0..15) -> qweight int32 [in/8, out]."""
    levels = np.asarray(levels)
    if levels.ndim != 2:
        raise GPTQPackError(f"levels must be 2-D [out, in], got shape {levels.shape}")
    out_f, in_f = levels.shape
    if in_f % PER_WORD:
        raise GPTQPackError(
            f"GPTQ INT4 packs 8 input columns per int32: in_features={in_f} "
            f"is not a multiple of 8 (weight shape [out={out_f}, in={in_f}])"
        )
    lv = _ints(levels, "levels", 0, 15)
    return _nibbles_to_words(lv.T, axis=0)  # [in, out] -> [in/8, out]


def unpack_qweight(qweight: np.ndarray) -> np.ndarray:
    """qweight int32 [in/8, out] -> levels uint8 [out, in]."""
    qweight = _int32_2d(qweight, "qweight")
    return np.ascontiguousarray(_words_to_nibbles(qweight, axis=0).T)


# ----------------------------------------------------------------------------
# qzeros


def pack_qzeros(zeros: np.ndarray, fmt: str = "v1") -> np.ndarray:
    """zeros [G, out] -> qzeros int32 [G, out/8] in the v1 (zero - 1) or v2 convention."""
    _check_format(fmt)
    zeros = np.asarray(zeros)
    if zeros.ndim != 2:
        raise GPTQPackError(f"zeros must be 2-D [groups, out], got shape {zeros.shape}")
    if zeros.shape[1] % PER_WORD:
        raise GPTQPackError(
            f"GPTQ INT4 packs 8 output zero points per int32: out_features={zeros.shape[1]} is not a multiple of 8"
        )
    if fmt == "v1":
        z = _ints(zeros, "zeros", -(1 << 62), 1 << 62)
        if z.size and z.min() == 0:
            g, o = np.argwhere(z == 0)[0]
            raise GPTQPackError(
                f"zero point 0 (group {g}, output {o}) cannot be stored in GPTQ v1 "
                f'("zero minus one") format; write v2 (gptq_v2) instead'
            )
        z = _ints(z, "zeros (v1)", 1, 16) - 1
    else:
        z = _ints(zeros, "zeros (v2)", 0, 15)
    return _nibbles_to_words(z, axis=1)


def unpack_qzeros(qzeros: np.ndarray, fmt: str = "v1") -> np.ndarray:
    """qzeros int32 [G, out/8] -> zeros int32 [G, out]; v1 adds the 1 back (1..16)."""
    _check_format(fmt)
    z = _words_to_nibbles(_int32_2d(qzeros, "qzeros"), axis=1).astype(np.int32)
    return z + 1 if fmt == "v1" else z


def convert_qzeros(qzeros: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Re-encode packed zero points between v1 and v2 (exact, or a clear error)."""
    return pack_qzeros(unpack_qzeros(qzeros, src), dst)


# ----------------------------------------------------------------------------
# the four tensors together


@dataclass
class GPTQPacked:
    qweight: np.ndarray  # int32 [in/8, out]
    qzeros: np.ndarray  # int32 [G, out/8]
    scales: np.ndarray  # float16 [G, out]
    g_idx: np.ndarray  # int32 [in]
    fmt: str = "v1"  # zero-point convention of qzeros
    bits: int = 4

    @property
    def in_features(self) -> int:
        return int(self.qweight.shape[0]) * PER_WORD

    @property
    def out_features(self) -> int:
        return int(self.qweight.shape[1])

    @property
    def n_groups(self) -> int:
        return int(self.scales.shape[0])

    def validate(self, name: str = "layer") -> None:
        """Cross-check the four shapes; raises GPTQPackError naming the tensor."""
        _check_bits(self.bits)
        _check_format(self.fmt)
        _int32_2d(self.qweight, f"{name}.qweight")
        _int32_2d(self.qzeros, f"{name}.qzeros")
        in_f, out_f = self.in_features, self.out_features
        sc = np.asarray(self.scales)
        if sc.ndim != 2 or sc.shape[1] != out_f:
            raise GPTQPackError(
                f"{name}.scales must be [groups, {out_f}] for qweight {self.qweight.shape}, got {sc.shape}"
            )
        G = sc.shape[0]
        if self.qzeros.shape != (G, out_f // PER_WORD):
            raise GPTQPackError(
                f"{name}.qzeros must be [{G}, {out_f // PER_WORD}] for scales {sc.shape}, got {self.qzeros.shape}"
            )
        gi = np.asarray(self.g_idx)
        if gi.shape != (in_f,) or gi.dtype.kind not in "iu":
            raise GPTQPackError(
                f"{name}.g_idx must be an integer vector of {in_f} entries, got shape {gi.shape} dtype {gi.dtype}"
            )
        if in_f and (gi.min() < 0 or gi.max() >= G):
            raise GPTQPackError(f"{name}.g_idx values must be in [0, {G}), got [{gi.min()}, {gi.max()}]")

    def unpack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """-> levels uint8 [out, in], scales f32 [G, out], zeros int32 [G, out], g_idx int32 [in]."""
        self.validate()
        return (
            unpack_qweight(self.qweight),
            self.scales.astype(np.float32),
            unpack_qzeros(self.qzeros, self.fmt),
            self.g_idx.astype(np.int32),
        )

    def dequantize(self) -> np.ndarray:
        """f32 [out, in]: scales[g] * (level - zero[g]) per column group g = g_idx[i]."""
        levels, scales, zeros, g_idx = self.unpack()
        s = scales[g_idx].T
        z = zeros[g_idx].T.astype(np.float32)
        return s * (levels.astype(np.float32) - z)

    def to_format(self, fmt: str) -> GPTQPacked:
        _check_format(fmt)
        if fmt == self.fmt:
            return self
        return GPTQPacked(
            self.qweight, convert_qzeros(self.qzeros, self.fmt, fmt), self.scales, self.g_idx, fmt, self.bits
        )


def _check_bits(bits: object) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in SUPPORTED_BITS:
        raise GPTQPackError(
            f"GPTQ bits={bits!r} cannot be packed: lamina's GPTQ files take bits={', '.join(map(str, SUPPORTED_BITS))}"
        )


def pack(
    levels: np.ndarray, scales: np.ndarray, zeros: np.ndarray, g_idx: np.ndarray, fmt: str = "v1", bits: int = 4
) -> GPTQPacked:
    """Pack levels [out, in], scales [G, out], zeros [G, out], g_idx [in]."""
    _check_bits(bits)
    _check_format(fmt)
    levels = np.asarray(levels)
    if levels.ndim != 2:
        raise GPTQPackError(f"levels must be 2-D [out, in], got shape {levels.shape}")
    out_f, in_f = levels.shape
    if out_f % PER_WORD or in_f % PER_WORD:
        raise GPTQPackError(
            f"GPTQ INT4 needs in_features and out_features to be multiples of 8, "
            f"got weight shape [out={out_f}, in={in_f}]"
        )
    scales = np.asarray(scales)
    zeros = np.asarray(zeros)
    if scales.ndim != 2 or scales.shape[1] != out_f:
        raise GPTQPackError(f"scales must be [groups, {out_f}], got shape {scales.shape}")
    if zeros.shape != scales.shape:
        raise GPTQPackError(f"zeros must have the shape of scales {scales.shape}, got {zeros.shape}")
    sc16 = scales.astype(np.float16)
    if not np.all(np.isfinite(sc16)):
        raise GPTQPackError("scales hold NaN or Inf, or values outside the f16 range")
    g_idx = np.asarray(g_idx)
    packed = GPTQPacked(
        pack_qweight(levels),
        pack_qzeros(zeros, fmt),
        sc16,
        _ints(g_idx, "g_idx", 0, scales.shape[0] - 1).astype(np.int32),
        fmt,
        bits,
    )
    packed.validate()
    return packed


def pack_result(res: GPTQResult, fmt: str = "v1") -> GPTQPacked:
    """Pack a gptq_quantize / quantize_rtn result."""
    return pack(res.levels, res.scales, res.zeros, res.g_idx, fmt, res.bits)
