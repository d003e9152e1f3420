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

KL-divergence and its `_logits_` base files: lamina.eval.kld,
lamina.eval.logits_file; the logits sources: lamina.eval.providers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina.eval.logits_file import LogitsFileWriter
from lamina.eval.scoring import LogitsProvider, _provider_rows, chunk_tokens, n_scored, plan_chunks, token_nll

# ----------------------------------------------------------------------------
# perplexity


@dataclass
class PerplexityResult:
    ppl: float
    ppl_err: float  # ± of the final estimate (0 when undefined)
    n_ctx: int
    n_chunks: int
    count: int  # tokens scored
    running_ppl: list[float]  # exp(mean NLL so far) after each chunk, as printed `[i]x,`
    chunk_ppl: list[float]  # each chunk's own perplexity
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


ChunkCallback = Callable[[int, int, float], None]  # (chunks done, n_chunk, running ppl)


def compute_perplexity(
    provider: LogitsProvider,
    tokens: Sequence[int] | np.ndarray,
    n_ctx: int,
    n_chunks: int | None = None,
    bos_id: int | None = None,
    kl_base_path: str | os.PathLike[str] | None = None,
    on_chunk: ChunkCallback | None = None,
) -> PerplexityResult:
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
            targets = toks[i * n_ctx + first + 1 : (i + 1) * n_ctx]
            v = token_nll(logits, targets)
            if writer is not None:
                writer.write_chunk(logits)
            nll_all[i * n_sc : (i + 1) * n_sc] = v
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
