"""Layer offload (--gpu-layers / n_gpu_layers), with llama.cpp's meaning: the
output head counts as one layer, N offloads the head and the last N - 1
blocks, N > n_layer offloads every block, and the token embedding stays on
the CPU. Where the device is missing the caller gets one warning and a CPU
run, or NoGPUError when it asked for require_gpu.

Devices: "cuda" (liblamina_cuda from native/cuda, dlopened on first use;
without it or without a GPU: the CPU fallback) and "cpu-standin", a second
CPU instance behaving as a device (own weight copies, own KV cache for its
layers), so the split is tested without a GPU."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lamina import options
from lamina.errors import LaminaError
from lamina.native import ffi, last_error, lib, native_dir
from lamina.system import available_memory

DEVICES = {"cuda": lib.LM_DEVICE_CUDA, "cpu-standin": lib.LM_DEVICE_CPU_STANDIN}
AUTO = "auto"


class NoGPUError(LaminaError, RuntimeError):
    """Offload was required (require_gpu / --require-gpu) and no device can take it."""


class OffloadWarning(UserWarning):
    """Offload was asked for and is not possible: the run continues on the CPU."""


@dataclass(frozen=True)
class OffloadPlan:
    gpu_layers: int  # what the native context gets: 0 = CPU only
    device: str
    warning: str | None = None


def parse_gpu_layers(value: int | str | None) -> int | str:
    """A count >= 0, -1 (every layer, llama-cpp-python's n_gpu_layers=-1) or
    "auto" (as many as the device's free memory holds); lamina.options checks it."""
    return options.gpu_layers(value, "gpu layers")


@dataclass(frozen=True)
class MemoryNeeds:
    """What offloading costs on the device, from the model file and the context size."""

    block_bytes: tuple[int, ...]  # weights of each block
    head_bytes: int  # output norm + output head
    kv_bytes_per_block: int  # K and V of one block for the whole context
    scratch_bytes: int  # activations of one batch


def memory_needs(gguf, n_layer: int, kv_bytes_all_blocks: int, scratch_bytes: int) -> MemoryNeeds:
    """Per-block weight bytes of an open GGUFFile (tensors named blk.N.*)."""
    blocks = [0] * n_layer
    head = 0
    for t in gguf.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m and int(m.group(1)) < n_layer:
            blocks[int(m.group(1))] += t.nbytes
        elif t.name.startswith(("output.", "output_norm.")):
            head += t.nbytes
    if not any(t.name.startswith("output.") for t in gguf.tensors):  # tied head: a copy of token_embd
        head += next((t.nbytes for t in gguf.tensors if t.name == "token_embd.weight"), 0)
    return MemoryNeeds(tuple(blocks), head, kv_bytes_all_blocks // max(n_layer, 1), scratch_bytes)


def fit_gpu_layers(needs: MemoryNeeds, free_bytes: int) -> int:
    """The largest N (llama.cpp's count: head first, then blocks from the last
    one down) whose weights, KV cache and scratch fit in free_bytes."""
    used = needs.scratch_bytes + needs.head_bytes
    if used > free_bytes:
        return 0
    n = 1
    for block in reversed(needs.block_bytes):
        used += block + needs.kv_bytes_per_block
        if used > free_bytes:
            break
        n += 1
    return n


def describe_plan(needs: MemoryNeeds | None, n: int, device: str, free_bytes: int | None = None) -> str:
    """One line saying what goes where and how many bytes, for the banner
    (needs may be None only when nothing is offloaded)."""
    if n == 0 or needs is None:
        return "offload: none, every layer on the CPU"
    L = len(needs.block_bytes)
    blocks = min(n - 1, L)
    weights = needs.head_bytes + sum(needs.block_bytes[L - blocks :])
    kv = blocks * needs.kv_bytes_per_block
    where = f"blocks {L - blocks}..{L - 1} + output head" if blocks else "output head"
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    free = f" of {mib(free_bytes)} free" if free_bytes is not None else ""
    return (
        f"offload: {where} on {device} ({mib(weights)} weights, {mib(kv)} KV cache, "
        f"{mib(needs.scratch_bytes)} scratch{free}); blocks 0..{L - blocks - 1} on the CPU"
        if blocks < L
        else f"offload: every block + output head on {device} ({mib(weights)} weights, {mib(kv)} KV cache, "
        f"{mib(needs.scratch_bytes)} scratch{free}); token embedding on the CPU"
    )


def device_free_bytes(device: str) -> int | None:
    """Memory the device can still take: the stand-in lives in host RAM."""
    if device == "cpu-standin":
        return available_memory()
    if device == "cuda" and load_cuda():
        free, total = ffi.new("size_t *"), ffi.new("size_t *")
        if lib.lm_cuda_memory(free, total) == 0:
            return int(free[0])
    return None


CUDA_LIBRARY = "liblamina_cuda.so"


def cuda_library_path() -> Path:
    """$LAMINA_CUDA_LIB, else liblamina_cuda.so beside the native core (where
    the build puts it when nvcc was found)."""
    override = os.environ.get("LAMINA_CUDA_LIB")
    return Path(override) if override else native_dir() / CUDA_LIBRARY


def load_cuda() -> bool:
    """dlopen the CUDA op library once; False (lm_last_error says why) when missing."""
    path = cuda_library_path()
    if not path.is_file():
        lib.lm_cuda_load(str(path).encode())  # records "cannot load PATH" for the warning
        return False
    return lib.lm_cuda_load(str(path).encode()) == 0


def cuda_offload_planned(gpu_layers: int | str | None) -> bool:
    """Whether gpu_layers would put layers on a usable CUDA device, whose
    backend decodes one sequence per context (multi-sequence batches on CUDA
    are not implemented yet)."""
    if parse_gpu_layers(gpu_layers) == 0:
        return False
    return load_cuda() and bool(lib.lm_device_available(DEVICES["cuda"]))


def plan_offload(
    n_layer: int,
    gpu_layers: int | str | None,
    device: str = "cuda",
    require_gpu: bool = False,
    needs: MemoryNeeds | None = None,
) -> OffloadPlan:
    asked = parse_gpu_layers(gpu_layers)
    if device not in DEVICES:
        raise ValueError(f"offload device must be one of {', '.join(DEVICES)}, got {device!r}")
    if asked == 0:
        if require_gpu:
            raise NoGPUError("require_gpu needs gpu_layers > 0 (or 'auto')")
        return OffloadPlan(0, device)
    if device == "cuda":
        load_cuda()
    if not lib.lm_device_available(DEVICES[device]):
        why = last_error()
        if require_gpu:
            raise NoGPUError(f"gpu layers {asked}: no usable {device} device ({why})")
        return OffloadPlan(0, device, f"no usable GPU ({why}); gpu layers {asked} ignored, running on the CPU")
    if asked == AUTO:
        free = device_free_bytes(device)
        n = n_layer + 1 if needs is None or free is None else fit_gpu_layers(needs, free)
    else:
        n = n_layer + 1 if asked == -1 else min(int(asked), n_layer + 1)
    return OffloadPlan(n, device)
