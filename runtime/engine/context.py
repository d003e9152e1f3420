"""The model and its context, the Pythonic way.

    model = Model.load("SmolLM2-135M-Instruct.Q4_1.gguf", n_threads=2)
    ctx = Context(model, n_ctx=2048)
    logits = ctx.eval(prompt_tokens)          # [n_vocab] of the last token
    logits = ctx.eval([next_token])           # one decode step
    ctx.truncate(n_common)                    # new chat turn: keep the shared prefix

Several sequences share one context (llama.cpp's batch and seq_* API):

    ctx = Context(model, n_ctx=4096, n_seq_max=4)      # 1024 positions per sequence
    out = ctx.decode(tokens, pos, seq_ids, logits_mask)  # [mask.sum(), n_vocab], batch order
    ctx.seq_cp(0, 1, n_system)                         # share a system prompt, no copy
    ctx.seq_rm(2, 100, 200)                            # drop positions, shift the rest down

Python owns policy (what to evaluate, how batches are split, sampling); each
batch of up to n_batch tokens is one native call. eval / n_past / truncate
are sequence 0.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

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
    """A KV cache shared by up to n_seq_max sequences, scratch buffers and worker threads."""

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
        n_seq_max: int = 1,
        n_ctx_seq: int | None = None,
    ) -> None:
        """gpu_layers / device / require_gpu: layer offload (runtime/engine/offload.py);
        without the device: one OffloadWarning and a CPU run, or NoGPUError.
        n_seq_max: sequences (ids 0 .. n_seq_max-1) sharing the n_ctx cells;
        n_ctx_seq: most positions one of them holds (None: n_ctx // n_seq_max,
        llama-server's split; up to n_ctx for one pool they all draw from)."""
        if n_ctx is None:
            n_ctx = min(model.hparams.n_ctx_train, DEFAULT_N_CTX)
        try:
            n_threads = model.n_threads if n_threads is None else options.n_threads(n_threads)
            n_ctx, n_batch = options.n_ctx(n_ctx), options.n_batch(n_batch)
            if n_ctx == 0:
                raise options.OptionError("n_ctx must be a positive context size here, got 0")
        except options.OptionError as e:
            raise ContextError(str(e)) from None
        self.n_seq_max, self.n_ctx_seq = _sequences(int(n_ctx), n_seq_max, n_ctx_seq)
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
        params = ffi.new(
            "lm_context_params *",
            {
                "n_ctx": self.n_ctx,
                "n_batch": self.n_batch,
                "n_seq_max": self.n_seq_max,
                "n_ctx_seq": self.n_ctx_seq,
                "kv_type": _kv_type(kv_type),
                "n_threads": n_threads,
                "gpu_layers": self.offload.gpu_layers,
                "device": DEVICES[self.offload.device],
            },
        )
        ptr = lib.lm_context_create_params(model.native.ptr, params)
        if ptr == ffi.NULL:
            raise ContextError(
                f"cannot create a context of {self.n_ctx} positions with a {kv_type} cache: {last_error()}"
            )
        self._ptr = ffi.gc(ptr, lib.lm_context_free)
        self._lock = threading.Lock()  # the native call releases the GIL; one eval at a time
        self._capture: dict[str, np.ndarray] = {}
        self.captured: dict[str, np.ndarray] = {}
        self._imatrix: tuple[np.ndarray, ...] | None = None  # buffers the native side writes into

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
        """Append tokens to sequence 0; logits [n_vocab] of the last one, or
        [len(tokens), n_vocab] of every one with all_logits."""
        with self._lock:
            return self._eval(self._validate(tokens), all_logits)

    # -- several sequences ---------------------------------------------------

    def decode(
        self,
        tokens: Sequence[int] | np.ndarray,
        pos: Sequence[int] | np.ndarray,
        seq_ids: Sequence[int] | np.ndarray,
        logits_mask: Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """One batch of tokens of several sequences in one native call (at most
        n_batch tokens): token i goes to sequence seq_ids[i] at position pos[i],
        and each sequence's tokens must continue it exactly (positions
        seq_len(s), seq_len(s) + 1, ... in batch order). Returns the logits
        [n_out, n_vocab] of the tokens whose logits_mask is set, in batch order
        (None: the last token of each sequence in the batch). On any error
        nothing is cached and no length moves."""
        return self._run_batch(lib.lm_context_decode, self.model.n_vocab, tokens, pos, seq_ids, logits_mask)

    def decode_embd(
        self,
        tokens: Sequence[int] | np.ndarray,
        pos: Sequence[int] | np.ndarray,
        seq_ids: Sequence[int] | np.ndarray,
        output_mask: Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """decode without the output head: returns output_norm(x) [n_out, n_embd]
        of the tokens whose output_mask is set (None: the last token of each
        sequence), the hidden states an embedding is pooled from. The batch is
        cached as decode caches it. Host contexts only (no offloaded layers)."""
        return self._run_batch(lib.lm_context_decode_embd, self.model.hparams.n_embd, tokens, pos, seq_ids, output_mask)

    def _run_batch(self, fn: Any, width: int, tokens: Any, pos: Any, seq_ids: Any, mask_in: Any) -> np.ndarray:
        with self._lock:
            toks, p, s, mask = self._validate_batch(tokens, pos, seq_ids, mask_in)
            out = np.empty((int(np.count_nonzero(mask)), width), dtype=np.float32)
            arrays = [ffi.from_buffer("int32_t[]", a) for a in (toks, p, s)]
            flags = ffi.from_buffer("int8_t[]", mask)
            fields = {"n_tokens": len(toks), "token": arrays[0], "pos": arrays[1], "seq_id": arrays[2], "logits": flags}
            batch = ffi.new("lm_batch *", fields)
            dest = ffi.from_buffer("float[]", out) if len(out) else ffi.NULL
            self._check(fn(self._live, batch, dest))
            self._collect(len(toks))
            return out

    def decode_run(
        self, tokens: Sequence[int] | np.ndarray, seq: int, outputs: str = "last", embd: bool = False
    ) -> np.ndarray:
        """Append tokens to sequence seq (at positions seq_len(seq), ...) in
        batches of n_batch. Returns the rows outputs asks for: "all" [n, width],
        "last" [1, width], "none" [0, width]; width n_vocab (logits) or, with
        embd, n_embd (decode_embd's hidden states). All or nothing: on any
        error (Ctrl-C included) the sequence is cut back to where it began."""
        if outputs not in ("all", "last", "none"):
            raise ContextError(f"decode_run outputs={outputs!r}: expected 'all', 'last' or 'none'")
        toks = np.asarray(tokens, dtype=np.int32).reshape(-1)
        seq = self._seq(seq, "decode_run")
        decode = self.decode_embd if embd else self.decode
        width = self.model.hparams.n_embd if embd else self.model.n_vocab
        start = self.seq_len(seq)
        rows = [np.empty((0, width), np.float32)]
        try:
            for i in range(0, len(toks), self.n_batch):
                chunk = toks[i : i + self.n_batch]
                mask = np.full(len(chunk), outputs == "all")
                if outputs == "last" and i + len(chunk) == len(toks):
                    mask[-1] = True
                pos = np.arange(start + i, start + i + len(chunk), dtype=np.int32)
                rows.append(decode(chunk, pos, np.full(len(chunk), seq, np.int32), mask))
        except BaseException:
            self.seq_rm(seq, start)
            raise
        return np.concatenate(rows)

    def seq_len(self, seq: int) -> int:
        """Positions sequence seq holds (its next token's position)."""
        return int(lib.lm_context_seq_len(self._live, self._seq(seq, "seq_len")))

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> None:
        """Remove positions [p0, p1) of sequence seq (p1 < 0: to its end). When p1 is
        before the end, the later positions move down by p1 - p0 (their cached keys
        rotated to the new positions): llama.cpp's context shift."""
        with self._lock:
            seq = self._seq(seq, "seq_rm")
            if not (_is_int(p0) and _is_int(p1)) or p0 < 0 or 0 <= p1 < p0:
                raise ContextError(f"seq_rm({seq}, {p0!r}, {p1!r}): expected integers 0 <= p0 <= p1, or p1 < 0")
            self._check(lib.lm_context_seq_rm(self._live, seq, int(p0), int(max(p1, -1))))

    def seq_cp(self, src: int, dst: int, n: int) -> None:
        """Sequence dst becomes the first n positions of sequence src (dst's own are
        dropped). The cells are shared, not copied, until either writes into them."""
        with self._lock:
            src, dst = self._seq(src, "seq_cp"), self._seq(dst, "seq_cp")
            if src == dst:
                raise ContextError(f"seq_cp({src}, {dst}, {n!r}): source and destination are the same sequence")
            held = int(lib.lm_context_seq_len(self._live, src))
            if not _is_int(n) or not 0 <= n <= held:
                raise ContextError(f"seq_cp({src}, {dst}, {n!r}): expected 0 <= n <= seq_len({src}) = {held}")
            self._check(lib.lm_context_seq_cp(self._live, src, dst, int(n)))

    def kv_usage(self) -> dict[str, int]:
        """The cache's cells: cells_total (n_ctx), cells_used / cells_free (in whole
        blocks of block_size positions held by some sequence), n_seq_max, n_ctx_seq."""
        u = ffi.new("lm_kv_usage *")
        self._check(lib.lm_context_kv_usage(self._live, u))
        return {
            "cells_total": int(u.cells_total),
            "cells_used": int(u.cells_used),
            "cells_free": int(u.cells_total - u.cells_used),
            "block_size": int(u.block_size),
            "n_seq_max": int(u.n_seq_max),
            "n_ctx_seq": int(u.n_ctx_seq),
        }

    def kv_read(self, seq: int, il: int, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """The cached key and value [n_head_kv * head_dim] of one position of layer il
        (a layer run on this side), as floats: tests and debugging."""
        hp = self.model.hparams
        k, v = np.empty(hp.kv_dim, dtype=np.float32), np.empty(hp.kv_dim, dtype=np.float32)
        if not (_is_int(il) and _is_int(pos)):
            raise ContextError(f"kv_read({seq!r}, {il!r}, {pos!r}): expected integers")
        self._check(
            lib.lm_context_kv_read(
                self._live,
                self._seq(seq, "kv_read"),
                int(il),
                int(pos),
                ffi.from_buffer("float[]", k),
                ffi.from_buffer("float[]", v),
            )
        )
        return k, v

    # -- saved state (runtime/engine/state.py) ---------------------------------

    @property
    def kv_row_bytes(self) -> int:
        """Bytes of one cached key (or value) row of one layer, in kv_type."""
        return int(lib.lm_context_seq_state_bytes(self._live, 1)) // (2 * self.model.hparams.n_layer)

    def seq_state_bytes(self, n_pos: int) -> int:
        """Bytes of the cache rows of n_pos positions of one sequence, every layer (device ones too)."""
        return int(lib.lm_context_seq_state_bytes(self._live, int(n_pos)))

    def seq_state_kv(self, seq: int) -> bytes:
        """The cache rows of sequence seq's positions (lamina.h lm_context_seq_state_get)."""
        with self._lock:
            return self._seq_kv(self._seq(seq, "seq_state_kv"))

    def _seq_kv(self, seq: int) -> bytes:
        out = bytearray(self.seq_state_bytes(int(lib.lm_context_seq_len(self._live, seq))))
        dest = ffi.from_buffer("char[]", out) if out else ffi.NULL
        self._check(lib.lm_context_seq_state_get(self._live, seq, dest, len(out)))
        return bytes(out)

    def _set_seq_kv(self, seq: int, n_pos: int, kv: Any) -> None:
        src = ffi.from_buffer("char[]", kv) if len(kv) else ffi.NULL
        self._check(lib.lm_context_seq_state_set(self._live, seq, int(n_pos), src, len(kv)))

    def save_seq(
        self,
        seq: int,
        tokens: Sequence[int] | np.ndarray | None = None,
        extra: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> bytes:
        """Sequence seq's cache as a state (llama.cpp's llama_state_seq_get_data),
        bound to this model and kv_type; tokens (its seq_len tokens, or None)
        and extra / arrays are kept with it for the caller."""
        from lamina.engine import state

        with self._lock:
            seq = self._seq(seq, "save_seq")
            n = int(lib.lm_context_seq_len(self._live, seq))
            return state.pack(self, [(seq, n, tokens, self._seq_kv(seq))], arrays, extra)

    def load_seq(self, data: bytes | bytearray | memoryview, seq: int, what: str = "state") -> Any:
        """Sequence seq becomes the one sequence saved in data (any id it was
        saved from); returns the SavedState (its tokens, extra, arrays). Bad,
        foreign or corrupted data raises a StateError and changes nothing."""
        from lamina.engine import state

        with self._lock:
            seq = self._seq(seq, "load_seq")
            saved = state.unpack(self, data, what, into=seq)
            if len(saved.sequences) != 1:
                raise state.StateError(f"{what} holds {len(saved.sequences)} sequences; load_seq takes one")
            s = saved.sequences[0]
            self._set_seq_kv(seq, s.n_pos, s.kv)
            self._restored_scales(seq, s.lora_scales)
            return saved

    def save_state(
        self,
        tokens: Mapping[int, Sequence[int] | np.ndarray] | None = None,
        extra: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> bytes:
        """Every sequence that holds positions (llama.cpp's llama_state_get_data);
        tokens maps sequence ids to their tokens where the caller has them."""
        from lamina.engine import state

        with self._lock:
            seqs = []
            for q in range(self.n_seq_max):
                n = int(lib.lm_context_seq_len(self._live, q))
                if n:
                    seqs.append((q, n, (tokens or {}).get(q), self._seq_kv(q)))
            return state.pack(self, seqs, arrays, extra)

    def load_state(self, data: bytes | bytearray | memoryview, what: str = "state") -> Any:
        """The whole cache becomes data's: every sequence it holds at its id,
        the others empty. Checked whole first: on a StateError nothing changes."""
        from lamina.engine import state

        with self._lock:
            saved = state.unpack(self, data, what)
            ids = [s.seq for s in saved.sequences]
            if len(set(ids)) != len(ids) or any(not 0 <= q < self.n_seq_max for q in ids):
                raise state.StateMismatchError(f"{what}: its sequence ids", "sequences", f"< {self.n_seq_max}", ids)
            blocks = self.kv_usage()["block_size"]
            need = sum(-(-s.n_pos // blocks) * blocks for s in saved.sequences)
            if need > self.n_ctx:
                raise ContextFullError(f"{what}: its sequences need {need} cells, the context has {self.n_ctx}")
            for q in range(self.n_seq_max):
                self._check(lib.lm_context_seq_rm(self._live, q, 0, -1))
            for s in saved.sequences:
                self._set_seq_kv(s.seq, s.n_pos, s.kv)
                self._restored_scales(s.seq, s.lora_scales)
            return saved

    def _restored_scales(self, seq: int, scales: tuple[float, ...]) -> None:
        loras = getattr(self, "_loras", None)  # lamina.engine.lora.LoraSet, when adapters are applied
        if loras is not None and loras.adapters:
            loras.restored(seq, scales)

    def _seq(self, seq: object, what: str) -> int:
        s = _as_int(seq)
        if s is None or not 0 <= s < self.n_seq_max:
            raise ContextError(f"{what}: sequence {seq!r} is not an id in [0, n_seq_max={self.n_seq_max})")
        return s

    def _validate_batch(self, tokens, pos, seq_ids, logits_mask) -> tuple[np.ndarray, ...]:
        toks = self._tokens(tokens)
        n = len(toks)
        if n > self.n_batch:
            raise ContextError(f"decode takes one batch: {n} tokens > n_batch={self.n_batch}")
        p, s = (_int_array(name, a, n) for name, a in (("pos", pos), ("seq_ids", seq_ids)))
        bad = np.flatnonzero((s < 0) | (s >= self.n_seq_max))
        if bad.size:
            i = int(bad[0])
            raise ContextError(f"batch token {i}: sequence {int(s[i])} is not an id in [0, n_seq_max={self.n_seq_max})")
        # each token's expected position: its sequence's length plus the tokens of it before it in the batch
        seqs, counts = np.unique(s, return_counts=True)
        held = np.zeros(self.n_seq_max, dtype=np.int64)
        held[seqs] = [lib.lm_context_seq_len(self._live, int(q)) for q in seqs]
        order = np.argsort(s, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.searchsorted(s[order], s[order])
        expected = held[s] + rank
        bad = np.flatnonzero(p != expected)
        if bad.size:
            i = int(bad[0])
            raise ContextError(
                f"batch token {i}: sequence {int(s[i])} continues at position {int(expected[i])}, "
                f"got position {int(p[i])}"
            )
        for q, c in zip(seqs.tolist(), counts.tolist()):
            if held[q] + c > self.n_ctx_seq:
                raise ContextFullError(
                    f"context full: sequence {q} needs {held[q] + c} positions ({held[q]} cached + {c} new) "
                    f"> n_ctx_seq={self.n_ctx_seq}"
                )
        if logits_mask is None:  # the last token of each sequence
            mask = np.zeros(n, dtype=np.int8)
            mask[n - 1 - np.unique(s[::-1], return_index=True)[1]] = 1
        else:
            m = np.asarray(logits_mask)
            if m.shape != (n,) or m.dtype.kind not in "biu":
                raise ContextError(f"logits_mask must be {n} booleans, got shape {m.shape} dtype {m.dtype}")
            mask = (m != 0).astype(np.int8)
        return toks, p, s, mask

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

    def collect_imatrix(self, on: bool, head: bool = False) -> tuple[np.ndarray, ...] | None:
        """Importance-matrix statistics (lm_context_imatrix): on=True starts
        from zero and every later batch run here adds x*x of each matmul input;
        on=False stops and returns (sums f32 [n_layer, lm_imatrix_layer_floats],
        counts i64 [n_layer, 1 + n_expert]), and with head=True (the output
        head's input, of the rows whose logits are asked for) head_sums f32
        [n_embd] and head_count i64 [1]; None if it was not on. Layers on an
        offload device are not seen, so an offloaded context refuses.
        imatrix_dense(False) leaves the dense matmuls out of the next batches."""
        hp = self.model.hparams
        with self._lock:
            if not on:
                if self._imatrix is None:
                    return None
                self._check(lib.lm_context_imatrix(self._live, ffi.NULL, ffi.NULL, 0, ffi.NULL, ffi.NULL))
                out, self._imatrix = self._imatrix, None
                return out
            if self.offload.gpu_layers:
                raise ContextError("importance-matrix collection runs on the CPU only: use gpu_layers=0")
            width = int(lib.lm_imatrix_layer_floats(self.model.native.ptr))
            sums = np.zeros((hp.n_layer, width), dtype=np.float32)
            counts = np.zeros((hp.n_layer, 1 + max(hp.n_expert, 0)), dtype=np.int64)
            bufs: tuple[np.ndarray, ...] = (sums, counts)
            if head:
                bufs += (np.zeros(hp.n_embd, dtype=np.float32), np.zeros(1, dtype=np.int64))
            self._imatrix = bufs
            self._register_imatrix(True)
            return None

    def imatrix_dense(self, on: bool) -> None:
        """While collecting: whether the dense matmuls of the next batches add
        (the experts' always do)."""
        with self._lock:
            if self._imatrix is None:
                raise ContextError("imatrix_dense: no importance-matrix collection is on")
            self._register_imatrix(on)

    def _register_imatrix(self, dense: bool) -> None:
        assert self._imatrix is not None
        sums, counts, *head = self._imatrix
        hs, hc = ffi.NULL, ffi.NULL
        if head:
            hs, hc = ffi.from_buffer("float[]", head[0]), ffi.from_buffer("int64_t[]", head[1])
        ptrs = ffi.from_buffer("float[]", sums), ffi.from_buffer("int64_t[]", counts)
        self._check(lib.lm_context_imatrix(self._live, *ptrs, int(bool(dense)), hs, hc))

    def _collect(self, T: int) -> None:
        self.captured = {k: buf[:T].copy() for k, buf in self._capture.items()}

    def _validate(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = self._tokens(tokens)
        if self.n_past + arr.size > self.n_ctx_seq:
            limit = f"n_ctx={self.n_ctx}" if self.n_ctx_seq == self.n_ctx else f"n_ctx_seq={self.n_ctx_seq}"
            raise ContextFullError(f"context full: {self.n_past} cached + {arr.size} new tokens > {limit}")
        return arr

    def _tokens(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
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
        seqs = f", n_seq_max={self.n_seq_max}, n_ctx_seq={self.n_ctx_seq}" if self.n_seq_max > 1 else ""
        return f"Context(n_ctx={self.n_ctx}, n_past={self.n_past}, kv_type={self.kv_type!r}{seqs})"


def _is_int(x: object) -> bool:
    return _as_int(x) is not None


def _as_int(x: object) -> int | None:
    """x as an int when it is one (numpy integers too, bools not), else None"""
    return int(x) if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else None


def _int_array(name: str, values: object, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ContextError(f"{name} must be {n} integers (one per token), got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ContextError(f"{name}: values outside int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _sequences(n_ctx: int, n_seq_max: object, n_ctx_seq: object) -> tuple[int, int]:
    """(n_seq_max, n_ctx_seq) checked against n_ctx; n_ctx_seq None: n_ctx // n_seq_max."""
    limit = min(int(lib.LM_SEQ_MAX), n_ctx)
    seqs = _as_int(n_seq_max)
    if seqs is None or not 1 <= seqs <= limit:
        raise ContextError(f"n_seq_max must be an integer in [1, {limit}] (at most n_ctx={n_ctx}), got {n_seq_max!r}")
    per_seq = n_ctx // seqs if n_ctx_seq is None else _as_int(n_ctx_seq)
    if per_seq is None or not 1 <= per_seq <= n_ctx:
        raise ContextError(
            f"n_ctx_seq must be an integer in [1, n_ctx={n_ctx}] (or None: n_ctx // n_seq_max), got {n_ctx_seq!r}"
        )
    return seqs, per_seq
