"""Encoder models (llama.cpp's `bert` architecture): embeddings and rerank
scores, not text.

    enc = EncoderModel.load("bge-small.gguf")
    hidden = enc.hidden(tokens)            # [T, n_embd], every token sees every token
    score = enc.rank_score(hidden)         # rerank models: cls.output on the CLS row

The forward pass is one native call per input (lm_encoder_run,
native/model/forward_bert.c) over the GGUF's memory map; there is no KV cache
and no generation. The classifier head (llama.cpp's `rank` pooling: the first
token's row, through `cls` + tanh when the file has it, then `cls.output`) is
a few hundred multiply-adds, done here in numpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import MODEL_TENSOR, GGMLQuantizationType

from lamina.engine.embeddings import POOLING_BY_ID
from lamina.engine.loader import ModelConfigError, tensor_name
from lamina.errors import GGUFTensorError, LaminaError
from lamina.gguf.reader import GGUFFile

ENCODER_ARCHITECTURES = ("bert",)
T = MODEL_TENSOR


class EncoderError(LaminaError, ValueError):
    """An encoder model was asked for something it cannot do (generate, rank without a head)."""


def is_encoder(gguf: GGUFFile) -> bool:
    return gguf.architecture in ENCODER_ARCHITECTURES


@dataclass(frozen=True)
class EncoderHParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_pos: int  # rows of position_embd: the longest input
    n_types: int  # rows of token_types
    norm_eps: float
    pooling: str | None  # the file's {arch}.pooling_type, None when it names none
    n_cls_out: int  # outputs of the classifier head (1 for a reranker), 0 without one
    labels: tuple[str, ...]


def read_encoder_hparams(gguf: GGUFFile) -> EncoderHParams:
    arch = gguf.architecture
    meta = gguf.metadata

    def count(key: str) -> int:
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ModelConfigError(gguf.path, f"{arch}.{key} = {value!r}: expected a positive integer")
        return value

    if meta.get(f"{arch}.attention.causal", True) is not False:
        raise ModelConfigError(gguf.path, f"{arch}.attention.causal must be false for an encoder")
    n_embd, n_head = count("embedding_length"), count("attention.head_count")
    if n_embd % n_head:
        raise ModelConfigError(gguf.path, f"{arch}.attention.head_count {n_head} does not divide n_embd {n_embd}")
    eps = meta.get(f"{arch}.attention.layer_norm_epsilon")
    if not isinstance(eps, float) or not eps > 0:
        raise ModelConfigError(gguf.path, f"{arch}.attention.layer_norm_epsilon = {eps!r}: expected a positive float")
    pooling_id = meta.get(f"{arch}.pooling_type")
    pooling = None
    if pooling_id is not None:
        if pooling_id == 4:  # llama.cpp's RANK
            pooling = "rank"
        elif pooling_id in POOLING_BY_ID:
            pooling = POOLING_BY_ID[pooling_id]
        else:
            raise ModelConfigError(gguf.path, f"{arch}.pooling_type = {pooling_id!r}: expected 0-4")
    tok = gguf.tensor(tensor_name(T.TOKEN_EMBD))
    pos = gguf.tensor(tensor_name(T.POS_EMBD))
    types = gguf.tensor(tensor_name(T.TOKEN_TYPES))
    n_cls_out = 0
    if gguf.has_tensor(tensor_name(T.CLS_OUT)):
        ne = gguf.tensor(tensor_name(T.CLS_OUT)).ne
        n_cls_out = int(ne[1]) if len(ne) > 1 else 1
    labels = tuple(str(x) for x in meta.get(f"{arch}.classifier.output_labels", ()) or ())
    return EncoderHParams(
        arch=arch,
        n_vocab=int(tok.ne[1]),
        n_embd=n_embd,
        n_layer=count("block_count"),
        n_ff=count("feed_forward_length"),
        n_head=n_head,
        n_pos=int(pos.ne[1]),
        n_types=int(types.ne[1]),
        norm_eps=eps,
        pooling=pooling,
        n_cls_out=n_cls_out,
        labels=labels,
    )


class EncoderModel:
    """An lm_encoder over a GGUF's memory map, with its thread pool."""

    def __init__(self, gguf: GGUFFile, n_threads: int) -> None:
        from lamina.native import ffi, lib

        if not is_encoder(gguf):
            raise EncoderError(f"{gguf.path}: {gguf.architecture!r} is not an encoder architecture")
        self.gguf = gguf
        self.path = gguf.path
        self.hparams = hp = read_encoder_hparams(gguf)
        self._ffi, self._lib = ffi, lib
        self._keep: list[Any] = []
        E, F = hp.n_embd, hp.n_ff
        p = ffi.new("lm_encoder_params *")
        layers = ffi.new("lm_encoder_layer[]", hp.n_layer)
        self._keep += [p, layers]
        p.n_vocab, p.n_embd, p.n_layer, p.n_ff, p.n_head = hp.n_vocab, E, hp.n_layer, F, hp.n_head
        p.n_pos, p.n_types, p.norm_eps = hp.n_pos, hp.n_types, hp.norm_eps
        p.activation = lib.LM_ENC_GELU_ERF  # HF's "gelu" (llama.cpp's ggml_gelu is its tanh approximation)
        p.tok_embd = self._matrix(tensor_name(T.TOKEN_EMBD), (E, hp.n_vocab))
        p.pos_embd = self._matrix(tensor_name(T.POS_EMBD), (E, hp.n_pos))
        p.type_embd = self._matrix(tensor_name(T.TOKEN_TYPES), (E, hp.n_types))
        p.embd_norm_w = self._vector(tensor_name(T.TOKEN_EMBD_NORM), E)
        p.embd_norm_b = self._vector(tensor_name(T.TOKEN_EMBD_NORM, suffix="bias"), E)
        for il in range(hp.n_layer):
            L = layers[il]
            for field, kind, ne, bias_n in (
                ("q", T.ATTN_Q, (E, E), E),
                ("k", T.ATTN_K, (E, E), E),
                ("v", T.ATTN_V, (E, E), E),
                ("o", T.ATTN_OUT, (E, E), E),
                ("_up", T.FFN_UP, (E, F), F),
                ("_down", T.FFN_DOWN, (F, E), E),
            ):
                setattr(L, "w" + field, self._matrix(tensor_name(kind, il), ne))
                setattr(L, "b" + field, self._vector(tensor_name(kind, il, "bias"), bias_n))
            L.attn_norm_w = self._vector(tensor_name(T.ATTN_OUT_NORM, il), E)
            L.attn_norm_b = self._vector(tensor_name(T.ATTN_OUT_NORM, il, "bias"), E)
            L.out_norm_w = self._vector(tensor_name(T.LAYER_OUT_NORM, il), E)
            L.out_norm_b = self._vector(tensor_name(T.LAYER_OUT_NORM, il, "bias"), E)
        self._params, self._layers = p, layers
        self._head = self._classifier() if hp.n_cls_out else None
        self._tp = lib.lm_threadpool_create(n_threads)
        if self._tp == ffi.NULL:
            raise MemoryError("lm_threadpool_create failed")
        self.n_threads = n_threads

    @classmethod
    def load(cls, path: str | os.PathLike[str], n_threads: int | None = None) -> EncoderModel:
        return cls(GGUFFile(path), n_threads or max(1, min(8, os.cpu_count() or 1)))

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def close(self) -> None:
        if self._tp is not None:
            self._lib.lm_threadpool_free(self._tp)
            self._tp = None

    def hidden(self, tokens: Sequence[int], types: Sequence[int] | None = None) -> np.ndarray:
        """The last layer's output [T, n_embd] for one input (positions 0..T-1)."""
        from lamina.native import last_error

        if self._tp is None:
            raise EncoderError("the encoder model is closed")
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        if toks.ndim != 1 or len(toks) == 0:
            raise EncoderError("encoder input is empty: nothing to evaluate")
        if len(toks) > self.hparams.n_pos:
            raise EncoderError(
                f"encoder input has {len(toks)} tokens, more than the model's {self.hparams.n_pos} positions"
            )
        tt = None if types is None else np.ascontiguousarray(types, dtype=np.int32)
        if tt is not None and tt.shape != toks.shape:
            raise EncoderError(f"{len(tt)} token types for {len(toks)} tokens")
        out = np.empty((len(toks), self.hparams.n_embd), dtype=np.float32)
        ffi = self._ffi
        rc = self._lib.lm_encoder_run(
            self._tp,
            self._params,
            self._layers,
            ffi.from_buffer("int32_t[]", toks),
            ffi.NULL if tt is None else ffi.from_buffer("int32_t[]", tt),
            len(toks),
            ffi.from_buffer("float[]", out),
        )
        if rc != 0:
            raise EncoderError(f"lm_encoder_run: {last_error()}")
        return out

    def rank_score(self, hidden: np.ndarray) -> np.ndarray:
        """llama.cpp's rank pooling: the classifier head on the first (CLS) row, [n_cls_out] scores."""
        if self._head is None:
            raise EncoderError(
                f"{self.path}: not a reranker: the file has no classifier head ({tensor_name(T.CLS_OUT)})"
            )
        dense, out_w, out_b = self._head
        x = hidden[0].astype(np.float64)
        if dense is not None:
            x = np.tanh(dense[0] @ x + dense[1])
        return (out_w @ x + out_b).astype(np.float32)

    # -- weights --------------------------------------------------------------

    def _matrix(self, name: str, ne: tuple[int, int]) -> Any:
        from lamina.engine.loader import _check_tensor

        info = _check_tensor(self.gguf, name, ne, self.hparams.arch)
        data = self.gguf.tensor_bytes(name)
        buf = self._ffi.from_buffer(data)
        m = self._ffi.new("lm_matrix *", {"data": buf, "type": int(info.ggml_type)})
        self._keep += [data, buf, m]
        return m[0]

    def _array(self, name: str, ne: tuple[int, ...]) -> np.ndarray:
        info = self.gguf.tensor(name)
        if tuple(info.ne) != ne or (name == tensor_name(T.CLS_OUT) and ne[0] != self.hparams.n_embd):
            raise GGUFTensorError(self.gguf.path, f"shape (ggml ne) {tuple(info.ne)}: expected {ne}", tensor=name)
        raw = self.gguf.tensor_bytes(name)
        if info.ggml_type == GGMLQuantizationType.F32:
            values = raw.reshape(-1).view(np.float32)
        else:
            from lamina.quants import dequantize

            values = dequantize(raw.reshape(1, -1), info.ggml_type).reshape(-1)
        if not np.all(np.isfinite(values)):
            raise GGUFTensorError(self.gguf.path, "expected finite values", tensor=name)
        return values.reshape(tuple(reversed(ne)))

    def _vector(self, name: str, n: int) -> Any:
        values = np.ascontiguousarray(self._array(name, (n,)), dtype=np.float32)
        buf = self._ffi.from_buffer("float[]", values)
        self._keep += [values, buf]
        return self._ffi.cast("const float *", buf)

    def _classifier(self) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray, np.ndarray]:
        E, n_out = self.hparams.n_embd, self.hparams.n_cls_out
        dense = None
        if self.gguf.has_tensor(tensor_name(T.CLS)):
            dense = (
                self._array(tensor_name(T.CLS), (E, E)).astype(np.float64),
                self._array(tensor_name(T.CLS, suffix="bias"), (E,)).astype(np.float64),
            )
        ne = tuple(self.gguf.tensor(tensor_name(T.CLS_OUT)).ne)  # [E] or [E, 1] for one output
        w = self._array(tensor_name(T.CLS_OUT), ne).reshape(n_out, E).astype(np.float64)
        b = self._array(tensor_name(T.CLS_OUT, suffix="bias"), (n_out,)).astype(np.float64)
        return dense, w, b
