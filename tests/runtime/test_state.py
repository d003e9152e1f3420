"""Saved context state (runtime/engine/state.py, lamina.h lm_context_seq_state_*):
a sequence saved, loaded into another sequence of another context, and
continued gives the logits of never having stopped, bit for bit (the rows
are copied as they are, and a sequence's arithmetic does not depend on the
cells it sits in); whole-context states; states across an offload split;
and every way a state can be wrong is a typed error that changes nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lamina.engine import state
from lamina.engine.context import Context, ContextError, Model
from support.tiny_models import CONFIGS, GEMMA3, LLAMA

ARCHS = {"llama": LLAMA, "qwen2": CONFIGS["qwen2"], "gemma3": GEMMA3}


def for_kv(cfg, kv_type):
    return replace(cfg, n_embd=cfg.n_head * 32) if kv_type == "q8_0" and cfg.hd % 32 else cfg


def toks_for(cfg, n, seed=0):
    return np.random.default_rng(seed).integers(0, cfg.n_vocab, n)


def extend(ctx, seq, toks):
    n = ctx.seq_len(seq)
    return ctx.decode(toks, np.arange(n, n + len(toks)), np.full(len(toks), seq), np.ones(len(toks), dtype=bool))


def step(ctx, seqs, toks):
    """one decode step of several sequences together: token toks[i] to seqs[i]"""
    pos = [ctx.seq_len(s) for s in seqs]
    return ctx.decode(toks, pos, seqs, np.ones(len(seqs), dtype=bool))


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_sequence_loaded_into_another_slot_continues_bit_identically(tiny, arch, kv_type):
    cfg = for_kv(ARCHS[arch], kv_type)
    model = Model.load(tiny(cfg), n_threads=2)
    prompt, other, more = toks_for(cfg, 45), toks_for(cfg, 20, 1), toks_for(cfg, 12, 2)
    a = Context(model, n_ctx=256, kv_type=kv_type, n_seq_max=3, n_ctx_seq=128)
    extend(a, 1, other)  # seq 0's blocks do not start at cell 0
    extend(a, 0, prompt)
    data = a.save_seq(0, tokens=prompt, extra={"note": "x"})
    # another context, another sequence, other cells: seq 0 there holds other tokens first
    b = Context(model, n_ctx=256, kv_type=kv_type, n_seq_max=2, n_ctx_seq=128)
    extend(b, 0, toks_for(cfg, 70, 3))
    saved = b.load_seq(data, 1)
    assert b.seq_len(1) == 45 and b.seq_len(0) == 70
    assert np.array_equal(saved.sequences[0].tokens, prompt) and saved.extra == {"note": "x"}
    assert np.array_equal(extend(b, 1, more), extend(a, 0, more))  # a never stopped
    # decode steps, the loaded sequence beside another one in each batch
    for t in toks_for(cfg, 4, 4):
        got = step(b, [0, 1], [int(t), int(t)])[1]
        want = step(a, [1, 0], [int(t), int(t)])[1]
        assert np.array_equal(got, want)


def test_a_state_equals_recomputing_its_tokens(tiny):
    """the loaded rows are the rows evaluating the saved tokens writes (a check of the tokens kept with them)"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    prompt, more = toks_for(LLAMA, 37), toks_for(LLAMA, 5, 1)
    a = Context(model, n_ctx=128)
    a.eval(prompt)
    b = Context(model, n_ctx=128)
    saved = b.load_seq(a.save_seq(0, tokens=prompt), 0)
    c = Context(model, n_ctx=128)
    c.eval(saved.sequences[0].tokens)
    assert np.array_equal(b.eval(more, all_logits=True), c.eval(more, all_logits=True))


def test_whole_context_state_restores_every_sequence(tiny):
    model = Model.load(tiny(GEMMA3), n_threads=2)
    a = Context(model, n_ctx=256, n_seq_max=4, n_ctx_seq=128)
    extend(a, 0, toks_for(GEMMA3, 33))
    extend(a, 2, toks_for(GEMMA3, 50, 1))
    a.seq_cp(2, 3, 40)  # shared blocks are saved as each sequence's own rows
    data = a.save_state(tokens={0: toks_for(GEMMA3, 33)})
    b = Context(model, n_ctx=256, n_seq_max=4, n_ctx_seq=128)
    extend(b, 1, toks_for(GEMMA3, 9, 2))  # dropped by the load: the state has no sequence 1
    saved = b.load_state(data)
    assert [s.seq for s in saved.sequences] == [0, 2, 3]
    assert [b.seq_len(q) for q in range(4)] == [33, 0, 50, 40]
    assert saved.sequences[1].tokens.size == 0  # none were given for sequence 2
    for t in toks_for(GEMMA3, 3, 3):
        assert np.array_equal(step(b, [0, 2, 3], [int(t)] * 3), step(a, [0, 2, 3], [int(t)] * 3))


@pytest.mark.parametrize("gpu_layers", [1, 2, 3])
def test_states_cross_an_offload_split(tiny, gpu_layers):
    """the device's layers are saved and restored too (the CPU stand-in): a state
    saved with a split loads on the CPU alone and back, and continues as before"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    prompt, more = toks_for(LLAMA, 40), toks_for(LLAMA, 6, 1)
    split = Context(model, n_ctx=128, gpu_layers=gpu_layers, device="cpu-standin", n_seq_max=2, n_ctx_seq=64)
    extend(split, 1, prompt)
    data = split.save_seq(1)
    alone = Context(model, n_ctx=64)
    alone.load_seq(data, 0)
    back = Context(model, n_ctx=128, gpu_layers=gpu_layers, device="cpu-standin", n_seq_max=2, n_ctx_seq=64)
    back.load_seq(alone.save_seq(0), 0)
    want = extend(split, 1, more)
    assert np.array_equal(alone.eval(more, all_logits=True), want)
    assert np.array_equal(extend(back, 0, more), want)


# -- refusals ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=128, n_seq_max=2, n_ctx_seq=64)
    extend(ctx, 0, toks_for(LLAMA, 40))
    return model, ctx.save_seq(0, tokens=toks_for(LLAMA, 40))


def fresh(model, **kw):
    ctx = Context(model, **{"n_ctx": 128, "n_seq_max": 2, "n_ctx_seq": 64, **kw})
    extend(ctx, 1, toks_for(LLAMA, 7, 5))
    return ctx


def assert_unchanged(ctx):
    assert ctx.seq_len(0) == 0 and ctx.seq_len(1) == 7


def test_a_state_of_another_model_is_refused(tiny, saved):
    _, data = saved
    same_shape = Model.load(tiny(replace(LLAMA, seed=11)), n_threads=2)  # same tensors, other weights
    ctx = fresh(same_shape)
    with pytest.raises(state.StateMismatchError, match="another model.*identity") as e:
        ctx.load_seq(data, 0)
    assert e.value.field == "model identity"
    assert_unchanged(ctx)
    qwen = Model.load(tiny(CONFIGS["qwen2"]), n_threads=2)
    with pytest.raises(state.StateMismatchError, match="model arch.*'llama'"):
        Context(qwen, n_ctx=64).load_seq(data, 0)


@pytest.mark.parametrize("kv_type", ["f32", "q8_0"])
def test_a_state_of_another_kv_type_is_refused(tiny, kv_type):
    cfg = for_kv(LLAMA, "q8_0")
    model = Model.load(tiny(cfg), n_threads=2)
    a = Context(model, n_ctx=64, kv_type="f16")
    a.eval(toks_for(cfg, 20))
    ctx = Context(model, n_ctx=64, kv_type=kv_type)
    with pytest.raises(state.StateMismatchError, match="another KV cache type") as e:
        ctx.load_seq(a.save_seq(0), 0)
    assert (e.value.field, e.value.expected, e.value.found) == ("kv_type", kv_type, "f16")
    assert ctx.n_past == 0


@pytest.mark.parametrize("cut", [1, 32, 1000, None])
def test_a_truncated_state_is_refused(saved, cut):
    model, data = saved
    short = data[:10] if cut is None else data[:-cut]
    ctx = fresh(model)
    with pytest.raises(state.StateTruncatedError):
        ctx.load_seq(short, 0)
    assert_unchanged(ctx)


def test_every_flipped_byte_is_refused(saved):
    """a flipped bit anywhere (prefix, header, tokens, rows, checksum) is a StateError, never a load"""
    model, data = saved
    ctx = fresh(model)
    rng = np.random.default_rng(0)
    head = state._PREFIX.size + int.from_bytes(data[12:16], "little")
    places = [*range(head + 8), *rng.integers(head, len(data), 200).tolist(), *range(len(data) - 32, len(data))]
    for i in places:
        bad = bytearray(data)
        bad[i] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(state.StateError):
            ctx.load_seq(bytes(bad), 0)
    assert_unchanged(ctx)
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x10
    with pytest.raises(state.StateCorruptError, match="checksum"):
        ctx.load_seq(bytes(bad), 0)
    with pytest.raises(state.StateFormatError, match="not a lamina state"):
        ctx.load_seq(b"GGUF" + data[4:], 0)
    newer = bytearray(data)
    newer[8] = 3
    with pytest.raises(state.StateFormatError, match="version 3"):
        ctx.load_seq(bytes(newer), 0)


def test_a_state_larger_than_the_sequence_room_is_refused(saved):
    model, data = saved
    ctx = Context(model, n_ctx=64, n_seq_max=2, n_ctx_seq=32)
    with pytest.raises(state.StateMismatchError, match="does not fit"):
        ctx.load_seq(data, 0)
    assert ctx.seq_len(0) == 0


def test_native_state_calls_check_sizes(saved):
    from lamina.native import ffi, lib

    model, data = saved
    ctx = fresh(model)
    loaded = state.unpack(ctx, data)
    kv = bytes(loaded.sequences[0].kv)
    for n_pos, size in [(40, len(kv) - 1), (39, len(kv)), (65, len(kv)), (-1, 0)]:
        buf = ffi.from_buffer("char[]", kv)
        assert lib.lm_context_seq_state_set(ctx._live, 0, n_pos, buf, size) < 0
    assert lib.lm_context_seq_state_get(ctx._live, 1, ffi.from_buffer("char[]", bytearray(10)), 10) < 0
    assert_unchanged(ctx)
    with pytest.raises(ContextError, match="sequence 5"):
        ctx.seq_state_kv(5)


def test_state_files_are_written_whole(tmp_path, saved):
    _, data = saved
    path = tmp_path / "s.state"
    state.write_file(path, data)
    state.write_file(path, data[:100])  # overwritten by a rename, not in place
    assert path.read_bytes() == data[:100]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.state"]


def test_a_longrope_state_needs_the_same_factors(tiny):
    """phi3: contexts past its original 64 positions per sequence rotate keys by the long
    factors; a state does not move between the two kinds, and does within one"""
    model = Model.load(tiny(CONFIGS["phi3"]), n_threads=2)
    long_ctx = Context(model, n_ctx=128)
    long_ctx.eval(toks_for(CONFIGS["phi3"], 20))
    data = long_ctx.save_seq(0)
    with pytest.raises(state.StateMismatchError, match="LongRoPE") as e:
        Context(model, n_ctx=64).load_seq(data, 0)
    assert e.value.field == "rope_long"
    again = Context(model, n_ctx=256, n_seq_max=2)  # 128 per sequence: long factors too
    again.load_seq(data, 1)
    assert again.seq_len(1) == 20


@pytest.mark.gpu
def test_cuda_offload_refuses_to_save_or_load_by_name(tiny):
    """the CUDA backend cannot copy its cache out yet: saving and loading say so, and change nothing"""
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=64, gpu_layers=2, device="cuda", require_gpu=True)
    ctx.eval(toks_for(LLAMA, 10))
    with pytest.raises(ContextError, match="cuda offload device cannot save or restore"):
        ctx.save_seq(0)
    data = Context(model, n_ctx=64).save_seq(0)
    with pytest.raises(ContextError, match="cuda offload device cannot save or restore"):
        ctx.load_seq(data, 0)
    assert ctx.n_past == 10


def test_a_well_checksummed_state_with_a_malformed_header_is_refused(saved):
    """a header that parses but lies (wrong types, negative sizes) is refused even
    when its checksum was recomputed: no field reaches numpy or the cache unchecked"""
    import hashlib
    import json

    model, data = saved
    head_len = int.from_bytes(data[12:16], "little")
    header = json.loads(data[16 : 16 + head_len])
    body = data[16 + head_len : -32]
    ctx = fresh(model)
    for change in [
        lambda h: h["sequences"][0].update(n_pos=40.5),
        lambda h: h["sequences"][0].update(n_tokens="40"),
        lambda h: h["sequences"][0].update(kv_bytes=-1),
        lambda h: h.update(model=[]),
        lambda h: h.update(extra=None),
        lambda h: h["sequences"][0].update(kv_bytes=h["sequences"][0]["kv_bytes"] - 8, n_tokens=0),
        lambda h: h["sequences"][0].pop("lora_scales"),  # version 2 always records them
        lambda h: h["sequences"][0].update(lora_scales=[1.0]),  # a scale for an adapter the state lacks
        lambda h: h.update(loras={"file": "a.gguf"}),
        lambda h: h.update(loras=[{"file": "a.gguf"}]),
    ]:
        h = json.loads(json.dumps(header))
        change(h)
        head = json.dumps(h).encode()
        forged = data[:12] + len(head).to_bytes(4, "little") + head + body
        with pytest.raises(state.StateError):
            ctx.load_seq(forged + hashlib.sha256(forged).digest(), 0)
    assert_unchanged(ctx)


def test_a_version_1_state_reads_as_one_without_adapters(saved):
    """version 1 (before states recorded LoRA adapters, when saving with adapters was refused)
    is version 2 without adapters: the same bytes with its header's older shape load, and
    continue as the version 2 state does"""
    import hashlib
    import json

    model, data = saved
    head_len = int.from_bytes(data[12:16], "little")
    header = json.loads(data[16 : 16 + head_len])
    assert header["loras"] == [] and header["sequences"][0]["lora_scales"] == []
    del header["loras"]
    del header["sequences"][0]["lora_scales"]
    head = json.dumps(header).encode()
    old = state.MAGIC + (1).to_bytes(4, "little") + len(head).to_bytes(4, "little") + head
    old += data[16 + head_len : -32]
    old += hashlib.sha256(old).digest()
    more = toks_for(LLAMA, 5, 9)
    a, b = fresh(model), fresh(model)
    a.load_seq(data, 0)
    saved_old = b.load_seq(old, 0)
    assert np.array_equal(saved_old.sequences[0].tokens, toks_for(LLAMA, 40))
    assert saved_old.sequences[0].lora_scales == ()
    assert np.array_equal(extend(b, 0, more), extend(a, 0, more))
