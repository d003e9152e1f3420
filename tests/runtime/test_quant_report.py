"""bin/quant-report: per-tensor error of one GGUF against another."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize

from lamina.cli.quant_report import build_report, main
from lamina.convert.gptq.algorithm import GPTQConfig, quantize_rtn
from lamina.gptq.pack import pack_result
from support.paths import REPO

ROOT = REPO


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, T | None]], meta: dict[str, str] | None = None):
    w = GGUFWriter(path, arch="llama")
    for k, v in (meta or {}).items():
        w.add_string(k, v)
    for name, (arr, raw) in tensors.items():
        if raw is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture()
def weights():
    rng = np.random.default_rng(0)
    return {
        "token_embd.weight": rng.standard_normal((64, 128), dtype=np.float32),
        "blk.0.ffn_up.weight": (rng.standard_normal((96, 64)) * 0.02).astype(np.float32),
        "output_norm.weight": rng.uniform(0.5, 1.5, 128).astype(np.float32),
    }


@pytest.fixture()
def pair(tmp_path, weights):
    a = write_gguf(tmp_path / "a.gguf", {n: (w, None) for n, w in weights.items()})
    b_tensors = {}
    for n, w in weights.items():
        if w.ndim == 2:
            b_tensors[n] = (quantize(w, T.Q8_0), T.Q8_0)
        else:
            b_tensors[n] = (w, None)  # norms stay F32, as converters do
    b = write_gguf(tmp_path / "b.gguf", b_tensors)
    return a, b


def test_q8_0_against_f32(pair, weights):
    a, b = pair
    rep = build_report(str(a), str(b))
    assert rep.ok and not rep.only_in_a and not rep.only_in_b
    rows = {r.name: r for r in rep.rows}
    assert set(rows) == set(weights)
    for name, w in weights.items():
        r = rows[name]
        if w.ndim == 1:
            assert r.type_b == "F32" and r.rmse == 0 and r.max_abs == 0 and r.rel_err == 0
            continue
        assert (r.type_a, r.type_b) == ("F32", "Q8_0")
        assert r.bpw_a == 32 and r.bpw_b == 8.5
        deq = dequantize(quantize(w, T.Q8_0), T.Q8_0).reshape(w.shape)
        d = deq.astype(np.float64) - w
        assert r.rmse == pytest.approx(np.sqrt(np.mean(d * d)), rel=1e-9)
        assert r.max_abs == pytest.approx(np.max(np.abs(d)), rel=1e-9)
        # Q8_0: step d = amax/127 per block of 32, error ~ uniform in +-d/2
        blocks = w.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1) / 127
        assert r.max_abs <= step.max() / 2 * 1.01
        assert r.rmse == pytest.approx(np.sqrt(np.mean(step**2) / 12), rel=0.1)
        assert 0.002 < r.rel_err < 0.01
    t = rep.totals()
    n2d = sum(w.size for w in weights.values() if w.ndim == 2)
    assert t["n_elements"] == sum(w.size for w in weights.values())
    assert t["bpw_a"] == 32
    assert t["bpw_b"] == pytest.approx((8.5 * n2d + 32 * 128) / t["n_elements"])


def test_cli_json_and_table(pair):
    a, b = pair
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "quant-report", str(a), str(b), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and len(doc["tensors"]) == 3
    assert {"rmse", "max_abs", "rel_err", "bpw_a", "bpw_b", "type_a", "type_b"} <= set(doc["tensors"][0])
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "quant-report", str(a), str(b)], capture_output=True, text=True, check=True
    )
    assert "blk.0.ffn_up.weight" in out.stdout and "Q8_0" in out.stdout
    assert "relative error" in out.stdout and "8.50" in out.stdout


def test_mismatched_sets_and_shapes(tmp_path, weights):
    a = write_gguf(tmp_path / "a.gguf", {n: (w, None) for n, w in weights.items()})
    b = write_gguf(
        tmp_path / "b.gguf",
        {
            "token_embd.weight": (weights["token_embd.weight"][:32], None),  # wrong shape
            "blk.0.ffn_up.weight": (weights["blk.0.ffn_up.weight"], None),
            "blk.0.extra.weight": (np.zeros(8, dtype=np.float32), None),
        },
    )
    rep = build_report(str(a), str(b))
    assert not rep.ok
    assert rep.only_in_a == ["output_norm.weight"]
    assert rep.only_in_b == ["blk.0.extra.weight"]
    assert rep.shape_mismatches == [{"name": "token_embd.weight", "shape_a": [64, 128], "shape_b": [32, 128]}]
    assert [r.name for r in rep.rows] == ["blk.0.ffn_up.weight"]
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "quant-report", str(a), str(b)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "token_embd.weight: A [64, 128] vs B [32, 128]" in out.stdout
    assert "only in A (1)" in out.stdout and "output_norm.weight" in out.stdout
    assert "only in B (1)" in out.stdout and "blk.0.extra.weight" in out.stdout


def test_gptq_tensors_compared_with_the_weight(tmp_path, weights):
    w = weights["blk.0.ffn_up.weight"]
    res = quantize_rtn(w, GPTQConfig(group_size=32, sym=True))
    p = pack_result(res, "v2")
    a = write_gguf(tmp_path / "a.gguf", {"blk.0.ffn_up.weight": (w, None)})
    b = write_gguf(
        tmp_path / "b.gguf",
        {f"blk.0.ffn_up.{k}": (getattr(p, k), None) for k in ("qweight", "qzeros", "scales", "g_idx")},
        meta={"lamina.gptq.checkpoint_format": "gptq_v2"},
    )
    rep = build_report(str(a), str(b))
    assert rep.ok, (rep.only_in_a, rep.only_in_b)
    (r,) = rep.rows
    assert r.type_b == "GPTQ-INT4 (v2)"
    d = res.dequantize().astype(np.float64) - w
    assert r.rmse == pytest.approx(np.sqrt(np.mean(d * d)), rel=1e-6)
    # 4 bits + f16 scale and 4-bit zero per 32 weights + the g_idx int32 per column
    assert r.bpw_b == pytest.approx(4 + (16 + 4) / 32 + 32 / w.shape[0])


def test_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.gguf"), str(tmp_path / "nope2.gguf")]) == 1
    assert "nope.gguf" in capsys.readouterr().err
