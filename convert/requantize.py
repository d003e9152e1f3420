"""GGUF -> GGUF with a mix applied: what llama-quantize does, as a planned Job.

Metadata is copied key by key with its GGUF type; general.quantization_version
and general.file_type are re-set (and so move last), split keys dropped.
Tensors that keep their type are copied byte for byte; the rest are widened to
f32 and quantized. Requantizing an already-quantized tensor loses quality
twice, so it is refused unless asked for, before anything is written. With an
importance matrix, each quantized tensor gets its entry as llama-quantize
gives it (lamina.convert.imatrix.apply), and the quantize.imatrix.* keys go
after general.file_type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.encode import Encoder
from lamina.convert.errors import QuantizeInputError
from lamina.convert.imatrix import apply as imatrix_apply
from lamina.convert.imatrix.format import Imatrix
from lamina.convert.pipeline import Job
from lamina.convert.recipes import Mix, ModelShape, TensorSpec, choose_types, tensor_order
from lamina.convert.writer import OutTensor, check_output, set_kv
from lamina.gguf.reader import GGUFFile, TensorInfo
from lamina.quants import dequantize

_FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
_SPLIT_KEYS = (
    gguf.Keys.Split.LLM_KV_SPLIT_NO,
    gguf.Keys.Split.LLM_KV_SPLIT_COUNT,
    gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT,
)
_RESET_KEYS = (gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE)


def plan_gguf(
    src: Path,
    out: Path,
    mix: Mix,
    encoder: Encoder,
    force: bool = False,
    pure: bool = False,
    allow_requantize: bool = False,
    imatrix: Imatrix | None = None,
    imatrix_arg: str = "",
    edit: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> Job:
    """imatrix: importance data for the quantizers; imatrix_arg: the file name as
    given, recorded in quantize.imatrix.file as llama-quantize records it.
    edit: tensor name -> a function of its f32 values (numpy shape) whose
    result is written instead (LoRA merging), whatever the types."""
    g = GGUFFile(src)
    if out.resolve() == src.resolve():
        raise QuantizeInputError(f"{out}: the output would overwrite the input")
    check_output(out, force)
    arch = g.architecture
    infos = {t.name: t for t in g.tensors}
    order = tensor_order(list(infos))
    specs = [TensorSpec(n, infos[n].ne, infos[n].ggml_type) for n in order]
    types = choose_types(specs, mix, _model_shape(g, arch), pure, has_imatrix=imatrix is not None)

    requantized = [n for n in order if types[n] != infos[n].ggml_type and infos[n].ggml_type not in _FLOAT_TYPES]
    if requantized and not allow_requantize:
        n = requantized[0]
        raise QuantizeInputError(
            f"{src}: tensor {n!r} is already {infos[n].ggml_type.name} ({len(requantized)} quantized tensors would "
            f"be requantized, losing quality twice); pass --allow-requantize to do it anyway"
        )

    quantized = [(n, infos[n].ne, types[n]) for n in order if types[n] != infos[n].ggml_type]
    # without an imatrix too: the types that need one refuse here, as llama-quantize does
    importance = imatrix_apply.plan_importance(imatrix, quantized, mix.ftype, str(src))

    new_keys = imatrix_apply.quantize_keys(imatrix, imatrix_arg) if imatrix is not None else {}

    def metadata(w: gguf.GGUFWriter) -> None:
        for key, value in g.metadata.items():
            # re-set keys move last (ggml's gguf_set_val_* removes, then appends)
            if key in (gguf.Keys.General.ARCHITECTURE, *_SPLIT_KEYS, *_RESET_KEYS, *new_keys):
                continue
            t = g.metadata_types[key]
            set_kv(w, key, value, t.type, t.element)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_file_type(int(mix.ftype))
        for key, (value, vtype) in new_keys.items():
            w.add_key_value(key, value, vtype)

    tensors = [
        (
            OutTensor(n, infos[n].np_shape, types[n]),
            partial(_produce, g, infos[n], types[n], encoder, importance.get(n), (edit or {}).get(n)),
        )
        for n in order
    ]
    unknown = sorted(set(edit or {}) - set(infos))
    if unknown:
        raise QuantizeInputError(f"{src}: no tensor {unknown[0]!r} to edit")
    return Job(out, arch, metadata, tensors)


def _model_shape(g: GGUFFile, arch: str) -> ModelShape:
    def first(key: str, default: int | None = None) -> int:
        v = g.get(key, default)
        if v is None:
            v = g.require(key)
        return int(np.asarray(v).ravel()[0])  # per-layer arrays: llama.cpp uses layer 0

    n_layer = first(f"{arch}.block_count")
    n_head = first(f"{arch}.attention.head_count")
    n_head_kv = first(f"{arch}.attention.head_count_kv", n_head)
    is_70b = n_layer == 80 and (arch == "qwen2" or (arch == "llama" and n_head != n_head_kv))
    return ModelShape(n_layer, n_head, n_head_kv, is_70b, n_expert=first(f"{arch}.expert_count", 0))


def _produce(
    g: GGUFFile,
    info: TensorInfo,
    qtype: Q,
    encoder: Encoder,
    importance: np.ndarray | None = None,
    edit: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    raw = g.tensor_bytes(info.name)
    if qtype == info.ggml_type and edit is None:
        return raw
    x = raw.view(np.float32) if info.ggml_type == Q.F32 else dequantize(raw, info.ggml_type)
    x = x.reshape(info.np_shape)
    return encoder.encode(info.name, edit(x) if edit is not None else x, qtype, importance)
