"""KL-divergence of a model against a base run saved in a `_logits_` file, as
llama-perplexity --kl-divergence computes it (lamina.eval.logits_file has the
format)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lamina.eval.logits_file import LogitsFile, decode_log_probs
from lamina.eval.scoring import (
    ROWS_PER_PASS,
    LogitsProvider,
    PerplexityError,
    _log_softmax_parts,
    _provider_rows,
    chunk_tokens,
    n_scored,
)

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
            x = logits[r0 : r0 + ROWS_PER_PASS]
            n = len(x)
            ar = np.arange(n)
            tgt = targets[r0 : r0 + n]
            mx, lse, imax = _log_softmax_parts(x)
            norm = (mx + lse.astype(np.float32)).astype(np.float32)  # max_logit + log_sum_exp
            nll = (norm - x[ar, tgt]).astype(np.float32)
            lp_base = decode_log_probs(base_rows[r0 : r0 + n], n_vocab)
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
        return (
            f"{i:4d}    {ppl:9.4f} ± {dppl:9.4f}    {r:10.5f} ± {dr:10.5f}    {k:10.5f} ± {dk:10.5f}"
            f"    {100 * rms:6.3f} ± {100 * drms:6.3f} %    {100 * top:6.3f} ± {100 * dtop:6.3f} %"
        )

    def summary(self) -> dict[str, float]:
        ppl, dppl = self.ppl()
        pb, dpb = self.ppl_base()
        r, dr = self.log_ppl_ratio()
        k, dk = self.kld()
        rms, drms = self.p_diff_rms()
        top, dtop = self.same_top()
        return {
            "ppl": ppl,
            "ppl_err": dppl,
            "ppl_base": pb,
            "ppl_base_err": dpb,
            "ln_ppl_ratio": r,
            "ln_ppl_ratio_err": dr,
            "ppl_ratio": math.exp(r),
            "ppl_ratio_err": math.exp(r) * dr,
            "kld": k,
            "kld_err": dk,
            "p_diff_rms": rms,
            "p_diff_rms_err": drms,
            "same_top": top,
            "same_top_err": dtop,
            "count": self.count,
        }

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
        lines += [
            f"Minimum KLD: {kld_v[0]:10.6f}",
            "",
            "====== Token probability statistics ======",
            f"Mean    Δp: {100 * pdm:6.3f} ± {100 * dpdm:5.3f} %",
            f"Maximum Δp: {100 * pd_v[-1]:6.3f}%",
        ]
        for label, frac in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900), ("75.0%", 0.750)):
            lines.append(f"{label}   Δp: {100 * percentile(pd_v, frac):6.3f}%")
        lines.append(f"Median  Δp: {100 * median(pd_v):6.3f}%")
        for label, frac in (("25.0%", 0.250), ("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)):
            lines.append(f"{label}   Δp: {100 * percentile(pd_v, frac):6.3f}%")
        lines += [
            f"Minimum Δp: {100 * pd_v[0]:6.3f}%",
            f"RMS Δp    : {100 * rms:6.3f} ± {100 * drms:5.3f} %",
            f"Same top p: {100 * top:6.3f} ± {100 * dtop:5.3f} %",
        ]
        return lines


KLD_TABLE_HEADER = (
    "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
    "              Δp RMS            Same top p"
)


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


def compute_kl_divergence(
    provider: LogitsProvider,
    base: LogitsFile,
    bos_id: int | None = None,
    n_chunks: int | None = None,
    on_chunk: Callable[[int, int, KLDStats], None] | None = None,
) -> KLDResult:
    """Evaluate the base file's tokens with `provider` and compare with its log-probs."""
    h = base.header
    if h.n_vocab != provider.n_vocab:
        raise PerplexityError(
            f"{base.path}: inconsistent vocabulary: the base file has {h.n_vocab} tokens, the model {provider.n_vocab}"
        )
    n_chunk = h.n_chunk if n_chunks is None else min(n_chunks, h.n_chunk)
    bad = np.flatnonzero((h.tokens < 0) | (h.tokens >= provider.n_vocab))
    if bad.size:
        raise PerplexityError(
            f"{base.path}: token {int(h.tokens[bad[0]])} at index {int(bad[0])} is outside the vocabulary"
        )
    first = h.n_ctx // 2
    n_sc = n_scored(h.n_ctx)
    stats = KLDStats()
    rows = []
    for i in range(n_chunk):
        toks = h.tokens
        logits = _provider_rows(provider, chunk_tokens(toks, i, h.n_ctx, bos_id), first)[:n_sc]
        targets = toks[i * h.n_ctx + first + 1 : (i + 1) * h.n_ctx].astype(np.int64)
        stats.add(logits, base.chunk(i), targets, h.n_vocab)
        rows.append(stats.chunk_row(i + 1))
        if on_chunk is not None:
            on_chunk(i + 1, n_chunk, stats)
    return KLDResult(stats, h.n_ctx, n_chunk, rows)
