"""The model and its context, the Pythonic way.

    model = Model.load("SmolLM2-135M-Instruct.Q4_1.gguf", n_threads=2)
    ctx = Context(model, n_ctx=2048)
    logits = ctx.eval(prompt_tokens)          # [n_vocab] of the last token
    logits = ctx.eval([next_token])           # one decode step
    ctx.truncate(n_common)                    # new chat turn: keep the shared prefix

Python owns policy (what to evaluate, how batches are split, sampling); each
batch of up to n_batch tokens is one native call.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from gguf import GGMLQuantizationType

from lamina import options
from lamina.engine.loader import HParams, NativeModel, read_hparams
from lamina.engine.offload import (
    DEVICES,
    OffloadWarning,
    describe_plan,
    device_free_bytes,
    memory_needs,
    parse_gpu_layers,
    plan_offload,
)
from lamina.errors import LaminaError
from lamina.gguf.reader import GGUFFile
from lamina.native import ffi, last_error, lib
from lamina.system import available_memory

KV_TYPES = {
    "f32": int(GGMLQuantizationType.F32),
    "f16": int(GGMLQuantizationType.F16),
    "q8_0": int(GGMLQuantizationType.Q8_0),
}
DEFAULT_N_CTX = 4096


class ContextError(LaminaError, ValueError):
    """A request the context cannot serve: bad sizes, tokens, or no room left."""


class ContextSizeWarning(UserWarning):
    """The context is longer than the model was trained for."""


class ContextFullError(ContextError):
    """The tokens do not fit in the context window that is left."""


class InvalidTokenError(ContextError):
    """A token id outside the model's vocabulary."""


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 64))


class Model:
    """A GGUF model ready to run: hyperparameters + the native model over the mmap."""

    def __init__(self, native: NativeModel, n_threads: int) -> None:
        self.native = native
        self.hparams: HParams = native.hparams
        self.path = native.gguf.path
        self.n_threads = n_threads

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        n_threads: int | None = None,
        hparams: HParams | None = None,
        overrides: Mapping[str, np.ndarray] | None = None,
        two_pass_down: bool | None = None,
    ) -> Model:
        """hparams overrides what the file says (tests use it to flip one switch);
        overrides maps weight names ("blk.3.attn_q.weight") to f32 arrays
        [rows, cols] run instead of the file's tensors (GPTQ calibration);
        two_pass_down: quantize the ffn_down input twice (lamina.h), None = the
        architecture's default (gemma3: on, ~10-25% of its prefill speed for
        97-100% top-1 agreement with transformers instead of 91-96%)."""
        if n_threads is not None and not 1 <= n_threads <= 512:
            raise ContextError(f"n_threads must be in [1, 512], got {n_threads!r}")
        gguf = GGUFFile(path)
        if two_pass_down is not None:
            hparams = replace(hparams or read_hparams(gguf), two_pass_down=bool(two_pass_down))
        return cls(NativeModel(gguf, hparams, overrides), n_threads or _default_threads())

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def close(self) -> None:
        """Free the native model and unmap the file now, after its contexts are closed."""
        self.native.close()

    def kv_bytes(self, n_ctx: int, kv_type: str = "f16") -> int:
        """Bytes the KV cache of a context of n_ctx positions would take (0: not possible)."""
        if not 1 <= n_ctx < 2**31:
            raise ContextError(f"n_ctx must be in [1, 2**31), got {n_ctx!r}")
        return int(lib.lm_kv_cache_bytes(self.native.ptr, n_ctx, _kv_type(kv_type)))

    def __repr__(self) -> str:
        hp = self.hparams
        return (
            f"Model({os.path.basename(self.path)!r}, {hp.arch}, {hp.n_layer} layers, "
            f"n_embd={hp.n_embd}, n_vocab={hp.n_vocab})"
        )


def _kv_type(kv_type: str) -> int:
    try:
        return KV_TYPES[kv_type.lower()]
    except (KeyError, AttributeError):
        raise ContextError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}") from None


class Context:
    """A KV cache, scratch buffers and worker threads for one sequence."""

    def __init__(
        self,
        model: Model,
        n_ctx: int | None = None,
        n_batch: int = 512,
        kv_type: str = "f16",
        n_threads: int | None = None,
        gpu_layers: int | str = 0,
        device: str = "cuda",
        require_gpu: bool = False,
    ) -> None:
        """gpu_layers / device / require_gpu: layer offload (runtime/engine/offload.py);
        without the device: one OffloadWarning and a CPU run, or NoGPUError."""
        if n_ctx is None:
            n_ctx = min(model.hparams.n_ctx_train, DEFAULT_N_CTX)
        try:
            n_threads = model.n_threads if n_threads is None else options.n_threads(n_threads)
            n_ctx, n_batch = options.n_ctx(n_ctx), options.n_batch(n_batch)
            if n_ctx == 0:
                raise options.OptionError("n_ctx must be a positive context size here, got 0")
        except options.OptionError as e:
            raise ContextError(str(e)) from None
        self.model = model  # the native model must outlive the context
        self.n_ctx, self.n_batch = int(n_ctx), int(min(n_batch, n_ctx))
        self.kv_type, self.n_threads = kv_type, n_threads
        hp = model.hparams
        try:
            needs = None
            if parse_gpu_layers(gpu_layers) != 0:  # sizes for the plan, only when offload is asked
                # activations of one batch and its logits: what a device needs besides weights and cache
                scratch = 4 * self.n_batch * (3 * hp.n_embd + 2 * hp.q_dim + 2 * hp.kv_dim + 2 * hp.n_ff + hp.n_vocab)
                needs = memory_needs(model.native.gguf, hp.n_layer, model.kv_bytes(self.n_ctx, kv_type), scratch)
            self.offload = plan_offload(hp.n_layer, gpu_layers, device, require_gpu, needs)
        except ValueError as e:
            raise ContextError(str(e)) from None
        n = self.offload.gpu_layers
        self.offload_description = describe_plan(needs, n, device, device_free_bytes(device) if n else None)
        if self.offload.warning:
            warnings.warn(self.offload.warning, OffloadWarning, stacklevel=2)
        self._check_memory(hp)
        ptr = lib.lm_context_create_offload(
            model.native.ptr,
            self.n_ctx,
            self.n_batch,
            _kv_type(kv_type),
            n_threads,
            self.offload.gpu_layers,
            DEVICES[self.offload.device],
        )
        if ptr == ffi.NULL:
            raise ContextError(
                f"cannot create a context of {self.n_ctx} positions with a {kv_type} cache: {last_error()}"
            )
        self._ptr = ffi.gc(ptr, lib.lm_context_free)
        self._lock = threading.Lock()  # the native call releases the GIL; one eval at a time
        self._capture: dict[str, np.ndarray] = {}
        self.captured: dict[str, np.ndarray] = {}

    def _check_memory(self, hp: HParams) -> None:
        """Refuse a KV cache the host cannot hold, before allocating it (a calloc
        of that size may succeed lazily and end in the OOM killer later)."""
        host_blocks = hp.n_layer - max(0, self.offload.gpu_layers - 1)
        kv = self.model.kv_bytes(self.n_ctx, self.kv_type) * host_blocks // max(hp.n_layer, 1)
        free = available_memory()
        if free is not None and kv > free:
            raise ContextError(
                f"n_ctx={self.n_ctx} needs a {kv / 2**30:.1f} GiB {self.kv_type} KV cache here and this machine has "
                f"{free / 2**30:.1f} GiB available: lower n_ctx, or use a q8_0 cache"
            )
        if self.n_ctx > hp.n_ctx_train:
            warnings.warn(
                f"n_ctx={self.n_ctx} is above the model's training context ({hp.n_ctx_train}): "
                "expect worse output past it",
                ContextSizeWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        """Free the KV cache, scratch and threads now (instead of at garbage
        collection); later calls raise ContextError."""
        with self._lock:
            if self._ptr is not None:
                ffi.release(self._ptr)
                self._ptr = None

    @property
    def _live(self):
        if self._ptr is None:
            raise ContextError("this context is closed")
        return self._ptr

    @property
    def n_past(self) -> int:
        """Positions already in the cache (the next token's position)."""
        return int(lib.lm_context_n_past(self._live))

    @property
    def kv_bytes(self) -> int:
        """KV cache bytes on this side (the host); device_usage() has the device's."""
        return int(lib.lm_context_kv_bytes(self._live))

    def device_usage(self) -> dict[str, int]:
        """Where the layers run: host_layers (blocks 0..host_layers-1 here),
        device_layers (blocks on the device, the head not counted),
        head_on_device, device weight and KV bytes."""
        host, head = ffi.new("int32_t *"), ffi.new("int *")
        wbytes, kvbytes = ffi.new("size_t *"), ffi.new("size_t *")
        self._check(lib.lm_context_offload_info(self._live, host, head, wbytes, kvbytes))
        return {
            "host_layers": int(host[0]),
            "device_layers": self.model.hparams.n_layer - int(host[0]),
            "head_on_device": bool(head[0]),
            "device_weight_bytes": int(wbytes[0]),
            "device_kv_bytes": int(kvbytes[0]),
        }

    def truncate(self, n_keep: int) -> None:
        """Forget every cached position >= n_keep, so the next eval continues from there."""
        with self._lock:
            if isinstance(n_keep, bool) or not isinstance(n_keep, (int, np.integer)) or not 0 <= n_keep <= self.n_past:
                raise ContextError(f"truncate({n_keep!r}): expected an integer 0 <= n_keep <= n_past = {self.n_past}")
            self._check(lib.lm_context_truncate(self._live, int(n_keep)))

    def eval(self, tokens: Sequence[int] | np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Append tokens to the sequence; logits [n_vocab] of the last one, or
        [len(tokens), n_vocab] of every one with all_logits."""
        with self._lock:
            return self._eval(self._validate(tokens), all_logits)

    def _eval(self, toks: np.ndarray, all_logits: bool) -> np.ndarray:
        V = self.model.n_vocab
        n = len(toks)
        out = np.empty((n if all_logits else 1, V), dtype=np.float32)
        for start in range(0, n, self.n_batch):
            chunk = toks[start : start + self.n_batch]
            last = start + len(chunk) == n
            if all_logits:
                dest = ffi.from_buffer("float[]", out[start : start + len(chunk)])
            else:
                dest = ffi.from_buffer("float[]", out) if last else ffi.NULL
            self._check(
                lib.lm_context_eval(self._live, ffi.from_buffer("int32_t[]", chunk), len(chunk), dest, int(all_logits))
            )
            self._collect(len(chunk))
        return out if all_logits else out[0]

    def eval_layers(
        self, tokens: Sequence[int] | np.ndarray, il0: int, il1: int, x: np.ndarray | None = None
    ) -> np.ndarray:
        """Layers [il0, il1) on one batch (at most n_batch tokens) at positions
        n_past..: x f32 [T, n_embd] is the residual stream entering layer il0
        (None: the token embeddings, only for il0 == 0); returns the stream
        leaving layer il1 - 1. Only those layers' caches are written, so a
        context serves one layer range per sequence (truncate(0) between)."""
        with self._lock:
            toks = self._validate(tokens)
            T, E, L = len(toks), self.model.hparams.n_embd, self.model.hparams.n_layer
            if self.n_batch < T:
                raise ContextError(f"eval_layers takes one batch: {T} tokens > n_batch={self.n_batch}")
            if not (isinstance(il0, (int, np.integer)) and isinstance(il1, (int, np.integer)) and 0 <= il0 < il1 <= L):
                raise ContextError(f"eval_layers({il0!r}, {il1!r}): expected 0 <= il0 < il1 <= n_layer={L}")
            if x is None:
                if il0 != 0:
                    raise ContextError(f"eval_layers from layer {il0} needs the residual stream x entering it")
                io = np.zeros((T, E), dtype=np.float32)
            else:
                if np.shape(x) != (T, E):
                    raise ContextError(f"eval_layers: x must have shape ({T}, {E}), got {np.shape(x)}")
                io = np.array(x, dtype=np.float32, order="C", copy=True)
            self._check(
                lib.lm_context_eval_layers(
                    self._live,
                    ffi.from_buffer("int32_t[]", toks),
                    T,
                    int(il0),
                    int(il1),
                    ffi.from_buffer("float[]", io),
                )
            )
            self._collect(T)
            return io

    def capture(
        self, il: int | None, *, attn_in: bool = False, wo_in: bool = False, ffn_in: bool = False, down_in: bool = False
    ) -> None:
        """After each later eval / eval_layers, `captured` holds the chosen
        matmul inputs of layer il for that batch: attn_in [T, n_embd] (normed
        q/k/v input), wo_in [T, n_head*head_dim], ffn_in [T, n_embd] (normed
        gate/up input), down_in [T, n_ff] (act(gate) * up). il None stops."""
        hp = self.model.hparams
        widths = {"attn_in": hp.n_embd, "wo_in": hp.q_dim, "ffn_in": hp.n_embd, "down_in": hp.n_ff}
        wanted = {"attn_in": attn_in, "wo_in": wo_in, "ffn_in": ffn_in, "down_in": down_in}
        with self._lock:
            if il is None:
                self._check(lib.lm_context_capture(self._live, -1, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL))
                self._capture, self.captured = {}, {}
                return
            if not isinstance(il, (int, np.integer)) or not 0 <= il < hp.n_layer:
                raise ContextError(f"capture layer {il!r}: expected 0 <= il < n_layer={hp.n_layer}")
            bufs = {k: np.zeros((self.n_batch, widths[k]), dtype=np.float32) for k, on in wanted.items() if on}
            ptrs = [ffi.from_buffer("float[]", bufs[k]) if k in bufs else ffi.NULL for k in widths]
            self._check(lib.lm_context_capture(self._live, int(il), *ptrs))
            self._capture, self.captured = bufs, {}

    def _collect(self, T: int) -> None:
        self.captured = {k: buf[:T].copy() for k, buf in self._capture.items()}

    def _validate(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(tokens)
        if arr.ndim != 1 or arr.size == 0:
            raise ContextError(f"tokens must be a non-empty 1-D sequence, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise ContextError(f"tokens must be integers, got dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.model.n_vocab))
        if bad.size:
            i = int(bad[0])
            raise InvalidTokenError(
                f"token {int(arr[i])} at index {i} is outside the vocabulary [0, {self.model.n_vocab})"
            )
        if self.n_past + arr.size > self.n_ctx:
            raise ContextFullError(f"context full: {self.n_past} cached + {arr.size} new tokens > n_ctx={self.n_ctx}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    @staticmethod
    def _check(rc: int) -> None:
        if rc == 0:
            return
        message = last_error()
        if rc == lib.LM_ERR_CONTEXT_FULL:
            raise ContextFullError(message)
        if rc == lib.LM_ERR_TOKEN:
            raise InvalidTokenError(message)
        if rc == lib.LM_ERR_NOMEM:
            raise MemoryError(message)
        raise ContextError(message)

    def __repr__(self) -> str:
        return f"Context(n_ctx={self.n_ctx}, n_past={self.n_past}, kv_type={self.kv_type!r})"
