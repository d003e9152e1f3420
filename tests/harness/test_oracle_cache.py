"""The cache of oracle outputs (tests/support/oracle_cache.py) that the
llama.cpp and transformers comparisons read on warm runs: a stale entry would
let a comparison pass against the wrong reference, so every input that
changes the oracle's output must change the key, and a folder rebuilt
elsewhere with the same bytes must not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support import oracle_cache
from support.oracle_cache import cached_array, cached_file, oracle_key
from support.publish import publish_dir


def _checkpoint(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "sub").mkdir()
    (folder / "sub" / "model.safetensors").write_bytes(weights)
    return folder


def test_key_follows_bytes_and_name_not_the_parent_folder(tmp_path: Path):
    a = _checkpoint(tmp_path / "run1" / "tiny-llama", b"\x00" * 64)
    b = _checkpoint(tmp_path / "run2" / "tiny-llama", b"\x00" * 64)
    assert oracle_key("v1", a, "f32") == oracle_key("v1", b, "f32")  # rebuilt in another temp folder
    renamed = _checkpoint(tmp_path / "run3" / "tiny-qwen2", b"\x00" * 64)
    assert oracle_key("v1", renamed, "f32") != oracle_key("v1", a, "f32")  # llama.cpp names models after folders
    changed = _checkpoint(tmp_path / "run4" / "tiny-llama", b"\x00" * 63 + b"\x01")
    assert oracle_key("v1", changed, "f32") != oracle_key("v1", a, "f32")
    assert oracle_key("v2", a, "f32") != oracle_key("v1", a, "f32")  # the oracle's version
    assert oracle_key("v1", a, "f16") != oracle_key("v1", a, "f32")  # its arguments
    assert oracle_key([1, 2, 3]) != oracle_key([1, 2, 4])


def test_a_file_changed_in_place_gets_a_new_key(tmp_path: Path):
    f = tmp_path / "w.gguf"
    f.write_bytes(b"a" * 100)
    before = oracle_key(f)
    f.write_bytes(b"b" * 101)
    assert oracle_key(f) != before


def test_outputs_are_made_once_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(oracle_cache, "cache_dir", lambda: tmp_path / "cache")
    calls = []

    def make(path: Path) -> None:
        calls.append(path)
        path.write_bytes(b"out")

    first = cached_file("convert", "m.gguf", "k1", make)
    assert cached_file("convert", "m.gguf", "k1", make) == first and len(calls) == 1
    assert cached_file("convert", "m.gguf", "k2", make) != first and len(calls) == 2
    assert not list(first.parent.glob("*.partial"))
    got = cached_array("logits", "k3", lambda: np.arange(6, dtype=np.float32).reshape(2, 3))
    again = cached_array("logits", "k3", lambda: pytest.fail("computed twice"))
    assert np.array_equal(got, again) and again.dtype == np.float32


def test_a_failed_oracle_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(oracle_cache, "cache_dir", lambda: tmp_path / "cache")

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("converter failed")

    with pytest.raises(RuntimeError):
        cached_file("convert", "m.gguf", "k", broken)
    assert not any((tmp_path / "cache").rglob("*.gguf*"))


def test_publish_keeps_the_first_finished_folder(tmp_path: Path):
    target = tmp_path / "hf" / "model"
    target.parent.mkdir()
    mine = _checkpoint(tmp_path / "a", b"first")
    publish_dir(mine, target, "config.json")
    theirs = _checkpoint(tmp_path / "b", b"second")
    publish_dir(theirs, target, "config.json")  # another worker finished the same build later
    assert (target / "sub" / "model.safetensors").read_bytes() == b"first"
    assert not theirs.exists()
    half = tmp_path / "hf" / "half"
    half.mkdir()
    (half / "partial.bin").write_bytes(b"x")
    with pytest.raises(OSError):  # a folder there that is not complete is not silently accepted
        publish_dir(_checkpoint(tmp_path / "c", b"third"), half, "config.json")
