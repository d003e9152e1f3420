"""GPTQ INT4 linears in a GGUF file: the names, the keys, and the validated read.

This is the one module that knows how lamina stores GPTQ weights. A linear
whose GGUF weight would be `blk.N.attn_q.weight` (attn_q/k/v/output,
ffn_gate/up/down) is stored instead as (numpy shapes; ggml's ne is reversed):

    blk.N.attn_q.qweight  I32 [n_in/8, n_out]    nibble j (bits 4j..4j+3) of
                                                 qweight[r, o] is the level of
                                                 input 8r+j, output o
    blk.N.attn_q.scales   F16 [n_groups, n_out]
    blk.N.attn_q.qzeros   I32 [n_groups, n_out/8] nibble j of qzeros[g, c] is the
                                                 zero of output 8c+j in group g,
                                                 ALWAYS the zero itself ("v2");
                                                 v1 checkpoints (zero - 1) are
                                                 converted on import
    blk.N.attn_q.g_idx    I32 [n_in]             group of each input; present
                                                 only when it is not i // group_size
                                                 (act-order with a permuted order)

    W[o, i] = scales[g, o] * (level[o, i] - zero[g, o]),   g = g_idx[i]

exactly the AutoGPTQ/GPTQModel packing (runtime/gptq/pack.py writes it), with
rows = outputs as in the dense weight; the output order is the GGUF one (llama
q/k rows already permuted for ggml's rope). Biases stay ordinary F32 tensors.
Only existing ggml types are used, so gguf-py and llama.cpp parse the file;
llama.cpp cannot run it (it has no GPTQ linear), lamina can.

File keys (all written together; the tensors are meaningless without them):

    lamina.gptq.version     UINT32  1
    lamina.gptq.bits        UINT32  4 (the only width supported)
    lamina.gptq.group_size  UINT32  inputs per group, the same for every GPTQ
                                    linear of the file; 0 means one group per
                                    row (group_size -1 in quantize_config.json),
                                    whose effective size is each tensor's n_in.
                                    Every linear then has
                                    n_groups = ceil(n_in / group_size) (1 for 0),
                                    which the reader checks against scales.
    lamina.gptq.sym         BOOL
    lamina.gptq.desc_act    BOOL    act-order was used when quantizing
    lamina.gptq.source      STRING  "lamina" (our GPTQ) or "checkpoint:<format>"
                                    for imports (format: gptq = v1, gptq_v2)
    lamina.gptq.damp        FLOAT32 optional: the dampening fraction used
    lamina.gptq.calibration STRING  optional: what the calibration data was

general.file_type is left out of files holding GPTQ tensors: no llama_ftype
describes INT4 GPTQ, and a wrong "mostly" type (F16, Q4_0) would mislead
tools that trust it more than a missing one.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from lamina.errors import GGUFError
from lamina.gguf.reader import GGUFFile, MetaType, TensorInfo

PREFIX = "lamina.gptq."
FORMAT_VERSION = 1
SUPPORTED_BITS = (4,)
PER_WORD = 8  # 4-bit values per 32-bit word

# the linears that may be GPTQ (GGUF names without "blk.N." and ".weight")
GPTQ_LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
PARTS = ("qweight", "scales", "qzeros", "g_idx")


class GPTQ_KEYS:
    """The lamina.gptq.* metadata keys."""

    VERSION = PREFIX + "version"
    BITS = PREFIX + "bits"
    GROUP_SIZE = PREFIX + "group_size"
    SYM = PREFIX + "sym"
    DESC_ACT = PREFIX + "desc_act"
    SOURCE = PREFIX + "source"
    DAMP = PREFIX + "damp"
    CALIBRATION = PREFIX + "calibration"


# key -> (GGUF value type, required)
KEY_TYPES: dict[str, tuple[GGUFValueType, bool]] = {
    GPTQ_KEYS.VERSION: (GGUFValueType.UINT32, True),
    GPTQ_KEYS.BITS: (GGUFValueType.UINT32, True),
    GPTQ_KEYS.GROUP_SIZE: (GGUFValueType.UINT32, True),
    GPTQ_KEYS.SYM: (GGUFValueType.BOOL, True),
    GPTQ_KEYS.DESC_ACT: (GGUFValueType.BOOL, True),
    GPTQ_KEYS.SOURCE: (GGUFValueType.STRING, True),
    GPTQ_KEYS.DAMP: (GGUFValueType.FLOAT32, False),
    GPTQ_KEYS.CALIBRATION: (GGUFValueType.STRING, False),
}


class GPTQFormatError(GGUFError):
    """A GGUF file's GPTQ tensors or lamina.gptq.* keys are missing or inconsistent."""


# ----------------------------------------------------------------------------
# names


def is_gptq_weight_name(weight_name: str) -> bool:
    """True for the GGUF weight names that may be stored as GPTQ."""
    parts = weight_name.split(".")
    return (
        len(parts) == 4
        and parts[0] == "blk"
        and parts[1].isdigit()
        and parts[2] in GPTQ_LINEARS
        and parts[3] == "weight"
    )


def gptq_tensor_names(weight_name: str) -> dict[str, str]:
    """`blk.N.attn_q.weight` -> {"qweight": "blk.N.attn_q.qweight", "scales": ...,
    "qzeros": ..., "g_idx": ...}; ValueError for a name that cannot be GPTQ."""
    if not is_gptq_weight_name(weight_name):
        raise ValueError(
            f"{weight_name!r} is not a GPTQ-able weight name: expected blk.N.<linear>.weight "
            f"with <linear> one of {', '.join(GPTQ_LINEARS)}"
        )
    stem = weight_name[: -len(".weight")]
    return {part: f"{stem}.{part}" for part in PARTS}


def model_weight_count(gguf: GGUFFile) -> int:
    """The model's parameter count: every tensor's elements, except that a GPTQ
    linear counts its weights (8 per qweight word) and not its scales, zeros
    and g_idx, which are how those weights are stored, as a block type's scales
    are for the ggml types."""
    if not any(k.startswith(PREFIX) for k in gguf.metadata):
        return sum(t.n_elements for t in gguf.tensors)
    total = 0
    for t in gguf.tensors:
        stem, _, part = t.name.rpartition(".")
        if part in PARTS and is_gptq_weight_name(stem + ".weight"):
            total += t.n_elements * PER_WORD if part == "qweight" else 0
        else:
            total += t.n_elements
    return total


# ----------------------------------------------------------------------------
# file config

# a file's validated config, read once however many linears ask for it
_CONFIGS: weakref.WeakKeyDictionary[GGUFFile, dict[str, Any] | None] = weakref.WeakKeyDictionary()


def gptq_file_config(gguf: GGUFFile) -> dict[str, Any] | None:
    """The lamina.gptq.* keys, validated, as a dict in quantize_config.json terms:
    version, bits, group_size (-1: one group per row), sym, desc_act, source,
    and damp / calibration when present. None when the file has no GPTQ keys."""
    if gguf not in _CONFIGS:
        _CONFIGS[gguf] = _read_file_config(gguf)
    cfg = _CONFIGS[gguf]
    return None if cfg is None else dict(cfg)


def _read_file_config(gguf: GGUFFile) -> dict[str, Any] | None:
    present = [k for k in gguf.metadata if k.startswith(PREFIX)]
    if not present:
        return None
    unknown = sorted(set(present) - set(KEY_TYPES))
    if unknown:
        raise GPTQFormatError(gguf.path, f"unknown GPTQ key (this lamina knows {', '.join(KEY_TYPES)})", key=unknown[0])
    values: dict[str, Any] = {}
    for key, (vtype, required) in KEY_TYPES.items():
        if key not in gguf.metadata:
            if required:
                raise GPTQFormatError(
                    gguf.path, f"required GPTQ key is missing (the file has other {PREFIX}* keys)", key=key
                )
            continue
        found = gguf.metadata_types[key]
        if found != MetaType(vtype):
            got = f"ARRAY[{found.element.name}]" if found.element is not None else found.type.name
            raise GPTQFormatError(gguf.path, f"must be {vtype.name}, found {got}", key=key)
        values[key[len(PREFIX) :]] = gguf.metadata[key]
    if values["version"] != FORMAT_VERSION:
        raise GPTQFormatError(
            gguf.path,
            f"GPTQ format version {values['version']} is not supported: expected {FORMAT_VERSION}",
            key=GPTQ_KEYS.VERSION,
        )
    if values["bits"] not in SUPPORTED_BITS:
        raise GPTQFormatError(
            gguf.path,
            f"GPTQ bits={values['bits']} is not supported: expected {', '.join(map(str, SUPPORTED_BITS))}",
            key=GPTQ_KEYS.BITS,
        )
    gs = int(values["group_size"])
    values["group_size"] = -1 if gs == 0 else gs
    if "damp" in values:
        values["damp"] = float(values["damp"])
    return values


# ----------------------------------------------------------------------------
# one linear


@dataclass(frozen=True)
class GPTQLinear:
    """One GPTQ linear of a GGUF file: read-only numpy views of the map."""

    qweight: np.ndarray  # int32 [n_in/8, n_out]
    scales: np.ndarray  # float16 [n_groups, n_out]
    qzeros: np.ndarray  # int32 [n_groups, n_out/8], zeros in v2 form
    g_idx: np.ndarray | None  # int32 [n_in], or None: g = i // group_size
    n_in: int
    n_out: int
    group_size: int  # effective inputs per group (n_in for a config's -1)
    n_groups: int
    name: str = ""  # the GGUF weight name it stands for

    def group_index(self) -> np.ndarray:
        """int32 [n_in]: the group of each input (g_idx, or i // group_size)."""
        if self.g_idx is not None:
            return np.asarray(self.g_idx, dtype=np.int32)
        return (np.arange(self.n_in) // self.group_size).astype(np.int32)

    def levels(self) -> np.ndarray:
        """uint8 [n_out, n_in]: the 4-bit level of each weight."""
        return np.ascontiguousarray(_nibbles(self.qweight, axis=0).T)

    def zeros(self) -> np.ndarray:
        """int32 [n_groups, n_out]: the zero point of each group and output."""
        return _nibbles(self.qzeros, axis=1).astype(np.int32)

    def dequantize(self) -> np.ndarray:
        """float32 [n_out, n_in]: scales[g, o] * (level[o, i] - zero[g, o])."""
        g = self.group_index()
        s = self.scales.astype(np.float32)[g].T
        z = self.zeros().astype(np.float32)[g].T
        return s * (self.levels().astype(np.float32) - z)


def _nibbles(words: np.ndarray, axis: int) -> np.ndarray:
    """Unpack 8 consecutive 4-bit values (low nibble first) per int32 along axis."""
    w = np.moveaxis(np.ascontiguousarray(words).view(np.uint32), axis, -1)
    v = (w[..., None] >> (np.arange(PER_WORD, dtype=np.uint32) * 4)) & 0xF
    v = v.reshape(*w.shape[:-1], w.shape[-1] * PER_WORD)
    return np.moveaxis(v, -1, axis).astype(np.uint8)


def _view(gguf: GGUFFile, info: TensorInfo, dtype: type) -> np.ndarray:
    return gguf.tensor_bytes(info.name).reshape(-1).view(dtype).reshape(info.np_shape)


def read_gptq_linear(gguf: GGUFFile, weight_name: str) -> GPTQLinear | None:
    """The GPTQ linear stored for `weight_name` (e.g. "blk.0.attn_q.weight"), every
    shape, type and index checked; None when the file holds the plain tensor.

    Raises GPTQFormatError (a GGUFError) naming the file and tensor for any
    inconsistency, and GGUFMissingTensorError when neither form is present."""
    names = gptq_tensor_names(weight_name)
    have = {part: n for part, n in names.items() if gguf.has_tensor(n)}
    plain = gguf.has_tensor(weight_name)
    if not have:
        if plain:
            return None
        gguf.tensor(weight_name)  # raises GGUFMissingTensorError
    path = gguf.path

    def err(part: str, message: str) -> GPTQFormatError:
        return GPTQFormatError(path, message, tensor=names[part])

    if plain:
        raise err(
            next(iter(have)),
            f"the file also holds the plain tensor {weight_name!r}: "
            "a linear is stored either dense or as GPTQ, not both",
        )
    for part in ("qweight", "scales", "qzeros"):
        if part not in have:
            found = ", ".join(have.values())
            raise GPTQFormatError(path, f"GPTQ tensor is missing (the file has {found})", tensor=names[part])
    cfg = gptq_file_config(gguf)
    if cfg is None:
        raise err(
            "qweight",
            f"the file has GPTQ tensors but no {GPTQ_KEYS.VERSION} metadata (keys {PREFIX}* describe how to read them)",
        )

    def info(part: str, ggml_type: GGMLQuantizationType, ndim: int) -> TensorInfo:
        t = gguf.tensor(names[part])
        if t.ggml_type != ggml_type:
            raise err(part, f"must be {ggml_type.name}, found {t.ggml_type.name}")
        if len(t.np_shape) != ndim:
            raise err(part, f"must be {ndim}-D, found shape {t.np_shape}")
        return t

    qw = info("qweight", GGMLQuantizationType.I32, 2)
    sc = info("scales", GGMLQuantizationType.F16, 2)
    qz = info("qzeros", GGMLQuantizationType.I32, 2)
    rows, n_out = qw.np_shape
    n_in = rows * PER_WORD
    if n_out % PER_WORD:
        raise err("qweight", f"n_out={n_out} must be a multiple of {PER_WORD} (qzeros packs 8 outputs per int32)")
    n_groups = sc.np_shape[0]
    if sc.np_shape[1] != n_out:
        raise err("scales", f"must be [n_groups, {n_out}] for qweight {qw.np_shape}, found {sc.np_shape}")
    if qz.np_shape != (n_groups, n_out // PER_WORD):
        raise err("qzeros", f"must be [{n_groups}, {n_out // PER_WORD}] for scales {sc.np_shape}, found {qz.np_shape}")
    gs_cfg = cfg["group_size"]
    group_size = n_in if gs_cfg == -1 else gs_cfg
    want_groups = -(-n_in // group_size)
    if n_groups != want_groups:
        raise err(
            "scales",
            f"has {n_groups} groups; {GPTQ_KEYS.GROUP_SIZE}={max(gs_cfg, 0)} and n_in={n_in} "
            f"(qweight {qw.np_shape}) imply {want_groups}",
        )

    scales = _view(gguf, sc, np.float16)
    if not np.all(np.isfinite(scales)):
        r, c = (int(v) for v in np.argwhere(~np.isfinite(scales))[0])
        raise err("scales", f"holds a NaN/Inf scale at group {r}, output {c}")
    g_idx = None
    if "g_idx" in have:
        gi = info("g_idx", GGMLQuantizationType.I32, 1)
        if gi.np_shape != (n_in,):
            raise err("g_idx", f"must be [{n_in}] (n_in of qweight {qw.np_shape}), found {gi.np_shape}")
        g_idx = _view(gguf, gi, np.int32)
        lo, hi = int(g_idx.min()), int(g_idx.max())
        if lo < 0 or hi >= n_groups:
            bad = int(np.argmax((g_idx < 0) | (g_idx >= n_groups)))
            raise err("g_idx", f"values must be in [0, {n_groups}), found {int(g_idx[bad])} at input {bad}")
    return GPTQLinear(
        _view(gguf, qw, np.int32),
        scales,
        _view(gguf, qz, np.int32),
        g_idx,
        n_in,
        n_out,
        group_size,
        n_groups,
        weight_name,
    )
