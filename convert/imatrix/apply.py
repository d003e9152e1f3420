"""An importance matrix at quantization time, as llama-quantize uses one
(tools/quantize/quantize.cpp `load_imatrix`, src/llama-quant.cpp):

- each quantized tensor gets its entry's importance (Imatrix.importance), one
  row of n per expert: rows of expert e of a 3-D [n_expert][rows][n] stack are
  quantized with row e;
- a tensor the file has no entry for is quantized without one (llama-quantize
  says "did not find weights"); token_embd and the output head never have one;
- an entry whose size is not n * n_expert of its tensor is an error (but for
  token_embd, which is ignored);
- the types whose quantizers give garbage without one (IQ1_S/IQ1_M, IQ2_XXS,
  IQ2_XS, IQ2_S, IQ3_XXS, and Q2_K in a Q2_K_S mix) refuse a tensor without it;
- the output records quantize.imatrix.file / .dataset (127 bytes at most),
  .entries_count and .chunks_count (when > 0), after general.file_type.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as F

from lamina.convert.errors import ImatrixError
from lamina.convert.imatrix.format import Imatrix
from lamina.convert.recipes import requires_imatrix

_FLOAT = (Q.F32, Q.F16, Q.BF16)

KEY_FILE = "quantize.imatrix.file"
KEY_DATASET = "quantize.imatrix.dataset"
KEY_ENTRIES = "quantize.imatrix.entries_count"
KEY_CHUNKS = "quantize.imatrix.chunks_count"


class ImatrixMissingWarning(UserWarning):
    """Tensors quantized without importance data because the file has none for them."""


def _is_embd_or_output(name: str) -> bool:
    return name in ("token_embd.weight", "output.weight")


def plan_importance(
    im: Imatrix | None, quantized: Iterable[tuple[str, tuple[int, ...], Q]], ftype: F, src: str
) -> dict[str, np.ndarray]:
    """Importance per tensor name for the tensors to be quantized ((name, ggml ne,
    target type)); every refusal before anything is written. Warns once
    (ImatrixMissingWarning) naming the tensors the file has nothing for."""
    out: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name, ne, qtype in quantized:
        imp = im.importance(name) if im is not None else None
        if imp is not None:
            n, n_mat = ne[0], ne[2] if len(ne) > 2 else 1
            if imp.size != n * n_mat:
                if name == "token_embd.weight":
                    imp = None
                else:
                    raise ImatrixError(
                        im.path if im is not None else src,
                        f"{imp.size} values, tensor {name} needs {n * n_mat} ({n} per row x {n_mat} experts): "
                        f"an importance matrix of another model?",
                        field=name,
                    )
        if imp is None:
            if requires_imatrix(name, qtype, ftype):
                raise ImatrixError(
                    im.path if im is not None else src,
                    f"{qtype.name} needs an importance matrix for {name} (without one the result is garbage); "
                    f"compute one with `lamina imatrix` and pass --imatrix",
                    field=name,
                )
            if im is not None and qtype not in _FLOAT and not _is_embd_or_output(name):
                missing.append(name)
            continue
        out[name] = imp
    if missing:
        warnings.warn(
            f"{im.path if im else src}: no importance data for {len(missing)} quantized tensors "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); they are quantized without it, "
            f"as llama-quantize does",
            ImatrixMissingWarning,
            stacklevel=2,
        )
    return out


def quantize_keys(im: Imatrix, imatrix_arg: str) -> dict[str, tuple[str | int, gguf.GGUFValueType]]:
    """llama-quantize's quantize.imatrix.* keys, (value, GGUF type) by key, in
    the order it sets them (each after the keys copied from its input)."""
    out: dict[str, tuple[str | int, gguf.GGUFValueType]] = {}
    out[KEY_FILE] = (_c_str127(imatrix_arg), gguf.GGUFValueType.STRING)
    if im.datasets:
        out[KEY_DATASET] = (_c_str127(im.datasets[0]), gguf.GGUFValueType.STRING)
    out[KEY_ENTRIES] = (len(im.entries), gguf.GGUFValueType.UINT32)
    if im.chunk_count > 0:
        out[KEY_CHUNKS] = (im.chunk_count, gguf.GGUFValueType.UINT32)
    return out


def _c_str127(s: str) -> str:
    """strncpy into char[128] with the last byte zeroed: the first 127 bytes."""
    b = s.encode("utf-8", "surrogateescape")[:127]
    return b.decode("utf-8", "ignore")
