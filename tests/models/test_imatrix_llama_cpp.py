"""`lamina imatrix` and `--imatrix` against llama.cpp's own tools on SmolLM2-135M.

Oracles: llama-imatrix and llama-quantize, built from the vendored llama.cpp
by tools/build_llama_cpp.sh (tools/test.sh builds them once into the cache).
Both engines run SmolLM2-135M-Instruct Q4_1 over the same text, chunk size
(128) and chunk count (4):

- the files list the same weights with the same counts and metadata;
- the sums agree within bounds the engines' float orders explain: layer 0's
  attention input is the same dequantized embedding row through the same
  RMS norm, so those sums match to float rounding (measured: equal); deeper
  layers drift as each engine's activation rounding propagates (measured
  per-tensor relative L1 error: median 1.5e-3, worst 1.2e-2, on ffn_down and
  attn_output of the last third). The bounds (median 4e-3, worst 3e-2) fail
  for an imatrix whose chunks start one token off (median 1.5e-2, worst 0.10);
- llama-quantize --imatrix and `lamina quantize --imatrix` write the same
  bytes, whichever engine computed the imatrix (so each loads the other's);
- llama-imatrix's legacy .dat gives the importance its GGUF gives;
- on a tiny random qwen3moe (llama.cpp's conversion of tests/support/tiny_hf.py's
  checkpoint, a real tokenizer): the same per-expert counts (the routing
  agrees), sums within 1e-4 (measured 1.5e-5), and --pure Q4_0 with that
  imatrix byte-equal to llama-quantize's (each expert's rows get its own
  importance row). (Its default mixes differ from llama-quantize's for
  8-expert models with or without an imatrix: recipes.py ports the dense
  rules only.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.cli import convert as convert_cli
from lamina.convert.cli import imatrix as imatrix_cli
from lamina.convert.cli import quantize as quantize_cli
from lamina.convert.imatrix.format import read_imatrix, write_imatrix_legacy
from lamina.model_cache import fetch_model
from support.hf_checkpoints import hf_checkpoint
from support.llama_cpp_ref import llama_cpp_tool, reference_gguf
from support.paths import DATA
from support.tiny_hf import tiny_hf_checkpoint

SMOL = "smollm2-135m-instruct"
TEXT = DATA / "alice29.txt"
ARGS = ["-c", "128", "--chunks", "4", "-t", "2"]


def _tool(name: str) -> Path:
    exe = llama_cpp_tool(name)
    if exe is None:
        pytest.skip(f"llama.cpp's {name} is not built (tools/build_llama_cpp.sh {name}; tools/test.sh does it)")
    return exe


def _run(cmd: list[str]) -> None:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd[0]} failed: {r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    exe = _tool("llama-imatrix")
    d = tmp_path_factory.mktemp("imatrix")
    model = fetch_model(SMOL)
    out = {"llama": d / "llama.gguf", "lamina": d / "lamina.gguf", "dat": d / "llama.dat"}
    _run([exe, "-m", model, "-f", TEXT, *ARGS, "--no-ppl", "-o", out["llama"]])
    _run([exe, "-m", model, "--in-file", out["llama"], "-c", "128", "--output-format", "dat", "-o", out["dat"]])
    assert imatrix_cli.main(["-m", str(model), "-f", str(TEXT), *ARGS, "-o", str(out["lamina"])]) == 0
    return out


def test_same_weights_counts_and_metadata(files) -> None:
    ours, theirs = read_imatrix(files["lamina"]), read_imatrix(files["llama"])
    assert len(theirs.entries) == 30 * 7  # attn q/k/v/output, ffn gate/up/down; no output head
    assert list(ours.entries) == list(theirs.entries)
    for name, e in theirs.entries.items():
        assert ours.entries[name].counts.tolist() == e.counts.tolist() == [4 * 128], name
        assert ours.entries[name].sums.shape == e.sums.shape, name
    assert (ours.datasets, ours.chunk_count, ours.chunk_size) == (theirs.datasets, 4, 128)
    assert ours.datasets == [str(TEXT)]


def test_sums_close_to_llama_imatrix(files) -> None:
    ours, theirs = read_imatrix(files["lamina"]), read_imatrix(files["llama"])
    errors = {}
    for name, e in theirs.entries.items():
        a, b = ours.entries[name].sums.astype(np.float64), e.sums.astype(np.float64)
        errors[name] = np.abs(a - b).sum() / np.abs(b).sum()
    assert errors["blk.0.attn_q.weight"] <= 1e-6
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= 3e-2, f"{worst}: relative L1 error {errors[worst]:.3g}"
    assert float(np.median(list(errors.values()))) <= 4e-3


def test_legacy_dat_written_as_llama_imatrix_writes_it(files, tmp_path: Path) -> None:
    """llama-imatrix's --output-format dat of its own GGUF, byte for byte."""
    write_imatrix_legacy(tmp_path / "ours.dat", read_imatrix(files["llama"]))
    assert (tmp_path / "ours.dat").read_bytes() == files["dat"].read_bytes()


def test_micro_batch_rule_as_llama_imatrix(tmp_path: Path) -> None:
    """5 chunks of 206 side by side: llama.cpp cuts 102 + 102 + 2 tokens of
    each, and the last micro-batch (10 rows) is left out of the dense sums:
    counts 5 * 204, chunk_count 1020 // 206 = 4, on both sides."""
    exe, model = _tool("llama-imatrix"), fetch_model(SMOL)
    args = ["-c", "206", "--chunks", "5", "-t", "2"]
    _run([exe, "-m", model, "-f", TEXT, *args, "--no-ppl", "-o", tmp_path / "llama.gguf"])
    assert imatrix_cli.main(["-m", str(model), "-f", str(TEXT), *args, "-o", str(tmp_path / "lamina.gguf")]) == 0
    ours, theirs = read_imatrix(tmp_path / "lamina.gguf"), read_imatrix(tmp_path / "llama.gguf")
    assert list(ours.entries) == list(theirs.entries) and (ours.chunk_count, theirs.chunk_count) == (4, 4)
    for name, e in theirs.entries.items():
        assert ours.entries[name].counts.tolist() == e.counts.tolist() == [5 * 204], name
        a, b = ours.entries[name].sums.astype(np.float64), e.sums.astype(np.float64)
        assert np.abs(a - b).sum() <= 3e-2 * np.abs(b).sum(), name


def test_legacy_dat_gives_the_same_importance(files) -> None:
    dat, ref = read_imatrix(files["dat"]), read_imatrix(files["llama"])
    assert dat.legacy and set(dat.entries) == set(ref.entries) and dat.chunk_count == 4
    for name in ref.entries:
        np.testing.assert_allclose(dat.importance(name), ref.importance(name), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("source,mix", [("lamina", "q4_k_m"), ("llama", "q4_0")])
def test_quantize_with_imatrix_byte_equal_to_llama_quantize(files, tmp_path: Path, source: str, mix: str) -> None:
    """q4_0 also covers llama-quantize's imatrix-only rule (the first eighth of
    ffn_down goes Q4_1)."""
    exe = _tool("llama-quantize")
    f16 = reference_gguf(SMOL, hf_checkpoint(SMOL), "f16")
    im = str(files[source])
    theirs, ours = tmp_path / "theirs.gguf", tmp_path / "ours.gguf"
    _run([exe, "--imatrix", im, f16, theirs, mix.upper(), "2"])
    assert quantize_cli.main([str(f16), str(ours), mix, "--imatrix", im, "--threads", "2", "--quiet"]) == 0
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    exe = _tool("llama-imatrix")
    d = tmp_path_factory.mktemp("moe")
    model = reference_gguf("tiny-qwen3_moe", tiny_hf_checkpoint("qwen3_moe", d / "hf"), "f32")
    out = {"model": model, "hf": d / "hf", "llama": d / "llama.gguf", "lamina": d / "lamina.gguf"}
    _run([exe, "-m", model, "-f", TEXT, *ARGS, "--no-ppl", "-o", out["llama"]])
    assert imatrix_cli.main(["-m", str(model), "-f", str(TEXT), *ARGS, "-o", str(out["lamina"])]) == 0
    return out


def test_moe_per_expert_sums_and_counts(moe) -> None:
    ours, theirs = read_imatrix(moe["lamina"]), read_imatrix(moe["llama"])
    assert list(ours.entries) == list(theirs.entries)
    experts = [n for n in theirs.entries if "_exps" in n]
    assert len(experts) == 3 * 4 and "blk.0.ffn_gate_inp.weight" in theirs.entries
    for name, e in theirs.entries.items():
        assert ours.entries[name].counts.tolist() == e.counts.tolist(), name
        a, b = ours.entries[name].sums.astype(np.float64), e.sums.astype(np.float64)
        assert a.shape == b.shape and np.abs(a - b).sum() <= 1e-4 * np.abs(b).sum(), name
    assert theirs.entries["blk.0.ffn_down_exps.weight"].counts.sum() == 2 * 4 * 128  # 2 experts a token


def test_moe_quantize_pure_with_imatrix_byte_equal(moe, tmp_path: Path) -> None:
    exe = _tool("llama-quantize")
    im = str(moe["lamina"])
    theirs, ours, plain = tmp_path / "theirs.gguf", tmp_path / "ours.gguf", tmp_path / "plain.gguf"
    _run([exe, "--pure", "--imatrix", im, moe["model"], theirs, "Q4_0", "2"])
    args = [str(moe["model"]), str(ours), "q4_0", "--pure", "--threads", "2", "--quiet"]
    assert quantize_cli.main([*args, "--imatrix", im]) == 0
    assert ours.read_bytes() == theirs.read_bytes()
    assert quantize_cli.main([str(moe["model"]), str(plain), "q4_0", "--pure", "--threads", "2", "--quiet"]) == 0
    assert plain.stat().st_size != ours.stat().st_size or plain.read_bytes() != ours.read_bytes()
    # and straight from the checkpoint: llama.cpp's converter + llama-quantize --imatrix in one step
    converted = tmp_path / "converted.gguf"
    args = [str(moe["hf"]), "-o", str(converted), "--q4_0", "--pure", "--imatrix", im, "--threads", "2", "--quiet"]
    assert convert_cli.main(args) == 0
    assert converted.read_bytes() == theirs.read_bytes()


def test_moe_process_output(moe, tmp_path: Path) -> None:
    """--process-output adds output.weight (this model's head is its own
    tensor; SmolLM2's is its token embedding, and neither tool collects it)."""
    exe = _tool("llama-imatrix")
    args = ["-c", "128", "--chunks", "2", "-t", "2", "--process-output"]
    _run([exe, "-m", moe["model"], "-f", TEXT, *args, "--no-ppl", "-o", tmp_path / "llama.gguf"])
    assert imatrix_cli.main(["-m", str(moe["model"]), "-f", str(TEXT), *args, "-o", str(tmp_path / "lamina.gguf")]) == 0
    ours, theirs = read_imatrix(tmp_path / "lamina.gguf"), read_imatrix(tmp_path / "llama.gguf")
    assert list(ours.entries) == list(theirs.entries) and "output.weight" in theirs.entries
    a, b = ours.entries["output.weight"], theirs.entries["output.weight"]
    assert a.counts.tolist() == b.counts.tolist() == [256]
    assert np.abs(a.sums - b.sums).sum() <= 1e-4 * np.abs(b.sums).sum()
