"""Layer offload (--gpu-layers) through the backend table, with the CPU
stand-in as the device: it copies its weights and keeps the KV cache of its
layers, so every split exercises the transfer and the per-device caches, and
must give exactly the logits of the CPU alone. Without a usable GPU, offload
to "cuda" warns once and runs on the CPU, or fails with require_gpu."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from lamina.engine.context import Context, ContextError, Model
from lamina.engine.offload import plan_offload
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model
from lamina.tokenizer import Tokenizer
from support.paths import REPO
from support.tiny_models import CONFIGS, GEMMA3, LLAMA, SPLIT_CASES, for_block

ROOT = REPO


def run_split(model, toks, gpu_layers, n_batch=4, kv_type="f16"):
    """logits of every position, the prompt in batches of n_batch then two
    decode steps: the device cache must carry across batches"""
    ctx = Context(model, n_ctx=64, n_batch=n_batch, kv_type=kv_type, gpu_layers=gpu_layers, device="cpu-standin")
    head = ctx.eval(toks[:-2], all_logits=True)
    steps = [ctx.eval(toks[i : i + 1], all_logits=True) for i in range(len(toks) - 2, len(toks))]
    return np.concatenate([head, *steps]), ctx


# the gemma3 model slides a 5-token window over 3 layers (two local, one global)
@pytest.mark.parametrize("cfg", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_every_split_equals_the_cpu_alone(tiny, cfg):
    model = Model.load(tiny(cfg), n_threads=2)
    toks = np.random.default_rng(5).integers(0, cfg.n_vocab, 14)
    alone, _ = run_split(model, toks, 0)
    L = cfg.n_layer
    for n in range(0, L + 3):  # 0: none, 1: the head, L+1: everything, L+2: more than there is
        got, ctx = run_split(model, toks, n)
        assert np.array_equal(got, alone), f"gpu_layers={n}"
        use = ctx.device_usage()
        blocks = min(max(n - 1, 0), L)
        assert use["device_layers"] == blocks and use["host_layers"] == L - blocks
        assert use["head_on_device"] == (n > 0)
        # each layer's cache lives with its layer: the two sides add up to one whole cache
        assert ctx.kv_bytes + use["device_kv_bytes"] == model.kv_bytes(64, "f16")
        assert (use["device_weight_bytes"] > 0) == (n > 0)


def test_splits_keep_nvfp4_output_scales(tmp_path):
    """weights with per-tensor output scales (NVFP4's scale_2, per expert for
    a stack): the stand-in device takes them with the layers and the head"""
    from support.tiny_models import write_tiny_model

    cfg = replace(for_block(CONFIGS["qwen3moe"], 64), qtype="NVFP4")
    names = ["blk.0.attn_q", "blk.1.ffn_down_exps", "blk.0.ffn_up_exps", "output"]

    def scales(w):
        for name in names:
            n = cfg.n_expert if "_exps" in name else 1
            w.add_tensor(f"{name}.scale", np.linspace(0.5, 2.0, n, dtype=np.float32) + 0.25)

    model = Model.load(write_tiny_model(tmp_path / "scaled.gguf", cfg, extra=scales), n_threads=2)
    toks = np.random.default_rng(5).integers(0, cfg.n_vocab, 14)
    alone, _ = run_split(model, toks, 0)
    for n in (1, 2, cfg.n_layer + 1):
        assert np.array_equal(run_split(model, toks, n)[0], alone), f"gpu_layers={n}"


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


# "no GPU" made so on any machine, a GPU one included: the library is not
# where it is looked for, or the driver shows no device
NO_GPU = {
    "library missing": {"LAMINA_CUDA_LIB": "/nonexistent/liblamina_cuda.so"},
    "no visible device": {"CUDA_VISIBLE_DEVICES": ""},
}

_NO_GPU_SCRIPT = """
import sys, warnings
import numpy as np
import pytest
from lamina.engine.context import Context, Model
from lamina.engine.offload import NoGPUError, OffloadWarning
model = Model.load(sys.argv[1], n_threads=2)
toks = [1, 2, 3, 4]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ctx = Context(model, n_ctx=16, gpu_layers=99)
assert [type(w.message) for w in caught] == [OffloadWarning], caught
assert "running on the CPU" in str(caught[0].message)
assert ctx.device_usage()["device_layers"] == 0 and not ctx.device_usage()["head_on_device"]
assert np.array_equal(ctx.eval(toks, all_logits=True), Context(model, n_ctx=16).eval(toks, all_logits=True))
with pytest.raises(NoGPUError, match="no usable cuda device"):
    Context(model, n_ctx=16, gpu_layers="auto", require_gpu=True)
"""


def _without_gpu(env):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **env}


@pytest.mark.parametrize("env", NO_GPU.values(), ids=NO_GPU.keys())
def test_no_gpu_warns_once_and_runs_on_the_cpu(tiny, env):
    r = subprocess.run(
        [sys.executable, "-c", _NO_GPU_SCRIPT, str(tiny(LLAMA))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=_without_gpu(env),
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("bad", ["many", -2, 2.5, True])  # -1 means every layer
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


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "lamina", "run", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("env", NO_GPU.values(), ids=NO_GPU.keys())
def test_cli_gpu_layers_without_gpu(env):
    path = str(fetch_model("smollm2-135m-instruct"))
    r = _run_cli(path, "-p", "x", "-n", "3", "--temp", "0", "--gpu-layers", "20", env=_without_gpu(env))
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "running on the CPU" in warned[0]
    r = _run_cli(path, "-p", "x", "-n", "3", "--gpu-layers", "20", "--require-gpu", env=_without_gpu(env))
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "no usable cuda device" in r.stderr


def test_fit_counts_the_head_first_then_blocks_from_the_last():
    from lamina.engine.offload import MemoryNeeds, describe_plan, fit_gpu_layers

    needs = MemoryNeeds(block_bytes=(100, 100, 100, 100), head_bytes=50, kv_bytes_per_block=10, scratch_bytes=5)
    assert fit_gpu_layers(needs, 54) == 0  # not even the head
    assert fit_gpu_layers(needs, 55) == 1  # the head
    assert fit_gpu_layers(needs, 55 + 110 * 2) == 3  # head + 2 blocks
    assert fit_gpu_layers(needs, 10**9) == 5  # everything
    line = describe_plan(needs, 3, "cuda", 300)
    assert "blocks 2..3 + output head on cuda" in line and "blocks 0..1 on the CPU" in line


def test_auto_on_the_stand_in_fits_the_real_model_in_free_memory(tiny):
    model = Model.load(tiny(LLAMA), n_threads=2)
    ctx = Context(model, n_ctx=16, gpu_layers="auto", device="cpu-standin")
    assert ctx.offload.gpu_layers == LLAMA.n_layer + 1  # a tiny model fits in any free RAM
    assert "every block + output head on cpu-standin" in ctx.offload_description


def _assert_cuda_matches_the_cpu(model, toks, splits, max_nmse, min_top1):
    """every split at batch len(toks) (the GEMM path, f16 tiles) and 1 (mat-vec
    decode) against the CPU alone: the same logits up to float order and the
    f16 tiles; all cases run before any assert so a failure shows them all"""
    n_ctx = len(toks) + 8
    cpu = Context(model, n_ctx=n_ctx).eval(toks, all_logits=True)
    seen = {}
    for n in splits:
        for n_batch in (len(toks), 1):
            ctx = Context(model, n_ctx=n_ctx, n_batch=n_batch, gpu_layers=n, device="cuda", require_gpu=True)
            got = ctx.eval(toks, all_logits=True)
            nmse = float(((got - cpu) ** 2).mean() / (cpu**2).mean())
            seen[n, n_batch] = (nmse, float((got.argmax(1) == cpu.argmax(1)).mean()))
    print("\n".join(f"gpu_layers={n} n_batch={b}: nmse {e:.2e}, top-1 {t:.1%}" for (n, b), (e, t) in seen.items()))
    assert all(e < max_nmse and t >= min_top1 for e, t in seen.values()), seen


@pytest.mark.gpu
@pytest.mark.parametrize(
    "cfg",
    [
        LLAMA,
        CONFIGS["qwen2"],
        CONFIGS["qwen3"],
        CONFIGS["smollm3"],
        CONFIGS["olmo2"],
        replace(GEMMA3, n_layer=4),
        replace(for_block(LLAMA, 256), qtype="Q4_K", n_layer=3),
    ],
    ids=["llama", "qwen2", "qwen3", "smollm3", "olmo2", "gemma3", "llama-q4_k"],
)
def test_cuda_offload_of_tiny_models_matches_the_cpu(tiny, cfg):
    model = Model.load(tiny(cfg), n_threads=2)
    toks = np.random.default_rng(6).integers(0, cfg.n_vocab, 24)
    _assert_cuda_matches_the_cpu(model, toks, (1, 2, cfg.n_layer + 1), max_nmse=1e-3, min_top1=0.9)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["granite", "gemma2", "qwen3moe", "phi3"])
def test_cuda_refuses_what_its_kernels_lack(tiny, name):
    """granite's multipliers, gemma2's soft-caps, experts and LongRoPE run on
    the CPU only: offload says so, it does not drop them"""
    model = Model.load(tiny(CONFIGS[name]), n_threads=2)
    with pytest.raises(ContextError, match="not implemented on the GPU"):
        Context(model, n_ctx=64, gpu_layers=1, device="cuda", require_gpu=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["smollm3_yarn", "gemma3_yarn"])
def test_cuda_refuses_yarn_by_name(tiny, name):
    """YaRN's cos/sin multiplier runs on the CPU only: offload names it, it does not drop it
    (gemma3: on its global layers, the sliding ones rotate plain)"""
    model = Model.load(tiny(CONFIGS[name]), n_threads=2)
    with pytest.raises(ContextError, match="YaRN rope scaling .* not implemented on the GPU"):
        Context(model, n_ctx=64, gpu_layers=1, device="cuda", require_gpu=True)


@pytest.mark.gpu
def test_cuda_refuses_nvfp4_output_scales(tmp_path):
    """per-tensor output scales (NVFP4's scale_2) run on the CPU only"""
    from support.tiny_models import write_tiny_model

    cfg = replace(for_block(LLAMA, 64), qtype="NVFP4")
    extra = lambda w: w.add_tensor("blk.0.attn_q.scale", np.array([2.0], np.float32))
    model = Model.load(write_tiny_model(tmp_path / "scaled.gguf", cfg, extra=extra), n_threads=2)
    with pytest.raises(ContextError, match="not implemented on the GPU"):
        Context(model, n_ctx=64, gpu_layers=1, device="cuda", require_gpu=True)


@pytest.mark.gpu
def test_cuda_offload_matches_the_cpu():
    """SmolLM2 whole on the GPU, and split, against the CPU alone, on prose.
    The bounds are twice the engine-to-engine floor on this 30-layer model
    (lamina vs llama.cpp on the same bytes: nmse ~1e-3, top-1 ~95%): float
    order alone flips 8-bit activation roundings, and the flips compound."""
    path = fetch_model("smollm2-135m-instruct")
    model = Model.load(path, n_threads=2)
    with GGUFFile(path) as g:
        tok = Tokenizer.from_metadata(g.metadata)
    text = (ROOT / "tests" / "data" / "alice29.txt").read_text(encoding="latin-1")
    toks = np.array(tok.encode(text[20000:24000])[:128])
    _assert_cuda_matches_the_cpu(model, toks, (1, 10, 99), max_nmse=2e-3, min_top1=0.92)
