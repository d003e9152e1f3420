"""Many sequences in one forward pass (Context.decode, lamina.h lm_context_decode):
mixed batches of prefill chunks and single decode tokens of several sequences
at different positions against each sequence run alone, on every
architecture shape, KV cache type and offload split.

Bit-identical, asserted with array_equal: every step but attention treats each
token alone, the matmul kernels give a column the same bits whatever columns
share its call (the four-column dots are bit-identical to the one-column ones,
tests/native/test_dot_x4.py), and attention reads a sequence run by run with a
mix kernel that adds each run into the output in row order, the bits of one
pass over contiguous rows: where a sequence's blocks lie in the pool changes
nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lamina.engine.context import Context, ContextError, Model
from support.tiny_models import CONFIGS, LLAMA, SPLIT_CASES, for_block

# gemma3: windows of 5 positions on two of its three layers, shorter than every sequence below
ARCHS = {
    name: CONFIGS[name]
    for name in ("llama", "qwen2", "qwen3", "granite", "smollm3", "gemma2", "gemma3", "olmo2", "qwen3moe", "phi3")
}
# prompt lengths, long enough for several 16-position blocks each
LENGTHS = (37, 12, 29, 44)
# tokens a sequence gets per batch, cycled: prefill chunks and single decode steps mixed
CHUNKS = (7, 1, 1, 5, 1, 3, 1)


def for_kv(cfg, kv_type):
    """q8_0 caches need head_dim to be whole 32-value blocks"""
    if kv_type == "q8_0" and cfg.hd % 32:
        return replace(cfg, n_embd=cfg.n_head * 32)
    return cfg


def sequences(cfg, lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.n_vocab, n) for n in lengths]


def schedule(lengths, chunks=CHUNKS, seed=0, start=None):
    """batches [(seq, first, count), ...] in a random interleaving that keeps
    each sequence's tokens in order; sequence i joins at step i (staggered),
    so the pool's blocks of the sequences interleave"""
    rng = np.random.default_rng(seed)
    done = list(start or [0] * len(lengths))
    batches, step = [], 0
    while any(d < n for d, n in zip(done, lengths)):
        parts = []
        for i, n in enumerate(lengths):
            if step >= i and done[i] < n:
                k = min(chunks[(step + i) % len(chunks)], n - done[i])
                parts.append((i, done[i], k))
                done[i] += k
        # interleave the tokens of the parts, each part's in order
        order = rng.permutation(np.repeat(np.arange(len(parts)), [k for _, _, k in parts]))
        taken = [0] * len(parts)
        batch = []
        for j in order:
            s, first, _ = parts[j]
            batch.append((s, first + taken[j]))
            taken[j] += 1
        if batch:
            batches.append(batch)
        step += 1
    return batches


def run_mixed(ctx, seqs, batches, offset=None):
    """each sequence's logits rows, in position order, from decode calls over
    `batches` of (seq, pos) pairs; token seqs[s][pos - offset[s]]"""
    offset = offset or [0] * len(seqs)
    got = [dict() for _ in seqs]
    for batch in batches:
        ids = np.array([s for s, _ in batch])
        pos = np.array([p for _, p in batch])
        toks = np.array([seqs[s][p - offset[s]] for s, p in batch])
        out = ctx.decode(toks, pos, ids, np.ones(len(batch), dtype=bool))
        assert out.shape == (len(batch), ctx.model.n_vocab)
        for row, (s, p) in zip(out, batch):
            got[s][p] = row
    return [np.array([g[p] for p in sorted(g)]) for g in got]


def mixed_context(model, kv_type, **kw):
    # 4 sequences of at most 48 positions: blocks of 16 (lm_kv_usage.block_size)
    return Context(model, n_ctx=192, n_batch=64, kv_type=kv_type, n_seq_max=4, **kw)


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batches_equal_each_sequence_alone(tiny, arch, kv_type):
    cfg = for_kv(ARCHS[arch], kv_type)
    model = Model.load(tiny(cfg), n_threads=2)
    seqs = sequences(cfg)
    ctx = mixed_context(model, kv_type)
    assert ctx.kv_usage()["block_size"] == 16
    got = run_mixed(ctx, seqs, schedule(LENGTHS))
    for s, toks in enumerate(seqs):
        alone = Context(model, n_ctx=64, kv_type=kv_type).eval(toks, all_logits=True)
        assert np.array_equal(got[s], alone), f"sequence {s}"
        assert ctx.seq_len(s) == len(toks)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "F16", "BF16"])
def test_mixed_batches_of_quantized_weights_equal_each_sequence_alone(tiny, qtype):
    """1..n columns per matmul, so the one- and four-column dots both run (the
    float types: the one-column dot and the many-column one, from 2 columns;
    F32 is the tiny models' default, above)"""
    cfg = replace(for_block(LLAMA, 256 if qtype.endswith("_K") else 32), qtype=qtype)
    model = Model.load(tiny(cfg), n_threads=2)
    seqs = sequences(cfg, seed=1)
    got = run_mixed(mixed_context(model, "f16"), seqs, schedule(LENGTHS, seed=1))
    for s, toks in enumerate(seqs):
        assert np.array_equal(got[s], Context(model, n_ctx=64).eval(toks, all_logits=True)), f"sequence {s}"


@pytest.mark.parametrize("qtype", ["F16", "BF16", "F32"])
def test_float_weights_verify_a_draft_with_plain_decodings_bits(tiny, qtype):
    """Speculative verification's shape: a prompt, then the next k tokens in
    one call, equal bit for bit the same tokens decoded one at a time (one
    column per matmul: the one-column dot; k columns: the many-column one)"""
    cfg = replace(LLAMA, qtype=qtype, n_embd=72)  # 72: 32-value steps and a tail of 8
    model = Model.load(tiny(cfg), n_threads=2)
    (toks,) = sequences(cfg, (21,), seed=4)
    one_by_one = Context(model, n_ctx=32)
    one_by_one.eval(toks[:9])
    plain = np.stack([one_by_one.eval(toks[i : i + 1]) for i in range(9, 21)])
    for k in (2, 5, 12):
        ctx = Context(model, n_ctx=32)
        ctx.eval(toks[:9])
        verified = np.concatenate([ctx.eval(toks[i : i + k], all_logits=True) for i in range(9, 21, k)])
        assert np.array_equal(verified, plain[: len(verified)]), f"{k} at a time"


def test_only_the_logits_asked_for_come_back_in_batch_order(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    a, b = sequences(LLAMA, (6, 4), seed=2)
    full = [Context(model, n_ctx=32).eval(t, all_logits=True) for t in (a, b)]
    ctx = Context(model, n_ctx=64, n_seq_max=2)
    toks = np.array([a[0], b[0], a[1], b[1], a[2], a[3], b[2], b[3], a[4], a[5]])
    ids = np.array([0, 1, 0, 1, 0, 0, 1, 1, 0, 0])
    pos = np.array([0, 0, 1, 1, 2, 3, 2, 3, 4, 5])
    mask = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 1], dtype=bool)
    out = ctx.decode(toks, pos, ids, mask)
    assert np.array_equal(out, np.stack([full[1][0], full[0][2], full[1][3], full[0][5]]))
    # no mask: the last token of each sequence; a batch asking for none returns none
    ctx2 = Context(model, n_ctx=64, n_seq_max=2)
    assert np.array_equal(ctx2.decode(toks, pos, ids), np.stack([full[1][3], full[0][5]]))
    assert ctx2.decode([b[0]], [4], [1], [False]).shape == (0, LLAMA.n_vocab)
    assert ctx2.seq_len(1) == 5


def test_sequence_zero_of_a_shared_context_is_eval(tiny):
    """eval / n_past / truncate work on sequence 0 while others share the pool"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    a, b = sequences(LLAMA, (20, 9), seed=3)
    ctx = Context(model, n_ctx=64, n_seq_max=2)
    ctx.decode(b[:5], np.arange(5), np.ones(5, dtype=int))
    first = ctx.eval(a[:12], all_logits=True)
    ctx.decode(b[5:], np.arange(5, 9), np.ones(4, dtype=int))
    assert ctx.n_past == 12 and ctx.seq_len(1) == 9
    rest = ctx.eval(a[12:], all_logits=True)
    alone = Context(model, n_ctx=32).eval(a, all_logits=True)
    assert np.array_equal(np.concatenate([first, rest]), alone)
    ctx.truncate(7)
    assert ctx.n_past == 7 and ctx.seq_len(1) == 9
    assert np.array_equal(ctx.eval(a[7:], all_logits=True), alone[7:])


# -- offload: the CPU stand-in repeats every sequence operation ------------------


def script(ctx, seqs):
    """a mixed run, then a prefix copy, a shift, a suffix removal, and a second
    mixed run continuing every sequence: every output, in order"""
    outs = run_mixed(ctx, seqs, schedule(LENGTHS))
    ctx.seq_cp(0, 3, 20)  # sequence 3 (44 positions) becomes sequence 0's first 20
    ctx.seq_rm(1, 3, 7)  # 12 -> 8 positions, the last 5 moved down by 4
    ctx.seq_rm(2, 21)  # 29 -> 21
    rng = np.random.default_rng(9)
    tails = [rng.integers(0, ctx.model.n_vocab, 10) for _ in seqs]
    start = [ctx.seq_len(s) for s in range(len(seqs))]
    lengths = [s + 10 for s in start]
    outs += run_mixed(ctx, tails, schedule(lengths, start=start), offset=start)
    return outs


@pytest.mark.parametrize("cfg", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_every_split_equals_the_cpu_alone_for_mixed_batches(tiny, cfg):
    model = Model.load(tiny(cfg), n_threads=2)
    seqs = sequences(cfg, seed=4)
    cpu = mixed_context(model, "f16")
    alone = script(cpu, seqs)
    L = cfg.n_layer
    for n in range(1, L + 3):  # the head; blocks with it; everything; more than there is
        ctx = mixed_context(model, "f16", gpu_layers=n, device="cpu-standin")
        got = script(ctx, seqs)
        assert all(np.array_equal(g, a) for g, a in zip(got, alone)), f"gpu_layers={n}"
        assert ctx.kv_usage() == cpu.kv_usage()
        assert [ctx.seq_len(s) for s in range(4)] == [cpu.seq_len(s) for s in range(4)]


@pytest.mark.gpu
def test_cuda_runs_batches_of_one_sequence_and_refuses_the_rest(tiny):
    """CUDA keeps its one-sequence path: a batch of sequence 0 at contiguous
    positions (any rows of logits), suffix removal; several sequences, a shift
    and a copy are refused before anything changes"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    t = sequences(LLAMA, (14,), seed=7)[0]
    cpu = Context(model, n_ctx=64).eval(t, all_logits=True)
    ctx = Context(model, n_ctx=64, gpu_layers=LLAMA.n_layer + 1, device="cuda", require_gpu=True)
    mask = np.zeros(10, dtype=bool)
    mask[[2, 5, 9]] = True  # not a suffix: rows picked after the head
    rows = [ctx.decode(t[:10], np.arange(10), np.zeros(10, dtype=int), mask)]
    rows += [ctx.decode([t[p]], [p], [0]) for p in range(10, 14)]  # one token: the decode graph
    got = np.concatenate(rows)
    want = cpu[[2, 5, 9, 10, 11, 12, 13]]
    assert float(((got - want) ** 2).mean() / (want**2).mean()) < 1e-3
    ctx.seq_rm(0, 12)
    assert ctx.n_past == 12
    with pytest.raises(ContextError, match="not implemented yet"):
        ctx.seq_rm(0, 2, 4)
    assert ctx.n_past == 12
    with pytest.raises(ContextError, match="multi-sequence decode on CUDA is not implemented yet"):
        Context(model, n_ctx=64, gpu_layers=1, device="cuda", require_gpu=True, n_seq_max=2)
