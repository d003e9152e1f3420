"""LoRA adapters in llama.cpp's GGUF form, applied at run time.

    adapter = LoraAdapter.load("adapter.gguf", model)   # checked against the base model
    loras = LoraSet(context, [adapter])                  # the context applies them from now on
    loras.set_default(0, 1.0)                            # adapter 0 at scale 1 (every sequence no request holds)
    engine.submit(prompt, sampler, lora=[0.5])           # one request at its own scale

A file is an adapter when `general.type = adapter` and `adapter.type =
lora`; its `general.architecture` must be the base model's, and its tensors
come in pairs `<base tensor>.lora_a` [rank, n_in] / `.lora_b` [n_out, rank]
(ggml ne reversed) for base matrices the forward pass multiplies by (q, k,
v, o, gate, up, down, the output head; fused attn_qkv / ffn_up split by
rows). `adapter.lora.alpha` (0: none) makes the scale scale * alpha / rank,
as llama.cpp's llama_adapter_lora_weight::get_scale. Norm tensors
(`*_norm.weight`), which llama.cpp skips, are skipped here too. Every
refusal is a LoraError naming the file and the tensor or key.

The native side (native/model/lora.c) adds s * (x A^T) B^T to each targeted
matmul's output; the base weights are never touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import MODEL_TENSOR

from lamina.engine.loader import tensor_name
from lamina.engine.slots import Placement
from lamina.errors import GGUFError, LaminaError
from lamina.gguf.reader import GGUFFile, TensorInfo

if TYPE_CHECKING:
    from lamina.engine.context import Context, Model

ADAPTER_TYPE_KEY = "adapter.type"
ALPHA_KEY = "adapter.lora.alpha"
ALORA_KEY = "adapter.alora.invocation_tokens"


class LoraError(GGUFError):
    """An adapter file that is not a LoRA adapter of this base model."""


class LoraScaleError(LaminaError, ValueError):
    """A scale or adapter id out of range, or adapters a context cannot take."""


@dataclass(frozen=True)
class _Target:
    layer: int
    target: int  # enum lm_lora_target
    row0: int  # rows [row0, row0 + rows) of lora_b (fused matrices are split by rows)
    rows: int


def _targets(model: Model) -> dict[str, list[_Target]]:
    """base tensor name -> the native matrices it stands for"""
    from lamina.native import lib

    hp = model.hparams
    out: dict[str, list[_Target]] = {}
    Q, KV, F = hp.q_dim, hp.kv_dim, hp.n_ff
    for il in range(hp.n_layer):

        def add(kind: MODEL_TENSOR, *parts: tuple[int, int, int], il: int = il) -> None:
            out[tensor_name(kind, il)] = [_Target(il, t, r0, n) for t, r0, n in parts]

        if hp.fused_qkv:
            add(MODEL_TENSOR.ATTN_QKV, (lib.LM_LORA_WQ, 0, Q), (lib.LM_LORA_WK, Q, KV), (lib.LM_LORA_WV, Q + KV, KV))
        else:
            add(MODEL_TENSOR.ATTN_Q, (lib.LM_LORA_WQ, 0, Q))
            add(MODEL_TENSOR.ATTN_K, (lib.LM_LORA_WK, 0, KV))
            add(MODEL_TENSOR.ATTN_V, (lib.LM_LORA_WV, 0, KV))
        add(MODEL_TENSOR.ATTN_OUT, (lib.LM_LORA_WO, 0, hp.n_embd))
        if hp.n_expert:
            continue
        if hp.fused_gate_up:
            add(MODEL_TENSOR.FFN_UP, (lib.LM_LORA_W_GATE, 0, F), (lib.LM_LORA_W_UP, F, F))
        else:
            add(MODEL_TENSOR.FFN_GATE, (lib.LM_LORA_W_GATE, 0, F))
            add(MODEL_TENSOR.FFN_UP, (lib.LM_LORA_W_UP, 0, F))
        add(MODEL_TENSOR.FFN_DOWN, (lib.LM_LORA_W_DOWN, 0, hp.n_embd))
    if not hp.tied_output:
        out[tensor_name(MODEL_TENSOR.OUTPUT)] = [_Target(0, lib.LM_LORA_OUTPUT, 0, hp.n_vocab)]
    return out


class LoraAdapter:
    """One adapter file, checked against a base model; its tensors stay in the file's map."""

    def __init__(
        self,
        path: str,
        model: Model,
        gguf: GGUFFile,
        alpha: float,
        native: Any,
        keep: list[Any],
        pairs: dict[str, tuple[TensorInfo, TensorInfo]],
    ) -> None:
        self.path, self.model, self.gguf, self.alpha = path, model, gguf, alpha
        self.pairs = pairs  # base tensor name -> (lora_a, lora_b)
        self.task_name = str(gguf.get("adapter.lora.task_name", ""))  # llama-server lists them
        self.prefix = str(gguf.get("adapter.lora.prompt_prefix", ""))
        self.native = native
        self._keep = keep
        self.n_pairs = len(pairs)
        self._hash: str | None = None

    def content_hash(self) -> str:
        """sha256 hex of what the adapter computes with: alpha and every pair's
        names, types, shapes and bytes (not the file's other metadata). A saved
        state records it (lamina.engine.state); computed once, on first use."""
        if self._hash is None:
            import hashlib

            h = hashlib.sha256(f"alpha={self.alpha!r}".encode())
            for base, pair in sorted(self.pairs.items()):
                for t in pair:
                    h.update(f"\n{base}:{t.name}:{','.join(map(str, t.ne))}:{int(t.ggml_type)}\n".encode())
                    h.update(np.ascontiguousarray(self.gguf.tensor_bytes(t.name)).data)
            self._hash = h.hexdigest()
        return self._hash

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Model) -> LoraAdapter:
        from lamina.native import ffi, last_error, lib

        path = os.fspath(path)
        gguf = GGUFFile(path)  # truncated or lying headers: its own typed errors
        try:
            alpha, pairs = _read_pairs(gguf, model)
            targets = _targets(model)
            keep: list[Any] = []
            weights: list[dict[str, Any]] = []
            for base, (a, b) in sorted(pairs.items()):
                if base not in targets:
                    raise LoraError(
                        path,
                        f"targets {base}, which this {model.hparams.arch} model "
                        f"({os.path.basename(model.path)}) does not have or lamina does not adapt "
                        "(hint: maybe the wrong base model?)",
                        tensor=a.name,
                    )
                _check_shapes(gguf, model, base, a, b)
                rank = a.ne[1]
                a_bytes, b_bytes = gguf.tensor_bytes(a.name), gguf.tensor_bytes(b.name)
                b_rows = b_bytes.reshape(b.ne[1], -1)  # [n_out, row bytes of rank values]
                keep += [base, a_bytes, b_bytes]
                for t in targets[base]:
                    part = b_rows[t.row0 : t.row0 + t.rows]
                    a_buf, b_buf = ffi.from_buffer(a_bytes), ffi.from_buffer(part)
                    keep += [part, a_buf, b_buf]
                    weights.append(
                        {
                            "layer": t.layer,
                            "target": t.target,
                            "rank": rank,
                            "a": {"data": a_buf, "type": int(a.ggml_type)},
                            "b": {"data": b_buf, "type": int(b.ggml_type)},
                        }
                    )
            arr = ffi.new("lm_lora_weight[]", weights) if weights else ffi.NULL
            ptr = lib.lm_lora_create(model.native.ptr, arr, len(weights), alpha)
            if ptr == ffi.NULL:
                raise LoraError(path, f"the native core refused the adapter: {last_error()}")
        except BaseException:
            gguf.close()
            raise
        return cls(path, model, gguf, alpha, ffi.gc(ptr, lib.lm_lora_free), keep, pairs)

    def delta(self, base: str, scale: float) -> np.ndarray:
        """f32 [n_out, n_in]: scale * alpha / rank * B A of one base matrix, what merging adds to it"""
        from lamina.quants import dequantize

        a_info, b_info = self.pairs[base]
        a = dequantize(self.gguf.tensor_bytes(a_info.name), a_info.ggml_type).reshape(a_info.ne[1], a_info.ne[0])
        b = dequantize(self.gguf.tensor_bytes(b_info.name), b_info.ggml_type).reshape(b_info.ne[1], b_info.ne[0])
        rank = a.shape[0]
        mult = scale * self.alpha / rank if self.alpha else scale  # llama.cpp's get_scale
        return (b.astype(np.float32) @ a.astype(np.float32)) * np.float32(mult)

    def close(self) -> None:
        """Unmap the file; only after every context applying it has dropped it."""
        self._keep = []
        self.gguf.close()

    def __repr__(self) -> str:
        return f"LoraAdapter({os.path.basename(self.path)!r}, {self.n_pairs} matrices, alpha={self.alpha:g})"


def _read_pairs(gguf: GGUFFile, model: Model) -> tuple[float, dict[str, tuple[TensorInfo, TensorInfo]]]:
    """alpha and {base tensor: (lora_a, lora_b)}, after the metadata checks"""
    path = gguf.path
    kind = gguf.get("general.type")
    if kind != "adapter":
        raise LoraError(path, f"expected 'adapter' (a LoRA adapter file), found {kind!r}", key="general.type")
    if gguf.get(ADAPTER_TYPE_KEY) != "lora":
        raise LoraError(path, f"expected 'lora', found {gguf.get(ADAPTER_TYPE_KEY)!r}", key=ADAPTER_TYPE_KEY)
    arch = gguf.get("general.architecture")
    if arch != model.hparams.arch:
        raise LoraError(
            path,
            f"adapter for {arch!r}, base model {os.path.basename(model.path)} is {model.hparams.arch!r}",
            key="general.architecture",
        )
    if gguf.get(ALORA_KEY) is not None:
        raise LoraError(path, "activated LoRA (aLoRA) adapters are not supported", key=ALORA_KEY)
    alpha = gguf.get(ALPHA_KEY, 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= float(alpha) < float("inf"):
        raise LoraError(path, f"expected a finite number >= 0, found {alpha!r}", key=ALPHA_KEY)
    halves: dict[str, dict[str, TensorInfo]] = {}
    for info in gguf.tensors:
        name = info.name
        if name.endswith((".lora_a", ".lora_b")):
            halves.setdefault(name[:-7], {})[name[-1]] = info
        elif name.endswith("_norm.weight"):
            continue  # llama.cpp skips them too
        else:
            raise LoraError(path, "unexpected suffix: expected .lora_a or .lora_b", tensor=name)
    pairs = {}
    for base, h in halves.items():
        if set(h) != {"a", "b"}:
            missing = f"{base}.lora_{'b' if 'a' in h else 'a'}"
            raise LoraError(path, f"the pair for {base} lacks {missing}", tensor=missing)
        pairs[base] = (h["a"], h["b"])
    return float(alpha), pairs


def _check_shapes(gguf: GGUFFile, model: Model, base: str, a: TensorInfo, b: TensorInfo) -> None:
    from lamina.native import lib

    path = gguf.path
    ne = tuple(model.native.gguf.tensor(base).ne)
    if len(a.ne) != 2 or len(b.ne) != 2:
        raise LoraError(path, f"shapes {a.ne} / {b.ne}: expected two dimensions each", tensor=a.name)
    if a.ne[0] != ne[0]:
        raise LoraError(path, f"shape (ggml ne) {a.ne}: expected ({ne[0]}, rank) for base {base} {ne}", tensor=a.name)
    if b.ne[1] != ne[1] or b.ne[0] != a.ne[1]:
        raise LoraError(
            path, f"shape (ggml ne) {b.ne}: expected ({a.ne[1]}, {ne[1]}) for base {base} {ne}", tensor=b.name
        )
    for t in (a, b):
        if not lib.lm_type_supported(int(t.ggml_type)):
            raise LoraError(path, f"type {t.ggml_type.name} does not run here", tensor=t.name)
        for ty in (int(t.ggml_type), int(lib.lm_type_vec_dot_type(int(t.ggml_type)))):
            if t.ne[0] % int(lib.lm_type_block_size(ty)):
                raise LoraError(
                    path, f"rows of {t.ne[0]} are not whole {lib.lm_type_name(ty).decode()} blocks", tensor=t.name
                )


class LoraSet:
    """The adapters a context applies, in order, and their scales.

    `defaults` are the scales of every sequence no request holds (Llama's
    low-level eval, requests that name none); a request of the engine may
    carry its own (the server's per-request `lora`). A slot's cache is only
    reused by a request of the same scales (admit), as llama-server clears a
    slot's cache when its adapters change."""

    def __init__(self, context: Context, adapters: Sequence[LoraAdapter]) -> None:
        from lamina.native import ffi, lib

        self.context, self.adapters = context, list(adapters)
        for i, a in enumerate(self.adapters):
            if a.model is not context.model:
                raise LoraError(a.path, f"adapter {i} was loaded for another model than this context's")
        if context.offload.gpu_layers and self.adapters:
            raise LoraScaleError("LoRA adapters with offloaded layers (--gpu-layers) are not supported yet")
        ptrs = ffi.new("lm_lora *[]", [a.native for a in self.adapters]) if self.adapters else ffi.NULL
        with context._lock:
            _check(lib.lm_context_set_loras(context._live, ptrs, len(self.adapters)), "set the adapters")
        setattr(context, "_loras", self)  # noqa: B010 (the context keeps the adapters' maps alive while it applies them)
        self.defaults = [0.0] * len(self.adapters)
        self._seq_scales: dict[int, tuple[float, ...]] = {}  # sequences requests hold, and their scales

    def set_default(self, i: int, scale: float) -> None:
        """adapter i's scale from now on, for every sequence no running request holds"""
        self.defaults[self._id(i)] = check_scale(scale)
        for seq in range(self.context.n_seq_max):
            if seq not in self._seq_scales:
                self._native(seq, i, self.defaults[i])

    def resolve(self, scales: Sequence[float] | None) -> tuple[float, ...]:
        """a request's scales: one per adapter, or the defaults"""
        if scales is None:
            return tuple(self.defaults)
        if len(scales) != len(self.adapters):
            raise LoraScaleError(f"lora: expected {len(self.adapters)} scales (one per adapter), got {len(scales)}")
        return tuple(check_scale(s) for s in scales)

    def admit(self, scales: tuple[float, ...], placement: Placement) -> Placement:
        """the placement of a request of these scales, with no cached prefix
        when that was computed under other scales; its sequence takes them"""
        slot, donor = placement.slot, placement.copy_from
        source = donor if donor is not None else slot
        if placement.keep and self._seq_scales.get(source.seq) != scales:
            placement = Placement(slot, 0, None)
            slot.tokens = []
        for i, s in enumerate(scales):
            self._native(slot.seq, i, s)
        self._seq_scales[slot.seq] = scales
        return placement

    def seq_scales(self, seq: int) -> tuple[float, ...]:
        """the scales sequence seq runs at: the request's that last held it, else the defaults"""
        return self._seq_scales.get(seq, tuple(self.defaults))

    def restored(self, seq: int, scales: tuple[float, ...]) -> None:
        """seq now holds a saved cache computed at these scales (its own, checked by
        lamina.engine.state): it keeps them, as a request's sequence does, so admit
        reuses the cache for requests of these scales only. The caller holds the context's lock."""
        for i, s in enumerate(scales):
            self._native_locked(seq, i, s)
        self._seq_scales[seq] = tuple(scales)

    def _id(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.adapters):
            raise LoraScaleError(f"lora adapter id {i!r} outside [0, {len(self.adapters)})")
        return i

    def _native(self, seq: int, i: int, scale: float) -> None:
        with self.context._lock:
            self._native_locked(seq, i, scale)

    def _native_locked(self, seq: int, i: int, scale: float) -> None:
        from lamina.native import lib

        _check(lib.lm_context_lora_scale(self.context._live, seq, i, scale), "set a scale")


def load_loras(context: Context, files: Sequence[tuple[str | os.PathLike[str], float]]) -> LoraSet:
    """the adapter files (path, scale), in order, applied by the context from now on"""
    adapters: list[LoraAdapter] = []
    try:
        for path, _ in files:
            adapters.append(LoraAdapter.load(path, context.model))
        loras = LoraSet(context, adapters)
        for i, (_, scale) in enumerate(files):
            loras.set_default(i, scale)
    except BaseException:
        for a in adapters:
            a.close()
        raise
    return loras


def check_scale(scale: object) -> float:
    """a scale: a finite number (LoraScaleError otherwise)"""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not abs(float(scale)) < float("inf"):
        raise LoraScaleError(f"lora scale must be a finite number, got {scale!r}")
    return float(scale)


def _check(rc: int, what: str) -> None:
    from lamina.native import last_error

    if rc:
        raise LoraScaleError(f"cannot {what}: {last_error()}")
