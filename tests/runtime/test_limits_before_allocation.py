"""Sizes a file lies about are refused before anything is allocated: 1 KB
files claiming a 2^60-element tensor, a 2^40-element array, 2^62 keys, a
2^60-byte string or 2^32 layers each end in a typed error naming the file in
milliseconds, and the peak RSS of a child process that opens them all stays
where it was after its imports (resource.getrusage's ru_maxrss)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

from support.gguf_builders import gguf_bytes, gguf_str, good_raw_parts, kv, kv_array, kv_string, tensor_info

CHILD = r"""
import json, resource, sys, time
from lamina.engine.loader import load_model
from lamina.errors import GGUFError
from lamina.gguf.reader import GGUFFile

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# warm every code path on a good file first, so the baseline holds what imports and first calls take
with GGUFFile(sys.argv[1]) as f:
    load_model(f).close()
base = peak_mb()
out = {}
for path in sys.argv[2:]:
    t0 = time.perf_counter()
    try:
        with GGUFFile(path) as f:
            load_model(f).close()
        error = None
    except GGUFError as e:
        error = f"{type(e).__name__}: {e}"
    out[path] = {"seconds": time.perf_counter() - t0, "error": error}
print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "files": out}))
"""


def _lies() -> dict[str, bytes]:
    kvs, infos, data = good_raw_parts()
    arch = [kv_string("general.architecture", "llama")]
    return {
        "tensor of 2^60 elements": gguf_bytes(kvs, [tensor_info("a", [2**30, 2**30], T.F32, 0)], data),
        "Q4_0 tensor of 2^40 rows": gguf_bytes(kvs, [tensor_info("a", [32, 2**40], T.Q4_0, 0)], data),
        "u32 array of 2^40": gguf_bytes([*arch, kv_array("a", V.UINT32, 2**40, b"\0" * 64)], infos, data),
        "string array of 2^40": gguf_bytes([*arch, kv_array("a", V.STRING, 2**40, gguf_str("x") * 8)], infos, data),
        "string of 2^60 bytes": gguf_bytes([*arch, kv("s", V.STRING, gguf_str("x", 2**60))], infos, data),
        "2^62 keys": gguf_bytes(kvs, infos, data, n_kv=2**62),
        "2^62 tensors": gguf_bytes(kvs, infos, data, n_tensors=2**62),
        "n_dims 2^32-1": gguf_bytes(kvs, [tensor_info("a", [8], T.F32, 0, n_dims=2**32 - 1)], data),
    }


def _tiny_with_block_count(path: Path, good: Path, count: int) -> Path:
    raw = bytearray(good.read_bytes())
    key = b"llama.block_count"
    at = raw.find(key) + len(key)
    assert struct.unpack_from("<I", raw, at)[0] == V.UINT32
    struct.pack_into("<I", raw, at + 4, count)
    path.write_bytes(bytes(raw))
    return path


def test_lying_sizes_are_refused_in_milliseconds_without_allocating(tmp_path: Path) -> None:
    good = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "gguf" / "tiny-llama-q8_0"
    files = {name: tmp_path / f"lie{i}.gguf" for i, name in enumerate(_lies())}
    for name, blob in _lies().items():
        assert len(blob) < 1024, name
        files[name].write_bytes(blob)
    files["block_count 2^32-1"] = _tiny_with_block_count(tmp_path / "layers.gguf", good, 2**32 - 1)
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(good), *map(str, files.values())], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    for name, path in files.items():
        result = report["files"][str(path)]
        assert result["error"] is not None and str(path) in result["error"], (name, result)
        assert result["seconds"] < 0.05, (name, result)
    assert report["peak_mb"] - report["base_mb"] < 16, report
    assert "block_count 4294967295 is more layers than the file has tensors" in str(report)
