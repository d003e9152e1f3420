"""bin/inspect as a user runs it: tables, --json, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.gguf_builders import gguf_bytes, good_raw_parts, write_bytes, write_sample_gguf
from support.paths import REPO

INSPECT = REPO / "bin" / "inspect"


def run_inspect(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH: the launcher must find the checkout by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(INSPECT), *map(str, args)], capture_output=True, text=True, env=env, timeout=60
    )


def test_launcher_is_executable() -> None:
    assert os.access(INSPECT, os.X_OK)
    assert INSPECT.read_text().startswith("#!/usr/bin/env python3\n")


def test_tables(tmp_path: Path) -> None:
    result = run_inspect(write_sample_gguf(tmp_path / "s.gguf"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("q4_k.2d", "q8_0.2d", "f32.4d", "tokenizer.ggml.tokens", "test.string", "Q6_K"):
        assert name in out
    assert "(100 items)" in out and "tok99" not in out  # long arrays summarized
    assert "[INST]" in out  # kept literally, not eaten as rich markup
    assert "total: 9 tensors" in out and "bits per weight" in out


def test_json(tmp_path: Path) -> None:
    result = run_inspect(write_sample_gguf(tmp_path / "s.gguf"), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["version"] == 3 and doc["alignment"] == 32
    assert doc["metadata"]["general.architecture"] == {"type": "STRING", "value": "llama"}
    tokens = doc["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["length"] == 100 and tokens["truncated"] and len(tokens["values"]) == 8
    assert tokens["element_type"] == "STRING"
    by_name = {t["name"]: t for t in doc["tensors"]}
    q4k = by_name["q4_k.2d"]
    assert q4k["type"] == "Q4_K" and q4k["ne"] == [256, 2] and q4k["shape"] == [2, 256]
    assert q4k["nbytes"] == 288 and q4k["bits_per_weight"] == 4.5
    totals = doc["totals"]
    assert totals["tensors"] == len(doc["tensors"]) == 9
    assert totals["parameters"] == sum(t["n_elements"] for t in doc["tensors"])
    assert totals["bytes"] == sum(t["nbytes"] for t in doc["tensors"])
    assert totals["by_type"]["F32"]["tensors"] == 3


def assert_one_line_error(result: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for m in mentions:
        assert m in lines[0]


def test_corrupt_file(tmp_path: Path) -> None:
    kvs, infos, data = good_raw_parts()
    path = write_bytes(tmp_path / "bad.gguf", gguf_bytes(kvs, infos, data, n_tensors=2**62))
    assert_one_line_error(run_inspect(path), str(path), "tensor count")
    assert_one_line_error(run_inspect(path, "--json"), str(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    assert_one_line_error(run_inspect(missing), str(missing), "No such file")
    assert_one_line_error(run_inspect(tmp_path), str(tmp_path))
