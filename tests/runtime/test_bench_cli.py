"""`lamina bench` as llama-bench's users read it: the tests asked for (depths
included), llama-bench's JSON fields plus the median, and the bandwidth
bound of decode. Speeds are never asserted, only what is reported."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lamina.cli import bench
from lamina.engine.decode_bytes import decode_bytes, kv_bytes_per_token
from lamina.engine.loader import read_hparams
from lamina.gguf.reader import GGUFFile
from support.tiny_models import GEMMA3, LLAMA


def test_depths_give_one_record_per_test_and_depth(tiny, capsys):
    path = tiny(LLAMA)
    assert bench.main(["-m", str(path), "-p", "8", "-n", "4", "-d", "0,16", "-r", "2", "-t", "1", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    got = [(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in records]
    assert got == [(8, 0, 0), (0, 4, 0), (8, 0, 16), (0, 4, 16)]
    for r in records:
        assert len(r["samples_ts"]) == 2
        assert min(r["samples_ts"]) <= r["median_ts"] <= max(r["samples_ts"])


def test_table_names_tests_like_llama_bench_and_shows_the_bound(tiny, capsys):
    path = tiny(LLAMA)
    assert bench.main(["-m", str(path), "-p", "8", "-n", "4", "-d", "16", "-r", "1", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert "pp8 @ d16" in out and "tg4 @ d16" in out
    assert "bandwidth bound" in out and "t/s, at" in out


def test_every_model_given_is_benched_in_turn(tiny, capsys):
    """-m twice benches both, as llama-bench does (not only the last one)"""
    paths = [str(tiny(LLAMA)), str(tiny(GEMMA3))]
    assert bench.main(["-m", paths[0], "-m", paths[1], "-p", "8", "-n", "4", "-r", "1", "-t", "1", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["model_filename"], r["n_prompt"], r["n_gen"]) for r in records] == [
        (p, n_prompt, n_gen) for p in paths for n_prompt, n_gen in ((8, 0), (0, 4))
    ]
    assert bench.main(["-m", paths[0], "-m", paths[1], "-p", "8", "-n", "0", "-r", "1", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("pp8") == 2 and f"== {paths[0]}" in out and f"== {paths[1]}" in out


@pytest.mark.parametrize("bad", ["-1", "x", "4,,8"])
def test_bad_depths_are_one_line_errors(tiny, capsys, bad):
    assert bench.main(["-m", str(tiny(LLAMA)), "-d", bad, "-r", "1"]) != 0
    assert "-d/--n-depth" in capsys.readouterr().err


def test_decode_bytes_count_weights_once_and_the_keys_a_token_reads(tiny):
    cfg = replace(GEMMA3, n_layer=4)  # sliding-window layers and global ones
    path = tiny(cfg)
    with GGUFFile(path) as g:
        hp = read_hparams(g)
        weights = sum(t.nbytes for t in g.tensors)
        embd = next(t for t in g.tensors if t.name == "token_embd.weight")
    row = 2 * hp.kv_dim  # f16
    window = [L.sliding_window for L in hp.layers]
    assert any(window) and not all(window)
    at = 100
    want_keys = sum(min(at + 1, w) if w else at + 1 for w in window)
    assert kv_bytes_per_token(hp, at) == 2 * row * want_keys
    # tied output head: the whole embedding is read (by the head)
    assert hp.tied_output
    assert decode_bytes(str(path), at, 1) == weights + 2 * row * want_keys
    assert embd.nbytes < weights


def test_an_untied_model_reads_one_embedding_row_a_token(tiny):
    path = tiny(LLAMA)
    with GGUFFile(path) as g:
        hp = read_hparams(g)
        weights = sum(t.nbytes for t in g.tensors)
        embd = next(t for t in g.tensors if t.name == "token_embd.weight")
    assert not hp.tied_output
    kv = 2 * 2 * hp.kv_dim * hp.n_layer  # position 0: one key and one value row a layer
    assert decode_bytes(str(path), 0, 1) == weights - embd.nbytes + embd.nbytes // hp.n_vocab + kv
