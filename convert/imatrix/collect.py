"""Computing an importance matrix the way llama-imatrix does
(tools/imatrix/imatrix.cpp, `compute_imatrix` and `collect_imatrix`):

- The text is tokenized once, with BOS when the vocabulary adds one
  (`common_tokenize(ctx, text, true)`); it needs at least 2 * n_ctx tokens and
  is cut into n_ctx-token chunks (the tail dropped), or the first --chunks.
- Each chunk runs from an empty KV cache, its first token replaced by BOS when
  the vocabulary adds one. Every token of the chunk is an output, so every
  token runs through every layer.
- Every matmul whose weight is `blk.*` adds the sum over its micro-batch's
  tokens of x*x of its input, and the tokens to its count; a dense matmul of
  a micro-batch of fewer than 16 tokens is skipped. So which tokens count
  depends on how llama_decode cuts the batches (`micro_batches`):
  llama-imatrix puts n_seq = 2048 // n_ctx chunks side by side in one batch
  (-b 2048), and llama.cpp cuts it into micro-batches of at most 512 tokens
  (-ub 512): one sequence in order (split_simple), or several side by side,
  512 // n_seqs tokens of each (split_equal), which can leave a last
  micro-batch under 16 tokens (3 chunks of 512: 2 tokens of each, 6 rows,
  skipped). lamina evaluates each chunk alone and leaves the dense matmuls
  out of the same tokens.
- The output head is collected only with process_output (--process-output),
  and only when the file has an `output.weight` (a model whose head is its
  token embedding has none, and llama-imatrix collects nothing for it
  either). q, k and v share one input, so their sums are the same numbers,
  as in llama-imatrix.
- Mixture-of-experts weights (`ffn_*_exps`) get one row of sums and one count
  per expert: each token adds to the experts the router picked for it (the
  router `ffn_gate_inp` itself is a dense matmul of the FFN input).
- chunk_count is the largest count over chunk_size; chunk_size is n_ctx;
  datasets is the text file's name as given.

The sums come from the native forward pass (lm_context_imatrix), which adds
them in float, token after token, as collect_imatrix does; only the
activations' own float rounding differs between the two engines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lamina.convert.errors import ConvertError
from lamina.convert.imatrix.format import Imatrix, ImatrixEntry
from lamina.engine.context import Context, Model
from lamina.eval import scoring

N_BATCH, N_UBATCH = 2048, 512  # llama-imatrix's defaults (-b, -ub)
MIN_ROWS = 16  # collect_imatrix: "why are small batches ignored (<16 tokens)?"

# the parts of lm_context_imatrix's per-layer sums (lamina.h) -> the weights reading them
_DENSE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("attn_q", "attn_k", "attn_v", "attn_qkv")),
    ("wo_in", ("attn_output",)),
    ("ffn_in", ("ffn_gate", "ffn_up", "ffn_gate_inp")),
    ("down_in", ("ffn_down",)),
)
_EXPERT_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("exp_in", ("ffn_gate_exps", "ffn_up_exps")),
    ("exp_down", ("ffn_down_exps",)),
)


class ImatrixInputError(ConvertError, ValueError):
    """The text or the options cannot give an importance matrix."""


def plan_chunks(n_tokens: int, n_ctx: int, n_chunks: int | None) -> int:
    """Chunks of n_ctx tokens to evaluate, cut as llama-perplexity cuts them."""
    if n_ctx < MIN_ROWS:
        raise ImatrixInputError(f"-c must be >= {MIN_ROWS} (llama-imatrix skips batches of fewer tokens), got {n_ctx}")
    return scoring.plan_chunks(n_tokens, n_ctx, n_chunks, "compute an importance matrix", ImatrixInputError)


def micro_batches(
    n_ctx: int, n_seqs: int, side_by_side: bool, n_batch: int = N_BATCH, n_ubatch: int = N_UBATCH
) -> list[tuple[int, int, bool]]:
    """How llama_decode cuts each of n_seqs chunks of n_ctx tokens evaluated
    in one batch: (start, length, dense) per piece of a chunk, dense when the
    piece's micro-batch has >= MIN_ROWS rows. side_by_side: the KV cache has
    one stream per sequence (llama-imatrix with n_seq > 1: split_equal), else
    split_simple. n_batch, n_ubatch: as llama-imatrix's context has them."""
    if not side_by_side:
        # batches of n_batch tokens of the one sequence, each cut into n_ubatch pieces
        starts = [(b, min(b + n_batch, n_ctx)) for b in range(0, n_ctx, n_batch)]
        pieces = [(a, min(n_ubatch, b1 - a)) for b0, b1 in starts for a in range(b0, b1, n_ubatch)]
        return [(a, n, n >= MIN_ROWS) for a, n in pieces]
    k = max(1, n_ubatch // n_seqs)
    return [(a, min(k, n_ctx - a), min(k, n_ctx - a) * n_seqs >= MIN_ROWS) for a in range(0, n_ctx, k)]


def compute_imatrix(
    model: Model,
    tokens: Sequence[int] | np.ndarray,
    n_ctx: int,
    n_chunks: int | None = None,
    bos_id: int | None = None,
    dataset: str = "",
    n_threads: int | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
    n_batch: int = N_BATCH,
    n_ubatch: int = N_UBATCH,
    process_output: bool = False,
) -> Imatrix:
    """The importance matrix of `model` over `tokens` (BOS included as the
    vocabulary adds it); bos_id replaces each chunk's first token when set.
    n_batch, n_ubatch: llama-imatrix's -b and -ub, which decide the tokens that count."""
    toks = np.asarray(tokens, dtype=np.int32)
    n_chunk = plan_chunks(len(toks), n_ctx, n_chunks)
    if n_batch < 1 or n_ubatch < 1:
        raise ImatrixInputError(f"-b {n_batch} -ub {n_ubatch}: expected both >= 1")
    n_seq = max(1, n_batch // n_ctx)  # chunks llama-imatrix evaluates side by side
    n_batch = min(n_batch, n_seq * n_ctx)  # llama-imatrix's, then its context's clamps
    n_ubatch = min(n_ubatch, n_batch)
    ctx = Context(model, n_ctx=n_ctx, n_batch=min(n_ctx, N_UBATCH), n_threads=n_threads)
    try:
        ctx.collect_imatrix(True, head=process_output)
        for i in range(n_chunk):
            group = i - i % n_seq
            pieces = _merged(micro_batches(n_ctx, min(n_seq, n_chunk - group), n_seq > 1, n_batch, n_ubatch))
            chunk = scoring.chunk_tokens(toks, i, n_ctx, bos_id)
            ctx.truncate(0)
            for a, n, dense in pieces:
                ctx.imatrix_dense(dense)
                ctx.eval(chunk[a : a + n], all_logits=process_output)
            if on_chunk is not None:
                on_chunk(i + 1, n_chunk)
        got = ctx.collect_imatrix(False)
    finally:
        ctx.close()
    assert got is not None
    sums, counts, *head = got
    entries = name_entries(model, sums, counts)
    if head and head[1][0] > 0 and any(t.name == "output.weight" for t in model.native.gguf.tensors):
        entries["output.weight"] = ImatrixEntry(head[0].reshape(1, -1).copy(), head[1].copy())
        entries = dict(sorted(entries.items()))
    most = max((int(e.counts.max()) for e in entries.values()), default=0)
    return Imatrix(entries, [dataset] if dataset else [], most // n_ctx, n_ctx)


def _merged(pieces: list[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """Neighbouring pieces with the same flag as one eval (the sums run token
    after token either way)."""
    out: list[tuple[int, int, bool]] = []
    for a, n, dense in pieces:
        if out and out[-1][2] == dense:
            out[-1] = (out[-1][0], out[-1][1] + n, dense)
        else:
            out.append((a, n, dense))
    return out


def name_entries(model: Model, sums: np.ndarray, counts: np.ndarray) -> dict[str, ImatrixEntry]:
    """lm_context_imatrix's buffers -> one entry per weight of the file that reads them."""
    hp = model.hparams
    names = {t.name for t in model.native.gguf.tensors}
    E, F, X, Fe = hp.n_embd, hp.n_ff, max(hp.n_expert, 0), hp.n_ff_exp
    widths = {"attn_in": E, "wo_in": hp.q_dim, "ffn_in": E, "down_in": F, "exp_in": X * E, "exp_down": X * Fe}
    starts, at = {}, 0
    for part, width in widths.items():
        starts[part] = at
        at += width
    if at != sums.shape[1]:
        raise AssertionError(f"imatrix layout: {at} floats per layer here, the native core has {sums.shape[1]}")
    out: dict[str, ImatrixEntry] = {}
    for il in range(hp.n_layer):
        row, dense = sums[il], counts[il, :1]
        if dense[0] > 0:  # llama-imatrix has no entry for a matmul it never counted
            for part, kinds in _DENSE_PARTS:
                s = row[starts[part] : starts[part] + widths[part]].reshape(1, -1)
                for kind in kinds:
                    name = f"blk.{il}.{kind}.weight"
                    if name in names:
                        out[name] = ImatrixEntry(s.copy(), dense.copy())
        if X and counts[il, 1:].any():
            for part, kinds in _EXPERT_PARTS:
                s = row[starts[part] : starts[part] + widths[part]].reshape(X, -1)
                for kind in kinds:
                    name = f"blk.{il}.{kind}.weight"
                    if name in names:
                        out[name] = ImatrixEntry(s.copy(), counts[il, 1:].copy())
    return out
