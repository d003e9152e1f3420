"""runtime/gptq/format.py (reading GPTQ linears from a GGUF) and
convert/gptq/tensors.py (writing them): a round trip through the real writer,
gguf-py's reader as an independent parser, and every inconsistency a file
can hold ending in a typed error that names the file, tensor or key."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from lamina.convert.gptq.algorithm import GPTQConfig, gptq_quantize, quantize_rtn
from lamina.convert.gptq.tensors import GPTQLayoutError, gptq_job_tensors, gptq_metadata, q4_0_problem, repack_q4_0
from lamina.convert.pipeline import Job, run_job
from lamina.errors import GGUFError, GGUFMissingTensorError
from lamina.gguf.reader import GGUFFile
from lamina.gptq.format import (
    GPTQ_KEYS,
    GPTQFormatError,
    gptq_file_config,
    gptq_tensor_names,
    is_gptq_weight_name,
    model_weight_count,
    read_gptq_linear,
)
from lamina.gptq.pack import GPTQPacked, pack_result, unpack_qzeros
from lamina.quants import dequantize

W_NAME = "blk.0.attn_q.weight"


def linear(
    n_out: int = 48,
    n_in: int = 96,
    group_size: int = 32,
    sym: bool = False,
    act_order: bool = False,
    fmt: str = "v1",
    seed: int = 0,
) -> GPTQPacked:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_out, n_in))
    cfg = GPTQConfig(group_size=group_size, sym=sym, act_order=act_order)
    if act_order:
        X = rng.standard_normal((64, n_in)) * rng.uniform(0.1, 3, n_in)
        return pack_result(gptq_quantize(W, X.T @ X, cfg), fmt)
    return pack_result(quantize_rtn(W, cfg), fmt)


def write(path: Path, tensors: list, group_size: int = 32, sym: bool = False, desc_act: bool = False, **meta) -> Path:
    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        gptq_metadata(w, group_size=group_size, sym=sym, desc_act=desc_act, source="lamina", **meta)

    run_job(Job(path, "llama", metadata, tensors))
    return path


def raw_file(path: Path, arrays: dict[str, np.ndarray], keys: dict | None = None) -> Path:
    """A GGUF with exactly these arrays and keys (none of the writer's checks)."""
    w = gguf.GGUFWriter(str(path), "llama")
    base = {
        GPTQ_KEYS.VERSION: 1,
        GPTQ_KEYS.BITS: 4,
        GPTQ_KEYS.GROUP_SIZE: 32,
        GPTQ_KEYS.SYM: False,
        GPTQ_KEYS.DESC_ACT: False,
        GPTQ_KEYS.SOURCE: "lamina",
    }
    for k, v in {**base, **(keys or {})}.items():
        if v is None:
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, tuple):  # (value, explicit type)
            w.add_key_value(k, v[0], v[1])
        else:
            w.add_uint32(k, v)
    for name, a in arrays.items():
        w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def parts(p: GPTQPacked, weight: str = W_NAME, g_idx: bool = False) -> dict[str, np.ndarray]:
    n = gptq_tensor_names(weight)
    out = {n["qweight"]: p.qweight, n["scales"]: p.scales, n["qzeros"]: p.to_format("v2").qzeros}
    if g_idx:
        out[n["g_idx"]] = p.g_idx
    return out


# -- names ------------------------------------------------------------------------


def test_names() -> None:
    assert gptq_tensor_names("blk.12.ffn_down.weight") == {
        "qweight": "blk.12.ffn_down.qweight",
        "scales": "blk.12.ffn_down.scales",
        "qzeros": "blk.12.ffn_down.qzeros",
        "g_idx": "blk.12.ffn_down.g_idx",
    }
    assert is_gptq_weight_name("blk.0.attn_output.weight")
    for bad in (
        "token_embd.weight",
        "output.weight",
        "blk.0.attn_norm.weight",
        "blk.0.attn_q.bias",
        "blk.x.ffn_up.weight",
    ):
        assert not is_gptq_weight_name(bad)
        with pytest.raises(ValueError, match="not a GPTQ-able weight name"):
            gptq_tensor_names(bad)


# -- round trip through the writer ------------------------------------------------


@pytest.mark.parametrize(
    "group_size, act_order, fmt", [(32, False, "v1"), (32, True, "v2"), (-1, False, "v2"), (40, False, "v1")]
)
def test_round_trip(group_size: int, act_order: bool, fmt: str, tmp_path: Path) -> None:
    a = linear(group_size=group_size, act_order=act_order, fmt=fmt)
    b = linear(n_out=16, n_in=48, group_size=group_size, fmt=fmt, seed=1)
    loads = []

    def load_b() -> GPTQPacked:
        loads.append(1)
        return b

    tensors = gptq_job_tensors(W_NAME, a, group_size)
    tensors += gptq_job_tensors(
        "blk.1.ffn_up.weight", load_b, group_size, n_in=48, n_out=16, n_groups=b.n_groups, with_g_idx=False
    )
    path = write(
        tmp_path / "m.gguf",
        tensors,
        group_size=group_size,
        desc_act=act_order,
        damp=0.05,
        calibration="wikitext2:128x512",
    )
    assert loads == [1]  # the lazy linear was loaded once for its three parts

    with GGUFFile(path) as g:
        assert gptq_file_config(g) == {
            "version": 1,
            "bits": 4,
            "group_size": group_size,
            "sym": False,
            "desc_act": act_order,
            "source": "lamina",
            "damp": pytest.approx(0.05),
            "calibration": "wikitext2:128x512",
        }
        assert "general.file_type" not in g.metadata
        for name, p in ((W_NAME, a), ("blk.1.ffn_up.weight", b)):
            lin = read_gptq_linear(g, name)
            gs = p.in_features if group_size == -1 else group_size
            assert (lin.n_in, lin.n_out, lin.group_size, lin.n_groups, lin.name) == (
                p.in_features,
                p.out_features,
                gs,
                p.n_groups,
                name,
            )
            assert lin.qweight.dtype == np.int32 and lin.qzeros.dtype == np.int32 and lin.scales.dtype == np.float16
            assert not lin.qweight.flags.writeable  # views of the read-only map
            assert np.array_equal(lin.qweight, p.qweight)
            assert np.array_equal(lin.scales.view(np.uint16), p.scales.view(np.uint16))
            assert np.array_equal(lin.qzeros, p.to_format("v2").qzeros)
            assert np.array_equal(lin.zeros(), unpack_qzeros(p.qzeros, p.fmt))
            assert np.array_equal(lin.group_index(), p.g_idx)
            assert (lin.g_idx is not None) == (name == W_NAME and act_order)
            assert np.array_equal(lin.dequantize(), p.dequantize())
        # what `lamina bench` reports as params: the two linears' weights, not their packing
        assert model_weight_count(g) == a.in_features * a.out_features + 48 * 16

    # gguf-py parses the file independently and sees the same tensors
    r = gguf.GGUFReader(path)
    got = {t.name: (t.tensor_type, tuple(int(d) for d in t.shape)) for t in r.tensors}
    n = gptq_tensor_names(W_NAME)
    assert got[n["qweight"]] == (gguf.GGMLQuantizationType.I32, (a.out_features, a.in_features // 8))
    assert got[n["scales"]] == (gguf.GGMLQuantizationType.F16, (a.out_features, a.n_groups))
    assert got[n["qzeros"]] == (gguf.GGMLQuantizationType.I32, (a.out_features // 8, a.n_groups))
    qw = next(t for t in r.tensors if t.name == n["qweight"])
    assert np.array_equal(np.asarray(qw.data).reshape(a.qweight.shape), a.qweight)
    assert r.fields[GPTQ_KEYS.GROUP_SIZE].contents() == (0 if group_size == -1 else group_size)


def test_plain_tensor_reads_as_none_and_missing_is_typed(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": np.zeros((16, 32), np.float32), **parts(linear())})
    with GGUFFile(path) as g:
        assert read_gptq_linear(g, "blk.0.ffn_up.weight") is None
        assert read_gptq_linear(g, W_NAME) is not None
        with pytest.raises(GGUFMissingTensorError, match="blk.0.ffn_down.weight"):
            read_gptq_linear(g, "blk.0.ffn_down.weight")


def test_file_without_gptq_keys(tmp_path: Path) -> None:
    path = raw_file(
        tmp_path / "m.gguf",
        {"blk.0.ffn_up.weight": np.zeros((16, 32), np.float32)},
        {
            k: None
            for k in (
                GPTQ_KEYS.VERSION,
                GPTQ_KEYS.BITS,
                GPTQ_KEYS.GROUP_SIZE,
                GPTQ_KEYS.SYM,
                GPTQ_KEYS.DESC_ACT,
                GPTQ_KEYS.SOURCE,
            )
        },
    )
    with GGUFFile(path) as g:
        assert gptq_file_config(g) is None


# -- bad files ----------------------------------------------------------------------


def _bad_parts(change) -> dict[str, np.ndarray]:
    p = parts(linear(), g_idx=True)
    change(p)
    return p


n = gptq_tensor_names(W_NAME)
BAD_TENSORS = {
    "qweight-f32": (
        lambda p: p.__setitem__(n["qweight"], p[n["qweight"]].astype(np.float32)),
        r"attn_q\.qweight': must be I32, found F32",
    ),
    "scales-f32": (
        lambda p: p.__setitem__(n["scales"], p[n["scales"]].astype(np.float32)),
        r"attn_q\.scales': must be F16, found F32",
    ),
    "scales-shape": (
        lambda p: p.__setitem__(n["scales"], p[n["scales"]][:, :40]),
        r"attn_q\.scales': must be \[n_groups, 48\] for qweight \(12, 48\), found \(3, 40\)",
    ),
    "qzeros-shape": (
        lambda p: p.__setitem__(n["qzeros"], p[n["qzeros"]][:2]),
        r"attn_q\.qzeros': must be \[3, 6\] for scales \(3, 48\), found \(2, 6\)",
    ),
    "groups-vs-key": (
        lambda p: (
            p.__setitem__(n["scales"], p[n["scales"]][:2]),
            p.__setitem__(n["qzeros"], p[n["qzeros"]][:2]),
            p.__setitem__(n["g_idx"], np.minimum(p[n["g_idx"]], 1)),
        ),
        r"attn_q\.scales': has 2 groups; lamina\.gptq\.group_size=32 and n_in=96 .* imply 3",
    ),
    "g_idx-range": (
        lambda p: p[n["g_idx"]].__setitem__(7, 3),
        r"attn_q\.g_idx': values must be in \[0, 3\), found 3 at input 7",
    ),
    "g_idx-negative": (
        lambda p: p[n["g_idx"]].__setitem__(0, -1),
        r"attn_q\.g_idx': values must be in \[0, 3\), found -1 at input 0",
    ),
    "g_idx-length": (
        lambda p: p.__setitem__(n["g_idx"], p[n["g_idx"]][:64]),
        r"attn_q\.g_idx': must be \[96\] .*found \(64,\)",
    ),
    "g_idx-2d": (
        lambda p: p.__setitem__(n["g_idx"], p[n["g_idx"]].reshape(12, 8)),
        r"attn_q\.g_idx': must be 1-D, found shape \(12, 8\)",
    ),
    "missing-qzeros": (lambda p: p.pop(n["qzeros"]), r"attn_q\.qzeros': GPTQ tensor is missing"),
    "also-dense": (
        lambda p: p.__setitem__(W_NAME, np.zeros((48, 96), np.float32)),
        r"also holds the plain tensor 'blk\.0\.attn_q\.weight'",
    ),
    "nan-scale": (
        lambda p: p.__setitem__(n["scales"], np.where(np.arange(48) == 5, np.float16(np.nan), p[n["scales"]])),
        r"attn_q\.scales': holds a NaN/Inf scale at group 0, output 5",
    ),
    "n_out-not-8": (
        lambda p: (
            p.__setitem__(n["qweight"], p[n["qweight"]][:, :44]),
            p.__setitem__(n["scales"], p[n["scales"]][:, :44]),
        ),
        r"attn_q\.qweight': n_out=44 must be a multiple of 8",
    ),
}


@pytest.mark.parametrize("case", BAD_TENSORS)
def test_bad_tensors(case: str, tmp_path: Path) -> None:
    change, match = BAD_TENSORS[case]
    path = raw_file(tmp_path / "m.gguf", _bad_parts(change))
    with GGUFFile(path) as g, pytest.raises(GPTQFormatError, match=match) as e:
        read_gptq_linear(g, W_NAME)
    assert isinstance(e.value, GGUFError) and str(path) in str(e.value)


BAD_KEYS = {
    "no-version": ({GPTQ_KEYS.VERSION: None}, r"key 'lamina\.gptq\.version': required GPTQ key is missing"),
    "version-2": ({GPTQ_KEYS.VERSION: 2}, r"GPTQ format version 2 is not supported: expected 1"),
    "bits-8": ({GPTQ_KEYS.BITS: 8}, r"key 'lamina\.gptq\.bits': GPTQ bits=8 is not supported: expected 4"),
    "bits-as-int32": ({GPTQ_KEYS.BITS: (4, gguf.GGUFValueType.INT32)}, r"must be UINT32, found INT32"),
    "sym-as-uint": ({GPTQ_KEYS.SYM: (1, gguf.GGUFValueType.UINT8)}, r"lamina\.gptq\.sym': must be BOOL, found UINT8"),
    "unknown-key": ({"lamina.gptq.order": "x"}, r"lamina\.gptq\.order': unknown GPTQ key"),
    "no-keys-at-all": (
        {
            k: None
            for k in (
                GPTQ_KEYS.VERSION,
                GPTQ_KEYS.BITS,
                GPTQ_KEYS.GROUP_SIZE,
                GPTQ_KEYS.SYM,
                GPTQ_KEYS.DESC_ACT,
                GPTQ_KEYS.SOURCE,
            )
        },
        r"attn_q\.qweight': the file has GPTQ tensors but no lamina\.gptq\.version",
    ),
}


@pytest.mark.parametrize("case", BAD_KEYS)
def test_bad_keys(case: str, tmp_path: Path) -> None:
    keys, match = BAD_KEYS[case]
    path = raw_file(tmp_path / "m.gguf", parts(linear()), keys)
    with GGUFFile(path) as g, pytest.raises(GPTQFormatError, match=match):
        read_gptq_linear(g, W_NAME)


# -- writer checks -----------------------------------------------------------------


def test_writer_refuses_a_linear_that_differs_from_its_plan(tmp_path: Path) -> None:
    b = linear(n_out=16, n_in=48)
    tensors = gptq_job_tensors(W_NAME, lambda: b, 32, n_in=48, n_out=24, n_groups=b.n_groups, with_g_idx=False)
    out = tmp_path / "m.gguf"
    with pytest.raises(GPTQLayoutError, match="differs from the planned one"):
        write(out, tensors)
    assert list(tmp_path.iterdir()) == []  # atomic: no file, no temp file


def test_writer_refuses_groups_that_disagree_with_group_size() -> None:
    with pytest.raises(GPTQLayoutError, match=r"scales hold 3 groups; group_size=64 and n_in=96 imply 2"):
        gptq_job_tensors(W_NAME, linear(group_size=32), 64)


def test_q4_0_repack_is_exact_and_refuses_what_is_not() -> None:
    p = linear(sym=True, group_size=64, n_in=128)
    q = repack_q4_0(W_NAME, p, 64)
    assert q.shape == (48, 128 // 32 * 18)
    assert np.array_equal(dequantize(q, "Q4_0").reshape(48, 128).view(np.uint32), p.dequantize().view(np.uint32))
    theirs = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q4_0)
    assert np.array_equal(theirs, p.dequantize())
    with pytest.raises(GPTQLayoutError, match="zero point .* is not 8"):
        repack_q4_0(W_NAME, linear(sym=False, group_size=32), 32)
    assert "asymmetric" in q4_0_problem(False, 32, 128)
    assert "not a multiple of the Q4_0 block size" in q4_0_problem(True, 48, 96)
    assert "n_in=80" in q4_0_problem(True, -1, 80)
    assert "permuted" in q4_0_problem(True, 32, 96, g_idx=np.arange(96)[::-1] // 32)
    assert q4_0_problem(True, -1, 96) is None
