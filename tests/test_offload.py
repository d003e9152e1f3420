"""Layer offload (--gpu-layers) through the backend table, with the CPU
stand-in as the device: it copies its weights and keeps the KV cache of its
layers, so every split exercises the transfer and the per-device caches, and
must give exactly the logits of the CPU alone. Without a usable GPU, offload
to "cuda" warns once and runs on the CPU, or fails with require_gpu."""
from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from runtime.engine import Context, ContextError, Model
from runtime.model_cache import fetch_model
from runtime.offload import NoGPUError, OffloadWarning, plan_offload
from tiny_models import CONFIGS, GEMMA3, LLAMA, for_block

ROOT = Path(__file__).resolve().parent.parent


def run_split(model, toks, gpu_layers, n_batch=4, kv_type="f16"):
    """logits of every position, the prompt in batches of n_batch then two
    decode steps: the device cache must carry across batches"""
    ctx = Context(model, n_ctx=64, n_batch=n_batch, kv_type=kv_type, gpu_layers=gpu_layers, device="cpu-standin")
    head = ctx.eval(toks[:-2], all_logits=True)
    steps = [ctx.eval(toks[i:i + 1], all_logits=True) for i in range(len(toks) - 2, len(toks))]
    return np.concatenate([head, *steps]), ctx


# the gemma3 model slides a 5-token window over 3 layers (two local, one global)
@pytest.mark.parametrize("cfg", [LLAMA, CONFIGS["qwen2"], replace(GEMMA3, n_layer=4),
                                 replace(for_block(LLAMA, 256), qtype="Q4_K", n_layer=3)],
                         ids=["llama", "qwen2", "gemma3", "llama-q4_k"])
def test_every_split_equals_the_cpu_alone(tiny, cfg):
    model = Model.load(tiny(cfg), n_threads=2)
    toks = np.random.default_rng(5).integers(0, cfg.n_vocab, 14)
    alone, _ = run_split(model, toks, 0)
    L = cfg.n_layer
    for n in range(0, L + 3):   # 0: none, 1: the head, L+1: everything, L+2: more than there is
        got, ctx = run_split(model, toks, n)
        assert np.array_equal(got, alone), f"gpu_layers={n}"
        use = ctx.device_usage()
        blocks = min(max(n - 1, 0), L)
        assert use["device_layers"] == blocks and use["host_layers"] == L - blocks
        assert use["head_on_device"] == (n > 0)
        # each layer's cache lives with its layer: the two sides add up to one whole cache
        assert ctx.kv_bytes + use["device_kv_bytes"] == model.kv_bytes(64, "f16")
        assert (use["device_weight_bytes"] > 0) == (n > 0)


def test_split_context_truncates_and_continues(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    toks = np.random.default_rng(2).integers(0, LLAMA.n_vocab, 12)
    ctx = Context(model, n_ctx=32, gpu_layers=2, device="cpu-standin")
    ctx.eval(toks)
    ctx.truncate(5)
    again = ctx.eval(toks[5:], all_logits=True)
    fresh = Context(model, n_ctx=32).eval(toks, all_logits=True)[5:]
    assert np.array_equal(again, fresh)


def test_device_layers_cannot_be_run_layer_by_layer_on_the_host(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=32, gpu_layers=2, device="cpu-standin")
    with pytest.raises(ContextError, match="not all on this context"):
        ctx.eval_layers([1, 2, 3], 0, LLAMA.n_layer)
    with pytest.raises(ContextError, match="capture layer"):
        ctx.capture(LLAMA.n_layer - 1, attn_in=True)


def test_no_gpu_warns_once_and_runs_on_the_cpu(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    toks = [1, 2, 3, 4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = Context(model, n_ctx=16, gpu_layers=99)
    assert [type(w.message) for w in caught] == [OffloadWarning]
    assert "running on the CPU" in str(caught[0].message)
    assert ctx.device_usage()["device_layers"] == 0 and not ctx.device_usage()["head_on_device"]
    assert np.array_equal(ctx.eval(toks, all_logits=True), Context(model, n_ctx=16).eval(toks, all_logits=True))
    with pytest.raises(NoGPUError, match="no usable cuda device"):
        Context(model, n_ctx=16, gpu_layers="auto", require_gpu=True)


@pytest.mark.parametrize("bad", ["many", -1, 2.5, True])
def test_bad_gpu_layers(tiny, bad):
    model = Model.load(tiny(LLAMA), n_threads=2)
    with pytest.raises(ContextError, match="gpu layers"):
        Context(model, n_ctx=16, gpu_layers=bad)


def test_auto_plan_on_the_stand_in_takes_everything():
    assert plan_offload(30, "auto", "cpu-standin").gpu_layers == 31
    assert plan_offload(30, 100, "cpu-standin").gpu_layers == 31
    assert plan_offload(30, 7, "cpu-standin").gpu_layers == 7
    with pytest.raises(ValueError, match="offload device"):
        plan_offload(30, 7, "tpu")


def _run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "bin" / "run"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_gpu_layers_without_gpu():
    path = str(fetch_model("smollm2-135m-instruct"))
    r = _run_cli(path, "-p", "x", "-n", "3", "--temp", "0", "--gpu-layers", "20")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "running on the CPU" in warned[0]
    r = _run_cli(path, "-p", "x", "-n", "3", "--gpu-layers", "20", "--require-gpu")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "no usable cuda device" in r.stderr


def test_fit_counts_the_head_first_then_blocks_from_the_last():
    from runtime.offload import MemoryNeeds, describe_plan, fit_gpu_layers
    needs = MemoryNeeds(block_bytes=(100, 100, 100, 100), head_bytes=50, kv_bytes_per_block=10, scratch_bytes=5)
    assert fit_gpu_layers(needs, 54) == 0               # not even the head
    assert fit_gpu_layers(needs, 55) == 1               # the head
    assert fit_gpu_layers(needs, 55 + 110 * 2) == 3     # head + 2 blocks
    assert fit_gpu_layers(needs, 10**9) == 5            # everything
    line = describe_plan(needs, 3, "cuda", 300)
    assert "blocks 2..3 + output head on cuda" in line and "blocks 0..1 on the CPU" in line


def test_auto_on_the_stand_in_fits_the_real_model_in_free_memory(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=16, gpu_layers="auto", device="cpu-standin")
    assert ctx.offload.gpu_layers == LLAMA.n_layer + 1   # a tiny model fits in any free RAM
    assert "every block + output head on cpu-standin" in ctx.offload_description


@pytest.mark.gpu
def test_cuda_offload_matches_the_cpu():
    """The whole model on the GPU (and split) against the CPU alone; skips
    with one line where no GPU and liblamina_cuda are available."""
    from runtime.native import last_error, lib
    from runtime.offload import load_cuda
    if not (load_cuda() and lib.lm_device_available(lib.LM_DEVICE_CUDA)):
        pytest.skip(f"no GPU: {last_error()}")
    model = Model.load(fetch_model("smollm2-135m-instruct"), n_threads=2)
    toks = np.random.default_rng(0).integers(0, model.n_vocab, 40)
    cpu = Context(model, n_ctx=64).eval(toks, all_logits=True)
    for n in (1, 10, 99):
        for n_batch in (40, 1):   # the GEMM path (f16 tiles), then mat-vec decode
            ctx = Context(model, n_ctx=64, n_batch=n_batch, gpu_layers=n, device="cuda", require_gpu=True)
            got = ctx.eval(toks, all_logits=True)
            nmse = float(((got - cpu) ** 2).mean() / (cpu ** 2).mean())
            assert nmse < 5e-3, (n, n_batch, nmse)
            assert (got.argmax(1) == cpu.argmax(1)).mean() >= 0.9
