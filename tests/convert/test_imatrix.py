"""Importance matrices without llama.cpp: the native collection hook against
the matmul inputs it sums (captured by lm_context_capture, summed in float64
here; for MoE layers against a numpy routing of the captured FFN input), the
file formats (GGUF round trip, legacy .dat), llama-quantize's importance
arithmetic, the quantizer hand-off (bytes vs ggml's ggml_quantize_chunk with
the same quant weights) and every refusal as a typed error.

The comparisons with llama-imatrix and llama-quantize themselves are in
tests/models/test_imatrix_llama_cpp.py."""

from __future__ import annotations

import struct
import warnings
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F

from lamina.convert.encode import Encoder
from lamina.convert.errors import ImatrixError
from lamina.convert.imatrix.apply import ImatrixMissingWarning, plan_importance, requires_imatrix
from lamina.convert.imatrix.collect import (
    ImatrixInputError,
    compute_imatrix,
    micro_batches,
    name_entries,
    plan_chunks,
)
from lamina.convert.imatrix.format import Imatrix, ImatrixEntry, read_imatrix, write_imatrix
from lamina.engine.context import Context, Model
from support.ggml_oracle import oracle
from support.tiny_models import LLAMA, QWEN3MOE

# ----------------------------------------------------------------------------
# the native hook


def _sq_sum(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) ** 2).sum(axis=0)


@pytest.mark.parametrize("cfg", [LLAMA, replace(LLAMA, qtype="Q8_0")], ids=["f32", "q8_0"])
def test_hook_sums_the_matmul_inputs(tiny, cfg) -> None:
    model = Model.load(tiny(cfg), n_threads=2)
    hp = model.hparams
    toks = np.random.default_rng(0).integers(0, hp.n_vocab, 56)
    for il in range(hp.n_layer):
        ctx = Context(model, n_ctx=64, n_batch=64)
        ctx.capture(il, attn_in=True, wo_in=True, ffn_in=True, down_in=True)
        ctx.collect_imatrix(True)
        ctx.eval(toks[:24])
        cap1 = ctx.captured
        ctx.imatrix_dense(False)  # as llama-imatrix leaves out a micro-batch under 16 rows
        ctx.eval(toks[24:30])
        ctx.imatrix_dense(True)
        ctx.eval(toks[30:])
        cap2 = ctx.captured
        sums, counts = ctx.collect_imatrix(False)
        assert counts.shape == (hp.n_layer, 1) and counts[il, 0] == 24 + 26
        im = name_entries(model, sums, counts)
        for part, names in {
            "attn_in": ("attn_q", "attn_k", "attn_v"),
            "wo_in": ("attn_output",),
            "ffn_in": ("ffn_gate", "ffn_up"),
            "down_in": ("ffn_down",),
        }.items():
            want = _sq_sum(cap1[part]) + _sq_sum(cap2[part])
            for n in names:
                e = im[f"blk.{il}.{n}.weight"]
                assert e.counts.tolist() == [50]
                np.testing.assert_allclose(e.sums[0], want, rtol=2e-6, err_msg=f"blk.{il}.{n}")
        # stopped: further batches add nothing, and a second stop returns None
        before = sums.copy()
        ctx.truncate(0)
        ctx.eval(toks[:20])
        assert np.array_equal(sums, before) and ctx.collect_imatrix(False) is None
        ctx.close()


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def test_hook_per_expert_sums(tiny) -> None:
    """qwen3moe: router input as a dense matmul, each expert's gate/up and down
    inputs over the tokens routed to it, recomputed here from the captured FFN
    input and the f32 weights."""
    path = tiny(QWEN3MOE)
    model = Model.load(path, n_threads=2)
    hp, g = model.hparams, model.native.gguf
    X, k = hp.n_expert, hp.n_expert_used
    toks = np.random.default_rng(1).integers(0, hp.n_vocab, 48)
    for il in range(hp.n_layer):
        ctx = Context(model, n_ctx=64, n_batch=64)
        ctx.capture(il, ffn_in=True)
        ctx.collect_imatrix(True)
        ctx.eval(toks)
        x = ctx.captured["ffn_in"].astype(np.float64)  # [T, E]
        sums, counts = ctx.collect_imatrix(False)
        ctx.close()
        im = name_entries(model, sums, counts)

        def w(name: str, il: int = il) -> np.ndarray:
            t = g.tensor(f"blk.{il}.{name}.weight")
            return g.tensor_bytes(t.name).view(np.float32).reshape(t.np_shape).astype(np.float64)

        logits = x @ w("ffn_gate_inp").T  # [T, X]
        picked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        gate, up = w("ffn_gate_exps"), w("ffn_up_exps")  # [X, Fe, E]
        want_in, want_down, want_n = np.zeros((X, hp.n_embd)), np.zeros((X, hp.n_ff_exp)), np.zeros(X, np.int64)
        for t in range(len(x)):
            for e in picked[t]:
                want_in[e] += x[t] ** 2
                want_down[e] += (_silu(gate[e] @ x[t]) * (up[e] @ x[t])) ** 2
                want_n[e] += 1
        router = im[f"blk.{il}.ffn_gate_inp.weight"]
        assert router.counts.tolist() == [len(x)]
        np.testing.assert_allclose(router.sums[0], _sq_sum(x), rtol=2e-6)
        for name in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            e = im[f"blk.{il}.{name}.weight"]
            assert e.counts.tolist() == want_n.tolist(), name
        np.testing.assert_allclose(im[f"blk.{il}.ffn_gate_exps.weight"].sums, want_in, rtol=2e-6)
        np.testing.assert_allclose(im[f"blk.{il}.ffn_up_exps.weight"].sums, want_in, rtol=2e-6)
        np.testing.assert_allclose(im[f"blk.{il}.ffn_down_exps.weight"].sums, want_down, rtol=1e-4, atol=1e-6)


def test_compute_imatrix_chunks_and_bos(tiny) -> None:
    model = Model.load(tiny(LLAMA), n_threads=2)
    toks = np.arange(100) % model.hparams.n_vocab
    im = compute_imatrix(model, toks, n_ctx=32, n_chunks=2, bos_id=1, dataset="text.txt")
    assert (im.chunk_count, im.chunk_size, im.datasets) == (2, 32, ["text.txt"])
    assert all(e.counts.tolist() == [64] for e in im.entries.values())
    names = {f"blk.{il}.{n}.weight" for il in range(2) for n in ("attn_q", "attn_k", "attn_v", "attn_output")}
    names |= {f"blk.{il}.{n}.weight" for il in range(2) for n in ("ffn_gate", "ffn_up", "ffn_down")}
    assert set(im.entries) == names  # no output head, no token_embd
    # all chunks (3 of 100 tokens at 32) when --chunks is not given
    assert compute_imatrix(model, toks, n_ctx=32).chunk_count == 3
    # bos_id: each chunk's first token replaced, as llama-imatrix evaluates them
    replaced = toks.copy()
    replaced[[0, 32]] = 1
    plain = compute_imatrix(model, replaced, n_ctx=32, n_chunks=2)
    other = compute_imatrix(model, toks, n_ctx=32, n_chunks=2)
    for n, e in im.entries.items():
        assert np.array_equal(e.sums, plain.entries[n].sums), n
    assert not all(np.array_equal(e.sums, other.entries[n].sums) for n, e in im.entries.items())


def test_micro_batches_as_llama_decode_cuts_them() -> None:
    # one chunk per batch: split_simple, 512 at a time (a tail under 16 left out)
    assert micro_batches(1030, 1, False) == [(0, 512, True), (512, 512, True), (1024, 6, False)]
    assert micro_batches(3000, 1, False)[-2:] == [(2048, 512, True), (2560, 440, True)]
    # chunks side by side (split_equal): 512 // n_seqs tokens of each per micro-batch
    assert micro_batches(128, 4, True) == [(0, 128, True)]
    assert micro_batches(512, 3, True) == [(0, 170, True), (170, 170, True), (340, 170, True), (510, 2, False)]
    assert micro_batches(206, 5, True) == [(0, 102, True), (102, 102, True), (204, 2, False)]
    assert micro_batches(40, 1, True) == [(0, 40, True)]
    # -b 256 -ub 100 on one chunk of 300: batches 256 + 44, micro-batches 100, 100, 56 | 44
    want = [(0, 100, True), (100, 100, True), (200, 56, True), (256, 44, True)]
    assert micro_batches(300, 1, False, 256, 100) == want


def test_plan_chunks_refusals() -> None:
    assert plan_chunks(1000, 128, None) == 7
    assert plan_chunks(1000, 128, 3) == 3
    with pytest.raises(ImatrixInputError, match="at least 256 tokens"):
        plan_chunks(255, 128, None)
    with pytest.raises(ImatrixInputError, match="-c must be >= 16"):
        plan_chunks(1000, 8, None)
    with pytest.raises(ImatrixInputError, match="--chunks"):
        plan_chunks(1000, 128, 0)
    with pytest.raises(ImatrixInputError, match="-b 0"):
        compute_imatrix(None, np.zeros(1000, np.int32), 128, n_batch=0)  # type: ignore[arg-type]


def test_offloaded_context_refuses(tiny) -> None:
    from lamina.engine.context import ContextError

    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=64, gpu_layers=99, device="cpu-standin")
    with pytest.raises(ContextError, match="CPU only"):
        ctx.collect_imatrix(True)


# ----------------------------------------------------------------------------
# files


def _sample() -> Imatrix:
    rng = np.random.default_rng(3)
    return Imatrix(
        {
            "blk.0.attn_q.weight": ImatrixEntry(rng.random((1, 256), dtype=np.float32), np.array([512])),
            "blk.0.ffn_down_exps.weight": ImatrixEntry(rng.random((4, 256), dtype=np.float32), np.array([10, 0, 7, 3])),
        },
        ["calib.txt"],
        chunk_count=4,
        chunk_size=128,
    )


def test_gguf_round_trip_and_layout(tmp_path: Path) -> None:
    im, out = _sample(), tmp_path / "im.gguf"
    write_imatrix(out, im)
    assert not list(tmp_path.glob(".*partial"))
    back = read_imatrix(out)
    assert (back.datasets, back.chunk_count, back.chunk_size, back.legacy) == (["calib.txt"], 4, 128, False)
    for n, e in im.entries.items():
        np.testing.assert_array_equal(back.entries[n].sums, e.sums)
        assert back.entries[n].counts.tolist() == e.counts.tolist()
    # llama-imatrix's layout, read with gguf-py: its keys only, F32 tensors named by weight, ggml dims
    r = gguf.GGUFReader(out)
    assert [f for f in r.fields if not f.startswith("GGUF.")] == [
        "general.type",
        "imatrix.datasets",
        "imatrix.chunk_count",
        "imatrix.chunk_size",
    ]
    shapes = {t.name: t.shape.tolist() for t in r.tensors}
    assert list(shapes) == [
        "blk.0.attn_q.weight.in_sum2",
        "blk.0.attn_q.weight.counts",
        "blk.0.ffn_down_exps.weight.in_sum2",
        "blk.0.ffn_down_exps.weight.counts",
    ]
    assert shapes["blk.0.attn_q.weight.in_sum2"] == [256] and shapes["blk.0.attn_q.weight.counts"] == [1]
    assert shapes["blk.0.ffn_down_exps.weight.in_sum2"] == [256, 4]
    assert shapes["blk.0.ffn_down_exps.weight.counts"] == [1, 4]


def test_empty_datasets_round_trip(tmp_path: Path) -> None:
    """llama-imatrix writes an empty imatrix.datasets when it merged files only."""
    im = _sample()
    im.datasets = []
    write_imatrix(tmp_path / "im.gguf", im)
    assert read_imatrix(tmp_path / "im.gguf").datasets == []
    assert gguf.GGUFReader(tmp_path / "im.gguf").fields["imatrix.datasets"].types[0] == gguf.GGUFValueType.ARRAY


def test_importance_as_llama_quantize() -> None:
    im = _sample()
    q = im.importance("blk.0.attn_q.weight")
    e = im.entries["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(q, e.sums[0] / np.float32(512))
    x = im.importance("blk.0.ffn_down_exps.weight").reshape(4, 256)
    s = im.entries["blk.0.ffn_down_exps.weight"].sums
    np.testing.assert_array_equal(x[0], s[0] / np.float32(10))
    np.testing.assert_array_equal(x[1], np.ones(256, np.float32))  # an expert that saw no token: 1
    np.testing.assert_array_equal(x[3], s[3] / np.float32(3))
    assert im.importance("output.weight") is None


def _legacy_bytes(entries: list[tuple[str, int, np.ndarray]], trailer: tuple[int, str] | None) -> bytes:
    b = struct.pack("<i", len(entries))
    for name, ncall, vals in entries:
        raw = name.encode()
        b += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, vals.size) + vals.astype("<f4").tobytes()
    if trailer is not None:
        raw = trailer[1].encode()
        b += struct.pack("<ii", trailer[0], len(raw)) + raw
    return b


@pytest.mark.parametrize("trailer", [(7, "wiki.txt"), None], ids=["trailer", "no-trailer"])
def test_legacy_dat(tmp_path: Path, trailer) -> None:
    vals = np.linspace(0.5, 3.0, 64, dtype=np.float32)
    p = tmp_path / "im.dat"
    p.write_bytes(_legacy_bytes([("blk.0.attn_k.weight", 7, vals)], trailer))
    im = read_imatrix(p)
    assert im.legacy and list(im.entries) == ["blk.0.attn_k.weight"]
    assert im.chunk_count == (7 if trailer else 0) and im.datasets == (["wiki.txt"] if trailer else [])
    np.testing.assert_array_equal(im.importance("blk.0.attn_k.weight"), vals / np.float32(7))


# ----------------------------------------------------------------------------
# refusals: a typed error naming the file and the field


def _gguf_with(path: Path, keys: dict, tensors: dict) -> Path:
    w = gguf.GGUFWriter(path, arch="")
    w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
    for k, (v, t) in keys.items():
        w.add_key_value(k, v, t, sub_type=gguf.GGUFValueType.STRING if t == gguf.GGUFValueType.ARRAY else None)
    for n, a in tensors.items():
        w.add_tensor(n, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


_KEYS = {
    "general.type": ("imatrix", gguf.GGUFValueType.STRING),
    "imatrix.datasets": (["t.txt"], gguf.GGUFValueType.ARRAY),
    "imatrix.chunk_count": (1, gguf.GGUFValueType.UINT32),
    "imatrix.chunk_size": (64, gguf.GGUFValueType.UINT32),
}
_GOOD = {"blk.0.attn_q.weight.in_sum2": np.ones(32, np.float32), "blk.0.attn_q.weight.counts": np.ones(1, np.float32)}


@pytest.mark.parametrize(
    "case,field",
    [
        ("no-counts", "blk.0.attn_q.weight.counts"),
        ("f16-sums", "blk.0.attn_q.weight.in_sum2"),
        ("nan-sums", "blk.0.attn_q.weight.in_sum2"),
        ("no-chunk-size", "imatrix.chunk_size"),
        ("model-file", "general.type"),
        ("uneven-experts", "blk.0.attn_q.weight.counts"),
        ("no-tensors", "tensors"),
    ],
)
def test_bad_gguf_imatrix(tmp_path: Path, case: str, field: str) -> None:
    keys, tensors = dict(_KEYS), dict(_GOOD)
    if case == "no-counts":
        del tensors["blk.0.attn_q.weight.counts"]
    elif case == "f16-sums":
        tensors["blk.0.attn_q.weight.in_sum2"] = np.ones(32, np.float16)
    elif case == "nan-sums":
        tensors["blk.0.attn_q.weight.in_sum2"] = np.full(32, np.nan, np.float32)
    elif case == "no-chunk-size":
        del keys["imatrix.chunk_size"]
    elif case == "model-file":
        keys["general.type"] = ("model", gguf.GGUFValueType.STRING)
    elif case == "uneven-experts":
        tensors["blk.0.attn_q.weight.counts"] = np.ones((3, 1), np.float32)
    elif case == "no-tensors":
        tensors = {}
    p = _gguf_with(tmp_path / "bad.gguf", keys, tensors)
    with pytest.raises(ImatrixError) as e:
        read_imatrix(p)
    assert e.value.field == field and str(p) in str(e.value)


def test_truncated_files(tmp_path: Path) -> None:
    good = tmp_path / "good.gguf"
    write_imatrix(good, _sample())
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImatrixError, match="cut.gguf"):
        read_imatrix(cut)
    dat = tmp_path / "cut.dat"
    dat.write_bytes(_legacy_bytes([("blk.0.attn_k.weight", 1, np.ones(64, np.float32))], None)[:-8])
    with pytest.raises(ImatrixError) as e:
        read_imatrix(dat)
    assert e.value.field == "blk.0.attn_k.weight values"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImatrixError, match="notes.txt"):
        read_imatrix(text)
    with pytest.raises(ImatrixError, match="cannot read"):
        read_imatrix(tmp_path / "missing.gguf")


def test_plan_importance_rules() -> None:
    im = _sample()
    im.path = "im.gguf"
    # an entry of another model's width: refused before any byte is written
    with pytest.raises(ImatrixError, match="blk.0.attn_q.weight.*needs 512") as e:
        plan_importance(im, [("blk.0.attn_q.weight", (512, 512), Q.Q4_K)], F.MOSTLY_Q4_K_M, "in.gguf")
    assert e.value.field == "blk.0.attn_q.weight"
    # the right width per expert
    got = plan_importance(im, [("blk.0.ffn_down_exps.weight", (256, 64, 4), Q.Q4_K)], F.MOSTLY_Q4_K_M, "in.gguf")
    assert got["blk.0.ffn_down_exps.weight"].shape == (1024,)
    # missing entries: a warning naming them; token_embd/output are expected to have none
    with pytest.warns(ImatrixMissingWarning, match="blk.1.attn_q.weight"):
        plan_importance(im, [("blk.1.attn_q.weight", (256, 256), Q.Q4_K)], F.MOSTLY_Q4_K_M, "in.gguf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_importance(im, [("output.weight", (256, 9), Q.Q6_K)], F.MOSTLY_Q4_K_M, "in.gguf")
    # the types that need one refuse a tensor without it, as llama-quantize
    assert requires_imatrix("blk.0.attn_q.weight", Q.IQ2_XXS, F.MOSTLY_IQ2_XXS)
    assert requires_imatrix("blk.0.attn_q.weight", Q.Q2_K, F.MOSTLY_Q2_K_S)
    assert not requires_imatrix("blk.0.attn_q.weight", Q.Q2_K, F.MOSTLY_Q2_K)
    assert not requires_imatrix("token_embd.weight", Q.IQ2_XXS, F.MOSTLY_IQ2_XXS)
    with pytest.raises(ImatrixError, match="IQ2_XXS needs an importance matrix for blk.1.ffn_up.weight"):
        plan_importance(None, [("blk.1.ffn_up.weight", (256, 256), Q.IQ2_XXS)], F.MOSTLY_IQ2_XXS, "in.gguf")


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K, Q.Q4_0, Q.IQ4_XS])
def test_encoder_per_expert_importance_vs_ggml(qtype: Q) -> None:
    """A [4 experts][40 rows][256] stack: expert e's rows quantized with row e of
    the importance (and chunks never crossing experts), as ggml_quantize_chunk
    with that expert's quant weights gives them."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 40, 256)).astype(np.float32)
    imp = rng.random((4, 256), dtype=np.float32) + 0.01
    enc = Encoder(2)
    try:
        import lamina.convert.encode as encode_mod

        saved = encode_mod._CHUNK_WEIGHTS
        encode_mod._CHUNK_WEIGHTS = 256 * 16  # 16-row chunks: 40 rows of an expert end mid-chunk
        got = enc.encode("blk.0.ffn_up_exps.weight", x, qtype, imp.ravel())
    finally:
        encode_mod._CHUNK_WEIGHTS = saved
        enc.close()
    want = np.concatenate([oracle().quantize_chunk(qtype, x[e], imp[e]) for e in range(4)])
    assert np.array_equal(got, want)
    assert not np.array_equal(got, np.concatenate([oracle().quantize_chunk(qtype, x[e]) for e in range(4)]))


def test_quantize_cli_refuses_a_mismatched_imatrix(tiny, tmp_path: Path, capsys) -> None:
    """An imatrix of another model (rows of 256, the tiny model's are 64): one
    line naming the file and tensor, exit 1, no output file."""
    from lamina.convert.cli import quantize as quantize_cli

    im = tmp_path / "other.gguf"
    write_imatrix(im, _sample())
    out = tmp_path / "out.gguf"
    assert quantize_cli.main([str(tiny(LLAMA)), str(out), "q8_0", "--imatrix", str(im), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "other.gguf" in err and "blk.0.attn_q.weight" in err and "needs 64" in err
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x00")
    assert quantize_cli.main([str(tiny(LLAMA)), str(out), "q8_0", "--imatrix", str(bad), "--quiet"]) == 1
    assert "bad.dat" in capsys.readouterr().err and not out.exists()


def test_quantize_cli_warns_about_missing_entries(tiny, tmp_path: Path, capsys) -> None:
    from lamina.convert.cli import quantize as quantize_cli

    model = tiny(LLAMA)
    im = compute_imatrix(Model.load(model, n_threads=2), np.arange(64) % 96, n_ctx=32)
    del im.entries["blk.1.ffn_up.weight"]
    write_imatrix(tmp_path / "im.gguf", im)
    out = tmp_path / "out.gguf"
    assert quantize_cli.main([str(model), str(out), "q8_0", "--imatrix", str(tmp_path / "im.gguf"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "no importance data for 1 quantized tensors (blk.1.ffn_up.weight)" in err
    from lamina.gguf.reader import GGUFFile

    g = GGUFFile(out)
    assert g.metadata["quantize.imatrix.entries_count"] == len(im.entries)
    assert g.metadata["quantize.imatrix.chunks_count"] == 2
    # after general.file_type, in llama-quantize's order (no dataset: computed without a file name)
    assert list(g.metadata)[-4:] == [
        "general.file_type",
        "quantize.imatrix.file",
        "quantize.imatrix.entries_count",
        "quantize.imatrix.chunks_count",
    ]


def test_legacy_write_round_trip(tmp_path: Path) -> None:
    from lamina.convert.imatrix.format import write_imatrix_legacy

    im = _sample()
    write_imatrix_legacy(tmp_path / "im.dat", im)
    back = read_imatrix(tmp_path / "im.dat")
    assert back.legacy and back.datasets == ["calib.txt"] and back.chunk_count == 512 // 128
    for name in im.entries:  # ncall = ceil(512 / 128) = 4: (sum / count) * 4 / 4
        np.testing.assert_allclose(back.importance(name), im.importance(name), rtol=1e-6)
    with pytest.raises(ImatrixError, match="legacy file is written from sums"):
        write_imatrix_legacy(tmp_path / "again.dat", back)
