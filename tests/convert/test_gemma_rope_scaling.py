"""Rope scaling of the gemma architectures, whose sliding layers make it a
per-layer matter, as llama.cpp does it, on random tiny checkpoints:

- gemma3 + YaRN (transformers 5's per-layer-type rope_parameters): only the
  global layers are scaled; the sliding ones rotate unscaled at their own
  base, as transformers' two rotary embeddings and llama.cpp (its
  rope_freq_scale_train_swa stays 1 for gemma3) both do. `lamina convert`
  writes llama.cpp's bytes; lamina's logits equal transformers' and
  llama.cpp's on the same file. The same with linear scaling (Gemma 3
  4B-27B's factor 8), on that file with its keys made linear.
- gemma2 + linear and + YaRN: llama.cpp's converter writes no rope scaling
  for gemma2 (lamina's refuses, tests/convert/test_yarn_checkpoints.py), but
  its runtime scales every layer, the sliding ones too
  (rope_freq_scale_train_swa = rope_freq_scale_train), as transformers' one
  rotary embedding does. The file is lamina's conversion of the unscaled
  checkpoint with the rope.scaling keys added by gguf-py
  (gguf_new_metadata); lamina's logits on it equal transformers' (the same
  weights, the scaling in the config) and llama.cpp's.

Positions run past a 32-position original context (4x, 40 positions) and
windows of 8, so the sliding layers' rotation shows in the logits.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import gguf
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from lamina.convert.encode import Encoder
from lamina.convert.recipes import get_mix
from lamina.engine.loader import HParams, ModelConfigError, read_hparams
from lamina.gguf.reader import GGUFFile
from support.cli_roundtrip import convert_once
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_quantize, reference_gguf
from support.rope_logits import lamina_logits, nmse, random_ids, transformers_logits
from support.tiny_hf import tiny_hf_checkpoint
from support.tiny_spm import N_PIECES, spm_vocabulary

FACTOR, ORIG_CTX = 4.0, 32
GEMMA3_ROPE = {
    "full_attention": {
        "rope_type": "yarn",
        "rope_theta": 100.0,
        "factor": FACTOR,
        "original_max_position_embeddings": ORIG_CTX,
    },
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
}
# gemma2 at its only base (llama.cpp's converter writes none for gemma2)
GEMMA2_BASE = 10000.0
GEMMA2_SCALING = {
    "linear": {"rope_type": "linear", "rope_theta": GEMMA2_BASE, "factor": FACTOR},
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": GEMMA2_BASE,
        "factor": FACTOR,
        "original_max_position_embeddings": ORIG_CTX,
    },
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """gemma3 with YaRN; gemma2 unscaled (the scaling goes into its file's keys and transformers' config);
    both with an 800-piece SentencePiece vocabulary, not Gemma's 262k tokens (1 MB files, not 68)"""
    extra = {
        "gemma3_text": {"max_position_embeddings": int(FACTOR) * ORIG_CTX, "rope_parameters": GEMMA3_ROPE},
        "gemma2": {"max_position_embeddings": int(FACTOR) * ORIG_CTX},
    }

    def build(arch: str) -> Path:
        hf = tmp_path_factory.mktemp("hf") / f"tiny-{arch}-rope"
        return spm_vocabulary(tiny_hf_checkpoint(arch, hf, extra={"vocab_size": N_PIECES} | extra[arch]))

    return functools.cache(build)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, checkpoint):
    """arch -> lamina's f32 GGUF of the checkpoint, converted once per module"""
    enc = Encoder(2)
    yield functools.cache(lambda arch: convert_once(checkpoint(arch), "f32", enc, tmp_path_factory, f"{arch}-rope"))
    enc.close()


@pytest.fixture(scope="module")
def gemma3_file(tmp_path_factory: pytest.TempPathFactory, converted):
    """kind -> lamina's gemma3 file: the YaRN conversion, or it with linear rope.scaling keys"""

    def build(kind: str) -> Path:
        src = converted("gemma3_text")
        if kind == "yarn":
            return src
        out = tmp_path_factory.mktemp("gguf") / "tiny-gemma3-linear.gguf"
        keys = {"gemma3.rope.scaling.type": MetadataDetails(gguf.GGUFValueType.STRING, "linear")}
        drop = ["gemma3.rope.scaling.original_context_length"]
        copy_with_new_metadata(gguf.GGUFReader(src), gguf.GGUFWriter(out, "gemma3"), keys, drop)
        return out

    return functools.cache(build)


def _gemma3_rope(kind: str) -> dict:
    """transformers' rope_parameters of the gemma3 file of that kind"""
    full = {"rope_type": kind, "rope_theta": 100.0, "factor": FACTOR}
    if kind == "yarn":
        full["original_max_position_embeddings"] = ORIG_CTX
    return {**GEMMA3_ROPE, "full_attention": full}


@pytest.fixture(scope="module")
def gemma2_scaled(tmp_path_factory: pytest.TempPathFactory, converted):
    """kind -> the gemma2 file with gemma2.rope.scaling.* keys of that kind added"""

    def build(kind: str) -> Path:
        src = converted("gemma2")
        out = tmp_path_factory.mktemp("gguf") / f"tiny-gemma2-{kind}.gguf"
        keys = {
            "gemma2.rope.scaling.type": MetadataDetails(gguf.GGUFValueType.STRING, kind),
            "gemma2.rope.scaling.factor": MetadataDetails(gguf.GGUFValueType.FLOAT32, FACTOR),
        }
        if kind == "yarn":
            keys["gemma2.rope.scaling.original_context_length"] = MetadataDetails(gguf.GGUFValueType.UINT32, ORIG_CTX)
        copy_with_new_metadata(gguf.GGUFReader(src), gguf.GGUFWriter(out, "gemma2"), keys, [])
        return out

    return functools.cache(build)


def _sliding_layers_changed(path: Path, **change) -> HParams:
    """the file's hparams with its sliding layers' rope changed (what llama.cpp does not do)"""
    with GGUFFile(path) as g:
        hp = read_hparams(g)
    layers = tuple(replace(lc, **change) if lc.sliding_window else lc for lc in hp.layers)
    return replace(hp, layers=layers)


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert want.std() > 0.3, "logits too flat to tell a wrong forward pass from a right one"
    err = nmse(got, want)
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"\n{what}: nmse {err:.2e}, top-1 {top1:.3f} over {len(got)} positions")
    assert err < 1e-4, err
    assert top1 >= 0.95


# -- gemma3 + YaRN / linear: the global layers only ---------------------------


@pytest.mark.parametrize("kind", ["yarn", "linear"])
def test_gemma3_scales_the_global_layers_only(kind: str, gemma3_file) -> None:
    with GGUFFile(gemma3_file(kind)) as g:
        hp = read_hparams(g)
    yarn = kind == "yarn"
    assert [lc.sliding_window > 0 for lc in hp.layers] == [True] * 5 + [False]
    assert [lc.rope_plain for lc in hp.layers] == [yarn] * 5 + [False]
    assert [lc.rope_base for lc in hp.layers] == [10000.0] * 5 + [100.0]
    assert [lc.rope_scale for lc in hp.layers] == [1.0] * 5 + [1.0 if yarn else 1 / FACTOR]
    assert (hp.yarn_divisors is not None) == yarn
    assert hp.rope_attn_factor == pytest.approx(1 + 0.1 * np.log(FACTOR) if yarn else 1.0)


def test_gemma3_yarn_attention_factor_key_is_refused(converted) -> None:
    """llama.cpp would multiply the unscaled sliding layers' cos/sin by rope.scaling.attn_factor
    too, which lamina's plain layers do not: a file that sets it is refused, naming the key"""
    with GGUFFile(converted("gemma3_text")) as g:
        g.metadata["gemma3.rope.scaling.attn_factor"] = 2.0  # as a file that says so would read
        with pytest.raises(ModelConfigError, match="attention factor 2.0 with unscaled sliding layers") as e:
            read_hparams(g)
    assert "gemma3.rope.scaling.attn_factor" in str(e.value)


def test_gemma3_yarn_convert_matches_llama_cpp(checkpoint, converted, tmp_path: Path) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: no llama-quantize")
    ref = reference_gguf("tiny-gemma3-yarn-spm", checkpoint("gemma3_text"), "f32")
    theirs = tmp_path / "llama-quantize.gguf"
    llama_quantize(ref, theirs, int(get_mix("f32").ftype))
    ours = converted("gemma3_text")
    with GGUFFile(ours) as g:
        assert (g.metadata["gemma3.rope.scaling.type"], g.metadata["gemma3.rope.scaling.factor"]) == ("yarn", FACTOR)
        assert g.metadata["gemma3.rope.scaling.original_context_length"] == ORIG_CTX
        assert (g.metadata["gemma3.rope.freq_base"], g.metadata["gemma3.rope.freq_base_swa"]) == (100.0, 10000.0)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("kind", ["yarn", "linear"])
def test_gemma3_scaled_logits_match_transformers(kind: str, checkpoint, gemma3_file) -> None:
    path = gemma3_file(kind)
    ids = random_ids(path)
    want = transformers_logits(checkpoint("gemma3_text"), ids, _gemma3_rope(kind))
    _assert_close(lamina_logits(path, ids), want, f"gemma3 {kind}")


@pytest.mark.parametrize("kind", ["yarn", "linear"])
def test_gemma3_scaled_logits_match_llama_cpp(kind: str, checkpoint, gemma3_file) -> None:
    """the same bytes in llama.cpp; transformers unscaled is far from it, so the bound tells"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    path = gemma3_file(kind)
    ids = random_ids(path)
    _, theirs = llama_cpp_logits(path, tokens=ids, n_ctx=64)
    _assert_close(lamina_logits(path, ids), theirs, f"gemma3 {kind} vs llama.cpp")
    if kind == "yarn":  # the unscaled model once
        plain = {**GEMMA3_ROPE, "full_attention": {"rope_type": "default", "rope_theta": 100.0}}
        assert nmse(transformers_logits(checkpoint("gemma3_text"), ids, plain), theirs) > 100 * 1e-4
    # and the sliding layers' unscaled rotation shows: the global layers' scaling there is far off
    change = {"rope_plain": False} if kind == "yarn" else {"rope_scale": 1 / FACTOR}
    assert nmse(lamina_logits(path, ids, _sliding_layers_changed(path, **change)), theirs) > 100 * 1e-4


# -- gemma2 + linear / YaRN: every layer scaled --------------------------------


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_gemma2_scaling_reaches_the_sliding_layers(kind: str, gemma2_scaled) -> None:
    with GGUFFile(gemma2_scaled(kind)) as g:
        hp = read_hparams(g)
    assert [lc.sliding_window > 0 for lc in hp.layers] == [True, False, True, False]
    assert not any(lc.rope_plain for lc in hp.layers)
    assert [lc.rope_scale for lc in hp.layers] == [1 / FACTOR if kind == "linear" else 1.0] * 4
    assert (hp.yarn_divisors is not None) == (kind == "yarn")


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_gemma2_scaled_logits_match_transformers(kind: str, checkpoint, gemma2_scaled) -> None:
    path = gemma2_scaled(kind)
    ids = random_ids(path)
    want = transformers_logits(checkpoint("gemma2"), ids, GEMMA2_SCALING[kind])
    _assert_close(lamina_logits(path, ids), want, f"gemma2 {kind}")


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_gemma2_scaled_logits_match_llama_cpp(kind: str, checkpoint, gemma2_scaled) -> None:
    """llama.cpp on the same file; transformers unscaled is far from it, so the bound tells"""
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    path = gemma2_scaled(kind)
    ids = random_ids(path)
    _, theirs = llama_cpp_logits(path, tokens=ids, n_ctx=64)
    _assert_close(lamina_logits(path, ids), theirs, f"gemma2 {kind} vs llama.cpp")
    if kind == "linear":  # the unscaled model once
        assert nmse(transformers_logits(checkpoint("gemma2"), ids), theirs) > 100 * 1e-4
    # the sliding layers' scaling shows: unscaled there (gemma3's rule) is far off
    unscaled = lamina_logits(path, ids, _sliding_layers_changed(path, rope_scale=1.0, rope_plain=True))
    assert nmse(unscaled, theirs) > 100 * 1e-4
