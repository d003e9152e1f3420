"""One tensor, f32 in, the bytes of its target type out, over all threads.

Quantization is per row, so row chunks are independent and the result is the
same bytes whatever the chunking; cffi releases the GIL during the native
call, so plain Python threads run the chunks in parallel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.errors import NonFiniteWeightError
from lamina.quants import quantize, row_bytes

# rows per chunk aim at ~64K weights: small enough to balance, big enough that
# the per-call overhead vanishes
_CHUNK_WEIGHTS = 1 << 16


class Encoder:
    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def encode(self, name: str, x: np.ndarray, qtype: Q, importance: np.ndarray | None = None) -> np.ndarray:
        """x: f32 in numpy order (last axis contiguous) -> u8 [rows, row_bytes].
        importance: f32 [n_mat * n], the quantizer's weights (an importance
        matrix), row j for the j-th of n_mat equal runs of rows (the experts
        of a 3-D stack)."""
        rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        check_finite(name, rows)
        if qtype == Q.F32:
            return rows.view(np.uint8)
        n_rows, n = rows.shape
        out = np.empty((n_rows, row_bytes(qtype, n)), dtype=np.uint8)
        if n_rows == 0:
            return out
        step = max(1, _CHUNK_WEIGHTS // n)
        per_mat, weights = n_rows, None
        if importance is not None:
            weights = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1, n)
            if n_rows % len(weights):
                raise ValueError(f"tensor {name!r}: {n_rows} rows do not split into {len(weights)} experts")
            per_mat = n_rows // len(weights)
        # chunks never cross an expert: each has its own importance row
        starts = [m + a for m in range(0, n_rows, per_mat) for a in range(0, per_mat, step)]

        def run(a: int) -> None:
            b = min(a + step, (a // per_mat + 1) * per_mat)
            out[a:b] = quantize(rows[a:b], qtype, None if weights is None else weights[a // per_mat])

        if self._pool is None or len(starts) == 1:
            for a in starts:
                run(a)
        else:
            for _ in self._pool.map(run, starts):
                pass
        return out


def check_finite(name: str, rows: np.ndarray) -> None:
    # in slabs, so the boolean mask never costs a tensor-sized allocation
    step = max(1, (1 << 22) // rows.shape[1])
    for a in range(0, rows.shape[0], step):
        finite = np.isfinite(rows[a : a + step])
        if not finite.all():
            r, c = (int(v) for v in np.argwhere(~finite)[0])
            raise NonFiniteWeightError(f"tensor {name!r}: NaN/Inf weight at row {a + r}, column {c} ({rows[a + r, c]})")
