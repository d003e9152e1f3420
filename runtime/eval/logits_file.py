"""llama-perplexity's `_logits_` file: the base run of a KL-divergence
comparison (perplexity.cpp `kl_divergence()` and the logits-file branch of
`perplexity()`): the base model's run saves, for every scored position, its
log-probabilities in 16 bits, in the `_logits_` layout that perplexity.cpp
writes and reads (learned from its source; tests/convert/test_distill_kld_base.py
reads a file written by llama-perplexity itself):

    char[8]  "_logits_"
    int32    n_ctx
    int32    n_vocab
    int32    n_chunk
    int32    tokens[n_chunk * n_ctx]      the evaluated text tokens (no BOS substitution)
    per chunk, per scored position (n_ctx - 1 - n_ctx/2 rows), nv = 2*ceil(n_vocab/2) + 4 uint16:
      float32 scale, float32 min_log_prob (the first 4 uint16), then
      uint16 q[n_vocab] (+1 pad when n_vocab is odd):
        log p_i = scale * q_i + min_log_prob; logits more than 16 below the
        max are clamped to the bottom (q = 0)

The compare run (lamina.eval.kld) re-evaluates those tokens with the other model and reports,
per chunk and in total, PPL(Q), ln(PPL(Q)/PPL(base)), mean KLD, RMS of
Δp = p(target) - p_base(target), and how often the top token agrees, with
the same ± estimates and the same statistics block as llama-perplexity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lamina.eval.scoring import ROWS_PER_PASS, PerplexityError, _log_softmax_parts, n_scored

LOGITS_MAGIC = b"_logits_"


def _nearest_int(x: np.ndarray) -> np.ndarray:
    # perplexity.cpp nearest_int: float32 round half to even
    return np.rint(x.astype(np.float32)).astype(np.int64)


def encode_log_probs(logits: np.ndarray, n_vocab: int) -> np.ndarray:
    """Rows of logits -> uint16 [n, nv] in the `_logits_` row layout (see module doc)."""
    logits = np.asarray(logits, dtype=np.float32)
    n = len(logits)
    nv = 2 * ((n_vocab + 1) // 2) + 4
    out = np.zeros((n, nv), dtype=np.uint16)
    for r0 in range(0, n, ROWS_PER_PASS):
        x = logits[r0 : r0 + ROWS_PER_PASS]
        mx, lse, _ = _log_softmax_parts(x)
        mn = np.maximum(x.min(axis=1), mx - np.float32(16))
        log_sum_exp = lse.astype(np.float32)
        min_log_prob = (mn - mx - log_sum_exp).astype(np.float32)
        scale = ((mx - mn) / np.float32(65535)).astype(np.float32)
        head = np.stack([scale, min_log_prob], axis=1).astype(np.float32)
        rows = out[r0 : r0 + len(x)]
        rows[:, :4] = head.view(np.uint16)
        with np.errstate(divide="ignore"):
            inv = np.where(scale != 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
        q = _nearest_int(inv[:, None] * (x - mn[:, None]))
        q = np.where(x > mn[:, None], q, 0)
        rows[:, 4 : 4 + n_vocab] = np.clip(q, 0, 65535).astype(np.uint16)
    return out


def decode_log_probs(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """uint16 [n, nv] -> f32 [n, n_vocab] base log-probabilities."""
    rows = np.ascontiguousarray(rows)
    head = rows[:, :4].copy().view(np.float32)  # [n, 2]: scale, min_log_prob
    q = rows[:, 4 : 4 + n_vocab].astype(np.float32)
    return head[:, :1] * q + head[:, 1:2]


# ----------------------------------------------------------------------------
# the `_logits_` file


@dataclass
class LogitsFileHeader:
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 [n_chunk * n_ctx]

    @property
    def row_u16(self) -> int:
        return 2 * ((self.n_vocab + 1) // 2) + 4

    @property
    def chunk_bytes(self) -> int:
        return n_scored(self.n_ctx) * self.row_u16 * 2

    @property
    def data_offset(self) -> int:
        return 8 + 12 + 4 * self.n_chunk * self.n_ctx


class LogitsFileWriter:
    """Writes a `_logits_` file to PATH.tmp and renames it when every chunk is in."""

    def __init__(
        self, path: str | os.PathLike[str], n_ctx: int, n_vocab: int, n_chunk: int, tokens: np.ndarray
    ) -> None:
        self.path = Path(path)
        self.header = LogitsFileHeader(
            n_ctx, n_vocab, n_chunk, np.ascontiguousarray(tokens[: n_chunk * n_ctx], dtype=np.int32)
        )
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: BinaryIO | None = open(self.tmp, "wb")  # noqa: SIM115 (open across write_chunk calls)
        self._chunks = 0
        self._f.write(LOGITS_MAGIC)
        self._f.write(np.array([n_ctx, n_vocab, n_chunk], dtype=np.int32).tobytes())
        self._f.write(self.header.tokens.tobytes())

    def write_chunk(self, logits: np.ndarray) -> None:
        """logits: f32 [n_scored(n_ctx), n_vocab] of positions first .. n_ctx-2."""
        assert self._f is not None
        rows = encode_log_probs(logits, self.header.n_vocab)
        self._f.write(rows.tobytes())
        self._chunks += 1

    def close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        self._f = None
        if self._chunks == self.header.n_chunk:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self.tmp.unlink(missing_ok=True)


class LogitsFileError(PerplexityError):
    """A `_logits_` file that is unreadable, truncated or corrupt; names the file and the field."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path, self.field = path, field


class LogitsFile:
    """A `_logits_` file, validated against its size and vocabulary, chunks read by memory map."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(20)
        except OSError as e:
            raise LogitsFileError(
                self.path, "file", f"cannot read the KL-divergence base file: {e.strerror or e}"
            ) from None
        if len(head) < 8 or head[:8] != LOGITS_MAGIC:
            raise LogitsFileError(
                self.path,
                "magic",
                "does not look like a file of log-probabilities "
                "(expected the '_logits_' header written by --kl-divergence-base)",
            )
        if len(head) < 20:
            raise LogitsFileError(self.path, "header", f"{size} bytes, truncated inside n_ctx/n_vocab/n_chunk")
        n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(head[8:20], dtype=np.int32))
        for field, value, low in (("n_ctx", n_ctx, 4), ("n_vocab", n_vocab, 1), ("n_chunk", n_chunk, 1)):
            if value < low:
                raise LogitsFileError(
                    self.path, field, f"{value} (header n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk})"
                )
        hdr = LogitsFileHeader(n_ctx, n_vocab, n_chunk, np.empty(0, dtype=np.int32))
        expected = hdr.data_offset + n_chunk * hdr.chunk_bytes
        if size != expected:
            raise LogitsFileError(
                self.path,
                "size",
                f"{size} bytes but its header (n_ctx={n_ctx}, n_vocab={n_vocab}, "
                f"n_chunk={n_chunk}) needs {expected}: truncated or not a logits file",
            )
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        hdr.tokens = np.frombuffer(self._mm[20 : hdr.data_offset], dtype=np.int32)
        bad = np.flatnonzero((hdr.tokens < 0) | (hdr.tokens >= n_vocab))
        if bad.size:
            at = int(bad[0])
            raise LogitsFileError(
                self.path, "tokens", f"token {int(hdr.tokens[at])} at {at} is outside [0, n_vocab={n_vocab})"
            )
        self.header = hdr

    def chunk(self, i: int) -> np.ndarray:
        """uint16 [n_scored, nv] of chunk i."""
        h = self.header
        start = h.data_offset + i * h.chunk_bytes
        return np.frombuffer(self._mm[start : start + h.chunk_bytes], dtype=np.uint16).reshape(
            n_scored(h.n_ctx), h.row_u16
        )

    def log_probs(self, i: int) -> np.ndarray:
        """f32 [n_scored, n_vocab] base log-probabilities of chunk i, each row's
        scale and min_log_prob checked (a corrupt row would give garbage)."""
        rows = self.chunk(i)
        head = rows[:, :4].copy().view(np.float32)  # [n, 2]: scale, min_log_prob
        scale, low = head[:, 0], head[:, 1]
        # a row spans at most 16 (logits below max - 16 are clamped), so scale <= 16/65535
        bad_scale = ~np.isfinite(scale) | (scale < 0) | (scale > np.float32(16.001 / 65535))
        bad_low = ~np.isfinite(low) | (low > np.float32(1e-3))
        for field, bad in (("scale", bad_scale), ("min_log_prob", bad_low)):
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                value = float(head[r, 0 if field == "scale" else 1])
                raise LogitsFileError(
                    self.path, f"chunk {i} row {r} {field}", f"{value} is not a valid value: the file is corrupt"
                )
        return decode_log_probs(rows, self.header.n_vocab)
