"""MXFP4-packed checkpoint tensors (gpt-oss as OpenAI released it) -> ggml's
block_mxfp4, a move of bits with nothing rounded.

A checkpoint block is 32 4-bit E2M1 codes in 16 bytes, element 2i in the low
nibble of byte i and 2i+1 in its high nibble (`*_blocks` u8 [..., nb, 16]),
with one E8M0 exponent per block (`*_scales` u8 [..., nb], 2^(e-127)). ggml's
block is the exponent byte then 16 bytes holding element j in the low nibble
of byte j and element j+16 in its high nibble. Both index the same E2M1 values
(ggml's kvalues_mxfp4 are doubled and its exponent halved to match), so the
exponent byte and the codes carry over unchanged; only the nibbles move."""

from __future__ import annotations

import numpy as np

from lamina.convert.errors import TensorShapeError

BLOCK = 32  # values per block
PACKED = BLOCK // 2  # bytes of codes per block


def ggml_mxfp4(name: str, blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """blocks u8 [..., nb, 16], scales u8 [..., nb] -> u8 [prod(...), nb * 17], one
    ggml row per leading index (a [X, rows, nb, 16] stack gives X * rows rows)."""
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise TensorShapeError(
            f"tensor {name!r}: MXFP4 blocks and scales must be U8, got {blocks.dtype} and {scales.dtype}"
        )
    if blocks.ndim < 2 or blocks.shape[-1] != PACKED or blocks.shape[:-1] != scales.shape:
        raise TensorShapeError(
            f"tensor {name!r}: MXFP4 blocks {blocks.shape} and scales {scales.shape} "
            "must be [..., nb, 16] and [..., nb]"
        )
    codes = np.stack((blocks & 0x0F, blocks >> 4), axis=-1).reshape(*blocks.shape[:-1], BLOCK)  # [..., nb, 32] in order
    qs = codes[..., :PACKED] | (codes[..., PACKED:] << 4)  # [..., nb, 16]
    out = np.concatenate((scales[..., None], qs), axis=-1)  # [..., nb, 17]
    return np.ascontiguousarray(out.reshape(-1, out.shape[-2] * out.shape[-1]))
