"""Input distributions that stress quantizers: each is a function
(rng, rows, n) -> f32 [rows, n]. The names appear in test ids."""

from __future__ import annotations

import zlib

import numpy as np


def _normal(rng, rows, n):
    return rng.standard_normal((rows, n)).astype(np.float32)


def _uniform(rng, rows, n):
    return rng.uniform(-1.0, 1.0, (rows, n)).astype(np.float32)


def _heavy_tails(rng, rows, n):
    return rng.standard_t(2.0, (rows, n)).astype(np.float32)


def _outliers(rng, rows, n):
    x = rng.standard_normal((rows, n)).astype(np.float32) * 0.02
    idx = rng.integers(0, n, (rows, 3))
    np.put_along_axis(x, idx, rng.choice([-1.0, 1.0], (rows, 3)).astype(np.float32) * 40.0, axis=1)
    return x


def _all_zero(rng, rows, n):
    return np.zeros((rows, n), np.float32)


def _constant(rng, rows, n):
    return np.full((rows, n), 0.37, np.float32) * rng.choice([-1.0, 1.0], (rows, 1)).astype(np.float32)


def _tiny(rng, rows, n):
    return (rng.standard_normal((rows, n)) * 1e-30).astype(np.float32)


def _large(rng, rows, n):
    return (rng.standard_normal((rows, n)) * 1e4).astype(np.float32)


def _bf16_rounded(rng, rows, n):
    x = rng.standard_normal((rows, n)).astype(np.float32)
    return (x.view(np.uint32) & 0xFFFF0000).view(np.float32)


def _sparse(rng, rows, n):
    x = rng.standard_normal((rows, n)).astype(np.float32)
    x[rng.random((rows, n)) < 0.9] = 0.0
    return x


def _positive(rng, rows, n):
    return np.abs(rng.standard_normal((rows, n))).astype(np.float32) + 0.5


def _weights_like(rng, rows, n):
    # trained-weight-ish: per-row scale spread over two decades
    scale = np.exp(rng.uniform(np.log(0.005), np.log(0.5), (rows, 1)))
    return (rng.standard_normal((rows, n)) * scale).astype(np.float32)


DISTRIBUTIONS = {
    "normal": _normal,
    "uniform": _uniform,
    "heavy_tails": _heavy_tails,
    "outliers": _outliers,
    "all_zero": _all_zero,
    "constant": _constant,
    "tiny": _tiny,
    "large": _large,
    "bf16_rounded": _bf16_rounded,
    "sparse": _sparse,
    "positive": _positive,
    "weights_like": _weights_like,
}


def make(name: str, rows: int, n: int, seed: int = 0) -> np.ndarray:
    # crc32, not hash(): str hashes change per process, and a failure must replay
    rng = np.random.default_rng([zlib.crc32(name.encode()), rows, n, seed])
    return DISTRIBUTIONS[name](rng, rows, n)


def make_imatrix(n: int, seed: int = 0) -> np.ndarray:
    """Importance weights like a calibration run gives: positive, spread out."""
    rng = np.random.default_rng(seed + 12345)
    return (rng.exponential(1.0, n) ** 2 + 1e-3).astype(np.float32)


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    """normalized MSE of a against reference b (ggml's test-backend-ops measure)"""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    denom = float(np.sum(b * b))
    err = float(np.sum((a - b) ** 2))
    return err / denom if denom > 0 else err
