"""Perplexity and KL-divergence, computed the way llama.cpp's llama-perplexity
computes them (tools/perplexity/perplexity.cpp), so the numbers compare.

Perplexity (perplexity.cpp `perplexity()`):
- The whole text is tokenized once, with BOS when the vocabulary adds one
  (`common_tokenize(ctx, prompt, true)`, special tokens not parsed).
- It needs at least 2*n_ctx tokens; the text is cut into
  n_chunk = n_tokens // n_ctx chunks of n_ctx tokens (the tail is dropped),
  or the first --chunks of them.
- Each chunk is evaluated from an empty KV cache. When the vocabulary adds
  BOS, the chunk's first token is replaced by BOS for the evaluation (the
  text token is put back afterwards).
- Only the second half is scored: with first = n_ctx/2, the logits at
  positions first .. n_ctx-2 predict tokens first+1 .. n_ctx-1, so each chunk
  contributes n_ctx - 1 - first negative log-likelihoods.
- After each chunk the running estimate exp(mean NLL) is printed as
  `[i]ppl,`; at the end, with mean m and mean square m2 over all N scored
  tokens, the uncertainty of the mean NLL is sqrt((m2 - m^2) / (N - 1)) and
  `Final estimate: PPL = exp(m) +/- exp(m) * that`.
- A token's NLL is max + log(sum exp(logit - max)) - logit[target], exp in
  float32 summed in double (`log_softmax`).

KL-divergence (perplexity.cpp `kl_divergence()` and the logits-file branch of
`perplexity()`): the base model's run saves, for every scored position, its
log-probabilities in 16 bits, in the `_logits_` layout that perplexity.cpp
writes and reads (mirrored from its source; not yet exercised against the
llama-perplexity binary, which llama-cpp-python does not build):

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

The compare run re-evaluates those tokens with the other model and reports,
per chunk and in total, PPL(Q), ln(PPL(Q)/PPL(base)), mean KLD, RMS of
Δp = p(target) - p_base(target), and how often the top token agrees, with
the same ± estimates and the same statistics block as llama-perplexity.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Protocol, Sequence

import numpy as np

from runtime.errors import LaminaError

LOGITS_MAGIC = b"_logits_"
ROWS_PER_PASS = 64          # logits rows processed at once (bounds the temporaries)


class PerplexityError(LaminaError, ValueError):
    """The text, settings or a KL-divergence base file cannot be used."""


class LogitsProvider(Protocol):
    """Logits of a fresh sequence: tokens [n] -> f32 [n - first, n_vocab],
    the rows for positions first .. n-1 (earlier rows need not be computed)."""

    n_vocab: int

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray: ...


# ----------------------------------------------------------------------------
# chunking

def n_scored(n_ctx: int) -> int:
    """Tokens scored per chunk: the second half minus the last position."""
    return n_ctx - 1 - n_ctx // 2


def plan_chunks(n_tokens: int, n_ctx: int, n_chunks: Optional[int] = None) -> int:
    """Number of chunks llama-perplexity would evaluate, or a clear error."""
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise PerplexityError(f"context size must be an integer >= 4, got {n_ctx!r}")
    if n_chunks is not None and n_chunks < 1:
        raise PerplexityError(f"--chunks must be >= 1, got {n_chunks}")
    if n_tokens < 2 * n_ctx:
        raise PerplexityError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of "
                              f"{n_ctx}; the text tokenizes to only {n_tokens} tokens (use a longer text or a "
                              f"smaller -c)")
    n_max = n_tokens // n_ctx
    return n_max if n_chunks is None else min(n_chunks, n_max)


def chunk_tokens(tokens: np.ndarray, i: int, n_ctx: int, bos_id: Optional[int]) -> np.ndarray:
    """The tokens evaluated for chunk i: a copy, first one replaced by BOS when bos_id is set."""
    chunk = np.array(tokens[i * n_ctx:(i + 1) * n_ctx], dtype=np.int32)
    if bos_id is not None:
        chunk[0] = bos_id
    return chunk


# ----------------------------------------------------------------------------
# per-row math (float32 like perplexity.cpp, sums in float64)

def _log_softmax_parts(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max [n] f32, log(sum exp(x - max)) [n] (f64), argmax [n]."""
    imax = np.argmax(logits, axis=1)
    mx = logits[np.arange(len(logits)), imax]
    sum_exp = np.exp(logits - mx[:, None]).sum(axis=1, dtype=np.float64)
    return mx, np.log(sum_exp), imax


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, f64 [n]."""
    logits = np.asarray(logits, dtype=np.float32)
    out = np.empty(len(logits), dtype=np.float64)
    for r0 in range(0, len(logits), ROWS_PER_PASS):
        x = logits[r0:r0 + ROWS_PER_PASS]
        mx, lse, _ = _log_softmax_parts(x)
        tgt = x[np.arange(len(x)), targets[r0:r0 + ROWS_PER_PASS]]
        out[r0:r0 + len(x)] = mx.astype(np.float64) + lse - tgt.astype(np.float64)
    return out


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
        x = logits[r0:r0 + ROWS_PER_PASS]
        mx, lse, _ = _log_softmax_parts(x)
        mn = np.maximum(x.min(axis=1), mx - np.float32(16))
        log_sum_exp = lse.astype(np.float32)
        min_log_prob = (mn - mx - log_sum_exp).astype(np.float32)
        scale = ((mx - mn) / np.float32(65535)).astype(np.float32)
        head = np.stack([scale, min_log_prob], axis=1).astype(np.float32)
        rows = out[r0:r0 + len(x)]
        rows[:, :4] = head.view(np.uint16)
        with np.errstate(divide="ignore"):
            inv = np.where(scale != 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
        q = _nearest_int(inv[:, None] * (x - mn[:, None]))
        q = np.where(x > mn[:, None], q, 0)
        rows[:, 4:4 + n_vocab] = np.clip(q, 0, 65535).astype(np.uint16)
    return out


def decode_log_probs(rows: np.ndarray, n_vocab: int) -> np.ndarray:
    """uint16 [n, nv] -> f32 [n, n_vocab] base log-probabilities."""
    rows = np.ascontiguousarray(rows)
    head = rows[:, :4].copy().view(np.float32)          # [n, 2]: scale, min_log_prob
    q = rows[:, 4:4 + n_vocab].astype(np.float32)
    return head[:, :1] * q + head[:, 1:2]


# ----------------------------------------------------------------------------
# the `_logits_` file

@dataclass
class LogitsFileHeader:
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray          # int32 [n_chunk * n_ctx]

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

    def __init__(self, path: str | os.PathLike[str], n_ctx: int, n_vocab: int, n_chunk: int,
                 tokens: np.ndarray) -> None:
        self.path = Path(path)
        self.header = LogitsFileHeader(n_ctx, n_vocab, n_chunk,
                                       np.ascontiguousarray(tokens[:n_chunk * n_ctx], dtype=np.int32))
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: Optional[BinaryIO] = open(self.tmp, "wb")
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


class LogitsFile:
    """A `_logits_` file, validated against its size, chunks read by memory map."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(20)
        except OSError as e:
            raise PerplexityError(f"{self.path}: cannot read the KL-divergence base file: "
                                  f"{e.strerror or e}") from None
        if len(head) < 20 or head[:8] != LOGITS_MAGIC:
            raise PerplexityError(f"{self.path}: does not look like a file of log-probabilities "
                                  f"(expected the '_logits_' header written by --kl-divergence-base)")
        n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(head[8:20], dtype=np.int32))
        if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
            raise PerplexityError(f"{self.path}: bad header: n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk}")
        hdr = LogitsFileHeader(n_ctx, n_vocab, n_chunk, np.empty(0, dtype=np.int32))
        expected = hdr.data_offset + n_chunk * hdr.chunk_bytes
        if size != expected:
            raise PerplexityError(f"{self.path}: is {size} bytes but its header (n_ctx={n_ctx}, n_vocab={n_vocab}, "
                                  f"n_chunk={n_chunk}) needs {expected}: truncated or not a logits file")
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        hdr.tokens = np.frombuffer(self._mm[20:hdr.data_offset], dtype=np.int32)
        self.header = hdr

    def chunk(self, i: int) -> np.ndarray:
        """uint16 [n_scored, nv] of chunk i."""
        h = self.header
        start = h.data_offset + i * h.chunk_bytes
        return np.frombuffer(self._mm[start:start + h.chunk_bytes], dtype=np.uint16).reshape(n_scored(h.n_ctx),
                                                                                             h.row_u16)


# ----------------------------------------------------------------------------
# perplexity

@dataclass
class PerplexityResult:
    ppl: float
    ppl_err: float               # ± of the final estimate (0 when undefined)
    n_ctx: int
    n_chunks: int
    count: int                   # tokens scored
    running_ppl: list[float]     # exp(mean NLL so far) after each chunk, as printed `[i]x,`
    chunk_ppl: list[float]       # each chunk's own perplexity
    nll: np.ndarray = field(repr=False)  # f64 [count], per scored token

    @property
    def final_line(self) -> str:
        return f"Final estimate: PPL = {self.ppl:.4f} +/- {self.ppl_err:.5f}"


def ppl_estimate(nll_sum: float, nll2_sum: float, count: int) -> tuple[float, float]:
    """perplexity.cpp's final estimate: (exp(m), exp(m) * sqrt((m2 - m^2)/(N-1)))."""
    m = nll_sum / count
    var = nll2_sum / count - m * m
    ppl = math.exp(m)
    return ppl, (ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0)


ChunkCallback = Callable[[int, int, float], None]   # (chunks done, n_chunk, running ppl)


def compute_perplexity(provider: LogitsProvider, tokens: Sequence[int] | np.ndarray, n_ctx: int,
                       n_chunks: Optional[int] = None, bos_id: Optional[int] = None,
                       kl_base_path: str | os.PathLike[str] | None = None,
                       on_chunk: Optional[ChunkCallback] = None) -> PerplexityResult:
    """Perplexity over `tokens` (already tokenized, BOS included when the model adds it).

    bos_id: the BOS id when the vocabulary adds BOS (each chunk starts with it),
    else None. kl_base_path: also save the base log-probs for --kl-divergence."""
    toks = np.asarray(tokens, dtype=np.int64)
    n_chunk = plan_chunks(len(toks), n_ctx, n_chunks)
    first = n_ctx // 2
    n_sc = n_scored(n_ctx)
    writer = LogitsFileWriter(kl_base_path, n_ctx, provider.n_vocab, n_chunk, toks) if kl_base_path else None
    nll_all = np.empty(n_chunk * n_sc, dtype=np.float64)
    running, per_chunk = [], []
    nll_sum = nll2_sum = 0.0
    try:
        for i in range(n_chunk):
            logits = _provider_rows(provider, chunk_tokens(toks, i, n_ctx, bos_id), first)[:n_sc]
            targets = toks[i * n_ctx + first + 1:(i + 1) * n_ctx]
            v = token_nll(logits, targets)
            if writer is not None:
                writer.write_chunk(logits)
            nll_all[i * n_sc:(i + 1) * n_sc] = v
            nll_sum += float(v.sum())
            nll2_sum += float((v * v).sum())
            count = (i + 1) * n_sc
            running.append(math.exp(nll_sum / count))
            per_chunk.append(math.exp(float(v.mean())))
            if on_chunk is not None:
                on_chunk(i + 1, n_chunk, running[-1])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    count = n_chunk * n_sc
    ppl, err = ppl_estimate(nll_sum, nll2_sum, count)
    return PerplexityResult(ppl, err, n_ctx, n_chunk, count, running, per_chunk, nll_all)


def _provider_rows(provider: LogitsProvider, chunk: np.ndarray, first: int) -> np.ndarray:
    rows = np.asarray(provider(chunk, first), dtype=np.float32)
    expected = (len(chunk) - first, provider.n_vocab)
    if rows.shape != expected:
        raise PerplexityError(f"logits provider returned shape {rows.shape}, expected {expected}")
    return rows


# ----------------------------------------------------------------------------
# KL divergence

@dataclass
class KLDStats:
    """perplexity.cpp's kl_divergence_result, plus the per-token values."""
    sum_nll: float = 0.0
    sum_nll2: float = 0.0
    sum_nll_base: float = 0.0
    sum_nll_base2: float = 0.0
    sum_nll_nll_base: float = 0.0
    sum_kld: float = 0.0
    sum_kld2: float = 0.0
    sum_p_diff: float = 0.0
    sum_p_diff2: float = 0.0
    sum_p_diff4: float = 0.0
    max_p_diff: float = 0.0
    n_same_top: int = 0
    count: int = 0
    kld_values: list[np.ndarray] = field(default_factory=list, repr=False)
    p_diff_values: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(self, logits: np.ndarray, base_rows: np.ndarray, targets: np.ndarray, n_vocab: int) -> None:
        """Score rows of logits against the base log-prob rows (perplexity.cpp's
        log_softmax(..., base_log_prob, tok, kld)), float32 arithmetic."""
        logits = np.asarray(logits, dtype=np.float32)
        for r0 in range(0, len(logits), ROWS_PER_PASS):
            x = logits[r0:r0 + ROWS_PER_PASS]
            n = len(x)
            ar = np.arange(n)
            tgt = targets[r0:r0 + n]
            mx, lse, imax = _log_softmax_parts(x)
            norm = (mx + lse.astype(np.float32)).astype(np.float32)       # max_logit + log_sum_exp
            nll = (norm - x[ar, tgt]).astype(np.float32)
            lp_base = decode_log_probs(base_rows[r0:r0 + n], n_vocab)
            nll_base = (-lp_base[ar, tgt]).astype(np.float32)
            imax_base = np.argmax(lp_base, axis=1)
            terms = np.exp(lp_base) * (lp_base - x + norm[:, None])
            kld = np.where(lp_base > np.float32(-16), terms, np.float32(0)).sum(axis=1, dtype=np.float64)
            p_diff = (np.exp(-nll) - np.exp(-nll_base)).astype(np.float32)
            nll64, nb64, pd64 = nll.astype(np.float64), nll_base.astype(np.float64), p_diff.astype(np.float64)
            self.sum_nll += float(nll64.sum())
            self.sum_nll2 += float((nll64 * nll64).sum())
            self.sum_nll_base += float(nb64.sum())
            self.sum_nll_base2 += float((nb64 * nb64).sum())
            self.sum_nll_nll_base += float((nll64 * nb64).sum())
            self.sum_kld += float(kld.sum())
            self.sum_kld2 += float((kld * kld).sum())
            self.sum_p_diff += float(pd64.sum())
            p2 = pd64 * pd64
            self.sum_p_diff2 += float(p2.sum())
            self.sum_p_diff4 += float((p2 * p2).sum())
            self.max_p_diff = max(self.max_p_diff, float(np.max(np.abs(p_diff))))
            self.n_same_top += int(np.count_nonzero(imax == imax_base))
            self.count += n
            self.kld_values.append(kld.astype(np.float32))
            self.p_diff_values.append(p_diff)

    # -- the numbers llama-perplexity prints ---------------------------------

    def ppl(self) -> tuple[float, float]:
        m, dm = mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
        return math.exp(m), math.exp(m) * dm

    def ppl_base(self) -> tuple[float, float]:
        m, dm = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
        return math.exp(m), math.exp(m) * dm

    def log_ppl_ratio(self) -> tuple[float, float]:
        m, dm = mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
        mb, dmb = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
        cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)
        return m - mb, math.sqrt(max(dm * dm + dmb * dmb - 2.0 * cov, 0.0))

    def kld(self) -> tuple[float, float]:
        return mean_and_uncertainty(self.sum_kld, self.sum_kld2, self.count)

    def p_diff_rms(self) -> tuple[float, float]:
        mse, dmse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, self.count)
        rms = math.sqrt(mse)
        return rms, (0.5 / rms * dmse if rms > 0 else 0.0)

    def same_top(self) -> tuple[float, float]:
        p = self.n_same_top / self.count if self.count else 0.0
        return p, (math.sqrt(p * (1 - p) / (self.count - 1)) if self.count > 1 else 0.0)

    def chunk_row(self, i: int) -> str:
        """The per-chunk line of llama-perplexity's KL table."""
        ppl, dppl = self.ppl()
        r, dr = self.log_ppl_ratio()
        k, dk = self.kld()
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        return (f"{i:4d}    {ppl:9.4f} ± {dppl:9.4f}    {r:10.5f} ± {dr:10.5f}    {k:10.5f} ± {dk:10.5f}"
                f"    {100 * rms:6.3f} ± {100 * drms:6.3f} %    {100 * top:6.3f} ± {100 * dtop:6.3f} %")

    def summary(self) -> dict[str, float]:
        ppl, dppl = self.ppl()
        pb, dpb = self.ppl_base()
        r, dr = self.log_ppl_ratio()
        k, dk = self.kld()
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        return {"ppl": ppl, "ppl_err": dppl, "ppl_base": pb, "ppl_base_err": dpb, "ln_ppl_ratio": r,
                "ln_ppl_ratio_err": dr, "ppl_ratio": math.exp(r), "ppl_ratio_err": math.exp(r) * dr,
                "kld": k, "kld_err": dk, "p_diff_rms": rms, "p_diff_rms_err": drms, "same_top": top,
                "same_top_err": dtop, "count": self.count}

    def report_lines(self) -> list[str]:
        """The three statistics blocks llama-perplexity prints at the end."""
        if self.count < 100:
            return [f"(only {self.count} tokens scored: llama-perplexity prints no statistics below 100)"]
        kld_v = np.sort(np.concatenate(self.kld_values))
        pd_v = np.sort(np.concatenate(self.p_diff_values))
        ppl, dppl = self.ppl()
        pb, dpb = self.ppl_base()
        m, dm = mean_and_uncertainty(self.sum_nll, self.sum_nll2, self.count)
        mb, dmb = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, self.count)
        cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, self.count)
        cor = cov / (dm * dmb) if dm * dmb > 0 else float("nan")
        r, dr = self.log_ppl_ratio()
        ratio = math.exp(r)
        diff_unc = math.sqrt(max(dppl * dppl + dpb * dpb - 2.0 * ppl * pb * cov, 0.0))
        k, dk = self.kld()
        pdm, dpdm = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, self.count)
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        lines = [
            "====== Perplexity statistics ======",
            f"Mean PPL(Q)                   : {ppl:10.6f} ± {dppl:10.6f}",
            f"Mean PPL(base)                : {pb:10.6f} ± {dpb:10.6f}",
            f"Cor(ln(PPL(Q)), ln(PPL(base))): {100.0 * cor:6.2f}%",
            f"Mean ln(PPL(Q)/PPL(base))     : {r:10.6f} ± {dr:10.6f}",
            f"Mean PPL(Q)/PPL(base)         : {ratio:10.6f} ± {ratio * dr:10.6f}",
            f"Mean PPL(Q)-PPL(base)         : {ppl - pb:10.6f} ± {diff_unc:10.6f}",
            "",
            "====== KL divergence statistics ======",
            f"Mean    KLD: {k:10.6f} ± {dk:10.6f}",
            f"Maximum KLD: {kld_v[-1]:10.6f}",
        ]
        for label, frac in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900)):
            lines.append(f"{label}   KLD: {percentile(kld_v, frac):10.6f}")
        lines.append(f"Median  KLD: {median(kld_v):10.6f}")
        for label, frac in (("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)):
            lines.append(f"{label}   KLD: {percentile(kld_v, frac):10.6f}")
        lines += [f"Minimum KLD: {kld_v[0]:10.6f}", "", "====== Token probability statistics ======",
                  f"Mean    Δp: {100 * pdm:6.3f} ± {100 * dpdm:5.3f} %",
                  f"Maximum Δp: {100 * pd_v[-1]:6.3f}%"]
        for label, frac in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900),
                            ("75.0%", 0.750)):
            lines.append(f"{label}   Δp: {100 * percentile(pd_v, frac):6.3f}%")
        lines.append(f"Median  Δp: {100 * median(pd_v):6.3f}%")
        for label, frac in (("25.0%", 0.250), ("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010),
                            (" 0.1%", 0.001)):
            lines.append(f"{label}   Δp: {100 * percentile(pd_v, frac):6.3f}%")
        lines += [f"Minimum Δp: {100 * pd_v[0]:6.3f}%",
                  f"RMS Δp    : {100 * rms:6.3f} ± {100 * drms:5.3f} %",
                  f"Same top p: {100 * top:6.3f} ± {100 * dtop:5.3f} %"]
        return lines


KLD_TABLE_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
                    "              Δp RMS            Same top p")


def mean_and_uncertainty(s: float, s2: float, count: int) -> tuple[float, float]:
    """perplexity.cpp: mean and its standard error (0 with 10 values or fewer)."""
    if count < 1:
        return 0.0, 0.0
    f = s / count
    df = s2 / count - f * f
    return f, (math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0)


def covariance(sa: float, sb: float, sab: float, count: int) -> float:
    """perplexity.cpp: covariance of the two means (0 below 10 values)."""
    if count < 10:
        return 0.0
    return (sab / count - (sa / count) * (sb / count)) / (count - 1)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """perplexity.cpp's linear-interpolated percentile of sorted values (float32 math)."""
    v = sorted_values
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = np.float32(fraction) * np.float32(len(v) - 1)
    ip = int(p)
    p = np.float32(p - ip)
    return float((np.float32(1) - p) * v[ip] + p * v[min(ip + 1, len(v) - 1)])


def median(sorted_values: np.ndarray) -> float:
    v = sorted_values
    n = len(v)
    return float(v[n // 2]) if n % 2 else float(np.float32(0.5) * (v[n // 2] + v[n // 2 - 1]))


@dataclass
class KLDResult:
    stats: KLDStats
    n_ctx: int
    n_chunks: int
    chunk_rows: list[str]


def compute_kl_divergence(provider: LogitsProvider, base: LogitsFile, bos_id: Optional[int] = None,
                          n_chunks: Optional[int] = None,
                          on_chunk: Optional[Callable[[int, int, KLDStats], None]] = None) -> KLDResult:
    """Evaluate the base file's tokens with `provider` and compare with its log-probs."""
    h = base.header
    if h.n_vocab != provider.n_vocab:
        raise PerplexityError(f"{base.path}: inconsistent vocabulary: the base file has {h.n_vocab} tokens, "
                              f"the model {provider.n_vocab}")
    n_chunk = h.n_chunk if n_chunks is None else min(n_chunks, h.n_chunk)
    bad = np.flatnonzero((h.tokens < 0) | (h.tokens >= provider.n_vocab))
    if bad.size:
        raise PerplexityError(f"{base.path}: token {int(h.tokens[bad[0]])} at index {int(bad[0])} is outside "
                              f"the vocabulary")
    first = h.n_ctx // 2
    n_sc = n_scored(h.n_ctx)
    stats = KLDStats()
    rows = []
    for i in range(n_chunk):
        toks = h.tokens
        logits = _provider_rows(provider, chunk_tokens(toks, i, h.n_ctx, bos_id), first)[:n_sc]
        targets = toks[i * h.n_ctx + first + 1:(i + 1) * h.n_ctx].astype(np.int64)
        stats.add(logits, base.chunk(i), targets, h.n_vocab)
        rows.append(stats.chunk_row(i + 1))
        if on_chunk is not None:
            on_chunk(i + 1, n_chunk, stats)
    return KLDResult(stats, h.n_ctx, n_chunk, rows)


# ----------------------------------------------------------------------------
# lamina's engine as a provider

class EngineLogits:
    """LogitsProvider over a lamina Context: each call clears the KV cache and
    evaluates the chunk in batches of n_batch (one native call each)."""

    def __init__(self, model, n_ctx: int, n_batch: int = 512, n_threads: Optional[int] = None,
                 kv_type: str = "f16") -> None:
        from runtime.engine import Context
        self.n_vocab = model.n_vocab
        self.ctx = Context(model, n_ctx=n_ctx, n_batch=n_batch, kv_type=kv_type, n_threads=n_threads)

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray:
        self.ctx.truncate(0)
        return self.ctx.eval(tokens, all_logits=True)[first:]


class LlamaCppLogits:
    """LogitsProvider over llama.cpp (llama-cpp-python) with all logits kept,
    plus llama.cpp's own tokenizer: the same computation over llama.cpp's
    numbers, for comparing with lamina."""

    def __init__(self, path: str | os.PathLike[str], n_ctx: int, n_batch: int = 512,
                 n_threads: Optional[int] = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise PerplexityError("--llama-cpp needs llama-cpp-python (pip install llama-cpp-python)") from None
        threads = n_threads or os.cpu_count() or 1
        self.llm = Llama(os.fspath(path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx), n_ubatch=min(n_batch, n_ctx),
                         n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, logits_all=True,
                         verbose=False)
        self.n_vocab = int(self.llm.n_vocab())
        bos = int(self.llm.token_bos())
        with_bos = self.llm.tokenize(b"a", add_bos=True, special=False)
        without = self.llm.tokenize(b"a", add_bos=False, special=False)
        # does the vocabulary add BOS (llama_vocab_get_add_bos)?
        self.bos_id: Optional[int] = bos if len(with_bos) == len(without) + 1 and with_bos[0] == bos else None

    def tokenize(self, text: bytes | str) -> list[int]:
        """common_tokenize(ctx, text, add_special=true, parse_special=false)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(self.llm.tokenize(data, add_bos=True, special=False))

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray:
        self.llm.reset()            # n_tokens = 0: eval() drops every cached position
        self.llm.eval([int(t) for t in tokens])
        return np.array(self.llm.scores[first:len(tokens)], dtype=np.float32)
