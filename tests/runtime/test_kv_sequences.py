"""Sequence operations on a shared KV cache (lamina.h lm_context_seq_rm /
seq_cp / seq_len / kv_usage; native/model/kv_seq.c, kv_pool.c): removing a
suffix, removing a middle range with the context shift, sharing a prefix
with copy-on-write, cells going back to the pool, and bad input.

Exact, asserted with array_equal: a suffix removed then regrown, and a
copied prefix then diverged, equal a recompute from scratch (the cached rows
kept are the rows a recompute writes, the new ones the same arithmetic).

Bounded: the shift rotates each moved key by -d (rope of its old position,
then of -d, instead of rope of its new one) and, in f16 / q8_0 caches,
rounds it again. Bounds, per moved key k against the key a recompute of the
shortened token list caches at that position (layer 0, where keys depend on
the token and position only), m = max |k|:
    f32 : |diff| <= 1e-6 m         (measured 1.7e-7 m)
    f16 : |diff| <= 2e-3 m         (measured 9.3e-4 m: three f16 roundings of 2^-11)
    q8_0: |diff| <= 2 steps of the recomputed key's 32-value block (amax / 127;
          measured 1.26)
and the logits of a one-layer model continued after the shift against the
shortened list from scratch: max |diff| / max |logit| <= 1e-5 (f32), 2e-3
(f16), 2e-2 (q8_0) (measured 2e-7, 2.7e-4, 3.7e-3). Values move exactly."""

from __future__ import annotations

import gc
from dataclasses import replace

import numpy as np
import pytest

from lamina.engine.context import Context, ContextError, ContextFullError, InvalidTokenError, Model
from lamina.engine.reference import apply_rope, rope_angles
from lamina.native import ffi, last_error, lib
from support.tiny_models import CONFIGS, GEMMA3, LLAMA

ARCHS = {"llama": LLAMA, "qwen2": CONFIGS["qwen2"], "gemma3": GEMMA3, "llama_rope_scaled": CONFIGS["llama_rope_scaled"]}
KEY_BOUND = {"f32": 1e-6, "f16": 2e-3}
LOGIT_BOUND = {"f32": 1e-5, "f16": 2e-3, "q8_0": 2e-2}


def toks_for(cfg, n, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.n_vocab, n)


def for_kv(cfg, kv_type):
    return replace(cfg, n_embd=cfg.n_head * 32) if kv_type == "q8_0" and cfg.hd % 32 else cfg


def rel_err(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def extend(ctx, seq, toks):
    """toks appended to sequence seq in one decode call; all their logits"""
    n = ctx.seq_len(seq)
    return ctx.decode(toks, np.arange(n, n + len(toks)), np.full(len(toks), seq), np.ones(len(toks), dtype=bool))


def scratch(model, toks, kv_type="f16"):
    return Context(model, n_ctx=128, kv_type=kv_type).eval(toks, all_logits=True)


# -- seq_rm: a suffix ----------------------------------------------------------


def test_removing_a_suffix_then_regrowing_equals_a_recompute(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    a, b = toks_for(LLAMA, 45), toks_for(LLAMA, 30, seed=1)
    ctx = Context(model, n_ctx=128, n_seq_max=2, n_ctx_seq=64)
    extend(ctx, 0, a)
    extend(ctx, 1, b)
    used = ctx.kv_usage()["cells_used"]
    ctx.seq_rm(0, 20)  # 45 -> 20 positions: one of its two 32-position blocks goes back
    assert ctx.seq_len(0) == 20 and ctx.seq_len(1) == 30
    assert ctx.kv_usage()["cells_used"] == used - 32
    new = toks_for(LLAMA, 25, seed=2)
    assert np.array_equal(extend(ctx, 0, new), scratch(model, np.concatenate([a[:20], new]))[20:])
    ctx.seq_rm(1, 0, -1)  # all of it
    assert ctx.seq_len(1) == 0
    ctx.seq_rm(1, 5)  # past the end: nothing to remove
    ctx.seq_rm(0, 45, 100)  # p1 past the end is the end
    assert ctx.seq_len(0) == 45
    assert np.array_equal(extend(ctx, 1, b), scratch(model, b))


# -- seq_rm: a middle range, the context shift -------------------------------------


def _key_diff_ok(kv_type, moved, direct):
    if kv_type == "q8_0":
        step = np.abs(direct).reshape(-1, 32).max(axis=1) / 127
        return bool(np.all(np.abs(moved - direct).reshape(-1, 32).max(axis=1) <= 2 * step + 1e-30))
    return float(np.abs(moved - direct).max()) <= KEY_BOUND[kv_type] * float(np.abs(direct).max())


@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("arch", ARCHS)
def test_shifted_keys_equal_the_keys_at_their_new_positions(tiny, arch, kv_type):
    cfg = for_kv(ARCHS[arch], kv_type)
    model = Model.load(tiny(cfg), n_threads=2)
    t = toks_for(cfg, 50)
    ctx = Context(model, n_ctx=128, kv_type=kv_type, n_seq_max=2, n_ctx_seq=64)
    extend(ctx, 1, t)
    values = {(il, p): ctx.kv_read(1, il, p)[1] for il in range(cfg.n_layer) for p in range(50)}
    ctx.seq_rm(1, 10, 23)  # positions 23.. move down by 13
    assert ctx.seq_len(1) == 37
    ref = Context(model, n_ctx=128, kv_type=kv_type)
    ref.eval(np.concatenate([t[:10], t[23:]]))
    for p in range(37):
        moved, direct = ctx.kv_read(1, 0, p)[0], ref.kv_read(0, 0, p)[0]
        assert _key_diff_ok(kv_type, moved, direct), f"position {p}"
    for il in range(cfg.n_layer):  # values move as they are, in every layer
        for p in range(37):
            assert np.array_equal(ctx.kv_read(1, il, p)[1], values[il, p if p < 10 else p + 13])


def test_shifted_keys_of_every_layer_are_the_old_keys_rotated(tiny):
    """Beyond layer 0 a key depends on the positions removed, so the shift's
    target is its old key rotated by -d: against numpy's rotation, f32 cache"""
    cfg = GEMMA3  # two rope bases (sliding and global layers), NeoX pairs
    model = Model.load(tiny(cfg), n_threads=2)
    hp = model.hparams
    t = toks_for(cfg, 40, seed=3)
    ctx = Context(model, n_ctx=64, kv_type="f32")
    ctx.eval(t)
    old = {(il, p): ctx.kv_read(0, il, p)[0] for il in range(cfg.n_layer) for p in range(40)}
    ctx.seq_rm(0, 4, 11)
    assert not hp.rope_freqs  # no rope_freqs.weight to divide the angles by
    for il, layer in enumerate(hp.layers):
        cos, sin = rope_angles(hp, layer, np.array([-7]), None)
        for p in range(4, 33):
            k = old[il, p + 7].astype(np.float64).reshape(1, hp.n_head_kv, hp.head_dim)
            want = apply_rope(k, cos, sin, hp.n_rot, hp.rope_neox).reshape(-1)
            got = ctx.kv_read(0, il, p)[0]
            assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max(), (il, p)


@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_one_layer_model_after_a_shift_equals_the_shortened_list(tiny, arch, kv_type):
    cfg = for_kv(replace(ARCHS[arch], n_layer=1), kv_type)
    model = Model.load(tiny(cfg), n_threads=2)
    t = toks_for(cfg, 60, seed=4)
    ctx = Context(model, n_ctx=64, kv_type=kv_type)
    ctx.eval(t[:40])
    ctx.seq_rm(0, 5, 17)
    got = ctx.eval(t[40:], all_logits=True)
    want = scratch(model, np.concatenate([t[:5], t[17:]]), kv_type)[28:]
    assert rel_err(got, want) <= LOGIT_BOUND[kv_type]


# -- seq_cp: a shared prefix, copy-on-write ----------------------------------------


def test_a_copied_prefix_costs_no_cells_and_both_sequences_diverge(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    system, x, y = toks_for(LLAMA, 37), toks_for(LLAMA, 9, seed=1), toks_for(LLAMA, 14, seed=2)
    ctx = Context(model, n_ctx=256, n_seq_max=4)
    extend(ctx, 0, system)
    before = ctx.kv_usage()["cells_used"]
    keys = [ctx.kv_read(0, 1, p) for p in range(37)]
    ctx.seq_cp(0, 1, 37)
    ctx.seq_cp(0, 2, 37)
    assert ctx.kv_usage()["cells_used"] == before  # shared, not copied
    assert [ctx.seq_len(s) for s in range(3)] == [37, 37, 37]
    # sequence 1 writes into the shared, partly filled second block: it copies it first
    assert np.array_equal(extend(ctx, 1, y), scratch(model, np.concatenate([system, y]))[37:])
    assert ctx.kv_usage()["cells_used"] == before + 32
    for p in range(37):  # the source is intact
        assert all(np.array_equal(a, b) for a, b in zip(ctx.kv_read(0, 1, p), keys[p]))
    assert np.array_equal(extend(ctx, 0, x), scratch(model, np.concatenate([system, x]))[37:])
    # the last holder of the block writes into it where it is
    assert np.array_equal(extend(ctx, 2, x[:3]), scratch(model, np.concatenate([system, x[:3]]))[37:])
    assert ctx.kv_usage()["cells_used"] == before + 2 * 32


def test_a_copy_of_part_of_a_sequence_replaces_the_destination(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    a, b, y = toks_for(LLAMA, 50), toks_for(LLAMA, 70, seed=1), toks_for(LLAMA, 8, seed=2)
    ctx = Context(model, n_ctx=256, n_seq_max=2, n_ctx_seq=128)
    extend(ctx, 0, a)
    extend(ctx, 1, b)
    assert ctx.kv_usage()["cells_used"] == 64 + 96
    ctx.seq_cp(0, 1, 20)  # sequence 1's 70 positions go back; it shares sequence 0's first block
    assert ctx.seq_len(1) == 20 and ctx.kv_usage()["cells_used"] == 64
    assert np.array_equal(extend(ctx, 1, y), scratch(model, np.concatenate([a[:20], y]))[20:])
    assert np.array_equal(extend(ctx, 0, y), scratch(model, np.concatenate([a, y]))[50:])
    ctx.seq_cp(0, 1, 0)  # an empty copy empties the destination
    assert ctx.seq_len(1) == 0


def test_holders_of_a_shared_block_appending_together_copy_all_but_the_last(tiny):
    """three sequences share one partly filled block and all append in one
    batch: two copies, the third writes in place, so 3 blocks are enough"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    p, tails = toks_for(LLAMA, 20), [toks_for(LLAMA, 2, seed=s) for s in (1, 2, 3)]
    ctx = Context(model, n_ctx=96, n_seq_max=3, n_ctx_seq=32)
    extend(ctx, 0, p)
    ctx.seq_cp(0, 1, 20)
    ctx.seq_cp(0, 2, 20)
    assert ctx.kv_usage()["cells_free"] == 64
    toks = np.concatenate(tails)
    out = ctx.decode(toks, np.tile([20, 21], 3), np.repeat([0, 1, 2], 2), np.ones(6, dtype=bool))
    assert ctx.kv_usage()["cells_free"] == 0
    for s in range(3):
        assert np.array_equal(out[2 * s : 2 * s + 2], scratch(model, np.concatenate([p, tails[s]]))[20:])


# -- the pool: cells come back --------------------------------------------------


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_thousand_short_sequences_leave_the_pool_as_it_was(tiny):
    model = Model.load(tiny(LLAMA), n_threads=1)
    ctx = Context(model, n_ctx=256, n_batch=64, n_seq_max=4)
    start = ctx.kv_usage()
    rng = np.random.default_rng(5)
    prompts = rng.integers(0, LLAMA.n_vocab, (1000, 6))
    ids = np.arange(4)
    rss = None
    for group in range(250):  # 4 sequences at a time: a prompt each, two decode steps, removed
        ctx.decode(prompts[4 * group : 4 * group + 4].reshape(-1), np.tile(np.arange(6), 4), np.repeat(ids, 6))
        for step in range(2):
            ctx.decode(prompts[4 * group : 4 * group + 4, step], np.full(4, 6 + step), ids)
        assert ctx.kv_usage()["cells_used"] == 4 * 32
        for s in ids:
            ctx.seq_rm(int(s), 0)
        if group == 25:
            gc.collect()
            rss = _rss_bytes()
    gc.collect()
    assert ctx.kv_usage() == start and all(ctx.seq_len(int(s)) == 0 for s in ids)
    assert rss is not None and _rss_bytes() - rss < 4 << 20  # no growth beyond noise


def test_the_pool_is_exactly_n_ctx_cells_in_blocks_that_fit_the_sequences(tiny):
    model = Model.load(tiny(LLAMA), n_threads=1)
    for n_ctx, n_seq, per_seq, block in ((256, 4, None, 32), (48, 1, None, 16), (100, 3, None, 1), (96, 2, 40, 8)):
        ctx = Context(model, n_ctx=n_ctx, n_seq_max=n_seq, n_ctx_seq=per_seq)
        u = ctx.kv_usage()
        assert (u["cells_total"], u["cells_used"], u["block_size"]) == (n_ctx, 0, block)
        assert u["n_ctx_seq"] == (per_seq or n_ctx // n_seq) == ctx.n_ctx_seq
        assert ctx.kv_bytes == model.kv_bytes(n_ctx, "f16")
    # n_seq_max sequences of n_ctx_seq positions each always fit: 3 x 33 in 100 cells
    ctx = Context(model, n_ctx=100, n_seq_max=3, n_batch=100)
    for s in range(3):
        extend(ctx, s, toks_for(LLAMA, 33, seed=s))
    assert ctx.kv_usage()["cells_free"] == 1


# -- bad input: typed errors, nothing changes, the context still works -------------


def _state(ctx):
    return ctx.kv_usage(), [ctx.seq_len(s) for s in range(ctx.n_seq_max)]


@pytest.fixture
def busy(tiny):
    """a context of 3 sequences with some positions each, and the check that it still works"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=96, n_batch=16, n_seq_max=3)  # 32 positions per sequence
    seqs = [toks_for(LLAMA, n, seed=n) for n in (10, 5, 12)]
    for s, t in enumerate(seqs):
        extend(ctx, s, t)

    def still_works():
        more = toks_for(LLAMA, 3, seed=99)
        got = extend(ctx, 1, more)
        assert np.array_equal(got, scratch(model, np.concatenate([seqs[1], more]))[5:])

    return ctx, still_works


@pytest.mark.parametrize(
    "pos, seq, match",
    [
        ([10, 12], [0, 0], "token 1: sequence 0 continues at position 11, got position 12"),
        ([9], [0], "token 0: sequence 0 continues at position 10, got position 9"),
        ([5, 5], [1, 1], "token 1: sequence 1 continues at position 6, got position 5"),
        ([0], [1], "token 0: sequence 1 continues at position 5, got position 0"),
        ([10, 13], [0, 2], "token 1: sequence 2 continues at position 12, got position 13"),
    ],
)
def test_positions_must_continue_each_sequence(busy, pos, seq, match):
    ctx, still_works = busy
    before = _state(ctx)
    with pytest.raises(ContextError, match=match):
        ctx.decode([1] * len(pos), pos, seq)
    assert _state(ctx) == before
    still_works()


@pytest.mark.parametrize("seq", [-1, 3, 1000])
def test_unknown_sequences_are_refused(busy, seq):
    ctx, still_works = busy
    before = _state(ctx)
    with pytest.raises(ContextError, match=f"sequence {seq} is not an id in \\[0, n_seq_max=3\\)"):
        ctx.decode([1, 2], [10, 0], [0, seq])
    for call in (lambda: ctx.seq_len(seq), lambda: ctx.seq_rm(seq, 0), lambda: ctx.seq_cp(0, seq, 1)):
        with pytest.raises(ContextError, match="n_seq_max=3"):
            call()
    assert _state(ctx) == before
    still_works()


def test_malformed_batches_are_refused(busy):
    ctx, still_works = busy
    before = _state(ctx)
    cases = [
        (([1] * 17, list(range(10, 27)), [0] * 17), "17 tokens > n_batch=16"),
        (([1, 2], [10], [0, 0]), "pos must be 2 integers"),
        (([1, 2], [10, 11], [0]), "seq_ids must be 2 integers"),
        (([1], [10.0], [0]), "pos must be 1 integers"),
        (([1], [10], [0], [True, False]), "logits_mask must be 1 booleans"),
        (([], [], []), "non-empty"),
    ]
    for args, match in cases:
        with pytest.raises(ContextError, match=match):
            ctx.decode(*args)
    with pytest.raises(InvalidTokenError, match="outside the vocabulary"):
        ctx.decode([1, LLAMA.n_vocab], [10, 11], [0, 0])
    assert _state(ctx) == before
    still_works()


def test_a_sequence_past_n_ctx_seq_is_context_full(busy):
    ctx, still_works = busy
    before = _state(ctx)
    extend(ctx, 0, [1] * 16)  # 10 -> 26 of its 32
    with pytest.raises(ContextFullError, match=r"sequence 0 needs 33 positions \(26 cached \+ 7 new\) > n_ctx_seq=32"):
        extend(ctx, 0, [1] * 7)
    with pytest.raises(ContextFullError, match="sequence 0 needs 33 positions"):  # with a sequence that fits
        ctx.decode([1] * 9, [5, 26, 6, 27, 28, 29, 30, 31, 32], [1, 0, 1, 0, 0, 0, 0, 0, 0])
    assert ctx.seq_len(0) == 26 and ctx.seq_len(1) == 5
    ctx.seq_rm(0, 10)
    assert _state(ctx) == before
    still_works()


def test_a_full_pool_is_context_full_naming_the_sequence_and_the_free_cells(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=128, n_seq_max=2, n_ctx_seq=128)  # one pool, either sequence may take it all
    extend(ctx, 0, toks_for(LLAMA, 70))  # three blocks of 32
    extend(ctx, 1, toks_for(LLAMA, 3))  # the fourth
    before = _state(ctx)
    with pytest.raises(ContextFullError, match="sequence 1 needs 32 new cells .* and 0 of the 128 cells are free"):
        extend(ctx, 1, toks_for(LLAMA, 30))
    with pytest.raises(ContextFullError, match="sequence 0 needs 32 new cells"):
        extend(ctx, 0, toks_for(LLAMA, 30))
    with pytest.raises(ContextFullError, match="sequence 1 needs 32 new cells"):  # sequence 0's token would fit
        ctx.decode([1] + [2] * 30, [70] + list(range(3, 33)), [0] + [1] * 30)
    assert _state(ctx) == before
    ctx.seq_rm(0, 0)  # room again
    extend(ctx, 1, toks_for(LLAMA, 30))
    assert ctx.seq_len(1) == 33


def test_bad_sequence_operations_are_refused(busy):
    ctx, still_works = busy
    before = _state(ctx)
    cases = [
        (lambda: ctx.seq_rm(0, -1), "expected integers 0 <= p0 <= p1"),
        (lambda: ctx.seq_rm(0, 5, 3), "expected integers 0 <= p0 <= p1"),
        (lambda: ctx.seq_rm(0, 1.5), "expected integers"),
        (lambda: ctx.seq_rm(True, 1), "is not an id"),
        (lambda: ctx.seq_cp(1, 1, 2), "the same sequence"),
        (lambda: ctx.seq_cp(1, 0, 6), "expected 0 <= n <= seq_len\\(1\\) = 5"),
        (lambda: ctx.seq_cp(1, 0, -1), "expected 0 <= n"),
        (lambda: ctx.kv_read(0, 0, 10), "position 10 outside sequence 0's \\[0, 10\\)"),
        (lambda: ctx.kv_read(0, 5, 0), "layer 5 is not cached here"),
    ]
    for call, match in cases:
        with pytest.raises(ContextError, match=match):
            call()
    assert _state(ctx) == before
    still_works()


def test_bad_context_sizes_are_refused(tiny):
    model = Model.load(tiny(LLAMA), n_threads=1)
    for kw, match in (
        ({"n_seq_max": 0}, "n_seq_max must be an integer in \\[1, 64\\]"),
        ({"n_seq_max": 65}, "at most n_ctx=64"),
        ({"n_seq_max": 2.0}, "n_seq_max must be an integer"),
        ({"n_ctx_seq": 0}, "n_ctx_seq must be an integer in \\[1, n_ctx=64\\]"),
        ({"n_ctx_seq": 65}, "n_ctx_seq must be"),
    ):
        with pytest.raises(ContextError, match=match):
            Context(model, n_ctx=64, **kw)
    with pytest.raises(ContextError, match="at most n_ctx=300"):
        Context(model, n_ctx=300, n_seq_max=257)


def test_the_native_side_refuses_bad_batches_without_python_checks(busy):
    """lm_context_decode is a second fence: codes and messages, nothing changes"""
    ctx, still_works = busy
    before = _state(ctx)
    V = LLAMA.n_vocab
    logits = ffi.new("float[]", 4 * V)

    def call(tokens, pos, seq, flags=None, n=None, out=logits):
        arrays = [ffi.new("int32_t[]", a) for a in (tokens, pos, seq)]
        f = ffi.new("int8_t[]", flags) if flags is not None else ffi.NULL
        fields = {"token": arrays[0], "pos": arrays[1], "seq_id": arrays[2], "logits": f}
        b = ffi.new("lm_batch *", {"n_tokens": len(tokens) if n is None else n, **fields})
        return lib.lm_context_decode(ctx._ptr, b, out)

    assert call([1], [11], [0]) == lib.LM_ERR_ARG  # a gap
    assert call([1], [10], [3]) == lib.LM_ERR_ARG  # no such sequence
    assert call([V], [10], [0]) == lib.LM_ERR_TOKEN
    assert call([1], [10], [0], n=0) == lib.LM_ERR_ARG
    assert call([1] * 17, list(range(10, 27)), [0] * 17) == lib.LM_ERR_ARG  # > n_batch
    assert call([1] * 16, list(range(10, 26)), [0] * 16) == 0 and ctx.seq_len(0) == 26
    assert call([1] * 7, list(range(26, 33)), [0] * 7) == lib.LM_ERR_CONTEXT_FULL
    assert call([1], [26], [0], flags=[1], out=ffi.NULL) == lib.LM_ERR_ARG  # logits asked for, nowhere to go
    assert lib.lm_context_decode(ctx._ptr, ffi.NULL, logits) == lib.LM_ERR_ARG
    assert lib.lm_context_seq_rm(ctx._ptr, 0, 10, -1) == 0
    assert lib.lm_context_seq_rm(ctx._ptr, 0, 5, 2) == lib.LM_ERR_ARG
    assert lib.lm_context_seq_cp(ctx._ptr, 0, 0, 1) == lib.LM_ERR_ARG
    assert lib.lm_context_seq_cp(ctx._ptr, 0, 1, 11) == lib.LM_ERR_ARG
    assert lib.lm_context_seq_len(ctx._ptr, 3) == lib.LM_ERR_ARG
    assert _state(ctx) == before
    still_works()


def test_cuda_refuses_several_sequences_before_it_needs_a_gpu(tiny):
    model = Model.load(tiny(LLAMA), n_threads=1)
    fields = {"n_ctx": 64, "n_batch": 8, "n_seq_max": 2, "kv_type": 1, "n_threads": 1, "gpu_layers": 1}
    p = ffi.new("lm_context_params *", {**fields, "device": lib.LM_DEVICE_CUDA})
    assert lib.lm_context_create_params(model.native.ptr, p) == ffi.NULL
    assert "multi-sequence decode on CUDA is not implemented yet" in last_error()
