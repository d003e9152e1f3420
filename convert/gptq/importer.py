"""`bin/convert GPTQ_DIR`: a GPTQ checkpoint (AutoGPTQ, GPTQModel, transformers'
GPTQConfig) to GGUF, its INT4 weights kept exactly as they are.

    job = plan_gptq_import(hf_dir, mix, encoder, out, force, pure)   # as plan_hf
    run_job(job)

The checkpoint's quantization config comes from config.json
`quantization_config` or quantize_config.json (quant_config.json): quant_method
"gptq", bits 4, group_size (-1: one group per row), desc_act, sym, and the
zero-point convention `checkpoint_format` ("gptq" = v1, zero minus one, the
default; "gptq_v2"). Each quantized linear `model.layers.N.<...>.qweight /
qzeros / scales / g_idx` is checked against config.json's shapes, its zeros
converted to v2, its outputs put in GGUF order (llama q/k rows permuted for
ggml's rope, through the dense converter's own transform), and stored as
runtime/gptq/format.py describes. Everything else (embeddings, norms, lm_head,
biases) goes through the dense converter's mapping, vocabulary and metadata
(convert/hf/arch.py, convert/hf/vocab.py), in the mix's types (f16 by default).

With the q4_0 mix (`--q4_0`) every GPTQ linear is instead repacked into Q4_0
blocks, bit-exact (block d = the group's f16 scale, quants = the levels, since
a symmetric INT4 zero is 8 and Q4_0 dequantizes d*(q-8)), so the file is a
plain Q4_0 GGUF that llama.cpp loads. When the layout does not allow that
(asymmetric, a group size that is not a multiple of 32, a permuted g_idx, a
zero other than 8) the import stops with the reason before writing anything.

Everything that can be checked is checked while planning (shapes, dtypes,
g_idx ranges, zero points), so bad input writes nothing; the writer is atomic
besides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.encode import Encoder
from lamina.convert.errors import CheckpointError, TensorShapeError
from lamina.convert.gptq.algorithm import GPTQError, check_bits
from lamina.convert.gptq.tensors import (
    FILE_LABEL,
    gptq_job_tensors,
    gptq_metadata,
    q4_0_problem,
    repack_q4_0,
    trivial_g_idx,
)
from lamina.convert.hf.arch import HFConfig, SourceTensor, _expected_shapes, detect, load_hparams, plan_tensors
from lamina.convert.hf.checkpoint import HFCheckpoint, StoredTensor, read_json
from lamina.convert.hf.convert import (
    _produce,
    mix_label,
    model_metadata,
    model_shape,
    output_path,
    write_model_metadata,
)
from lamina.convert.hf.vocab import load_vocab
from lamina.convert.pipeline import Job
from lamina.convert.recipes import Mix, TensorSpec, check_imatrix, choose_types, tensor_order
from lamina.convert.writer import OutTensor
from lamina.gptq.format import is_gptq_weight_name
from lamina.gptq.pack import PER_WORD, GPTQPacked, GPTQPackError, pack_qzeros, unpack_qzeros

QUANT_CONFIG_FILES = ("quantize_config.json", "quant_config.json")
CHECKPOINT_FORMATS = {"gptq": "v1", "gptq_v2": "v2"}
GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")
# the checkpoint's dtype of each part (safetensors spelling)
_PART_DTYPES = {"qweight": "I32", "qzeros": "I32", "scales": "F16", "g_idx": "I32"}
# linears whose bias the runtime reads (llama: optional; qwen2: always)
_BIASED = (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K, gguf.MODEL_TENSOR.ATTN_V)


class GPTQImportError(GPTQError):
    """A GPTQ checkpoint that lamina cannot import as asked."""


# ----------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class GPTQCheckpointConfig:
    bits: int
    group_size: int  # -1: one group spanning each row's inputs
    sym: bool
    desc_act: bool
    checkpoint_format: str  # "gptq" (v1, zero minus one) or "gptq_v2"
    source: Path  # the file it was read from
    damp: float | None = None

    @property
    def zero_format(self) -> str:
        """gptq_pack's spelling: "v1" or "v2"."""
        return CHECKPOINT_FORMATS[self.checkpoint_format]


def gptq_checkpoint_config(hf_dir: Path) -> GPTQCheckpointConfig | None:
    """The checkpoint's GPTQ config, or None if it is not quantized at all.

    A quantization config naming another method (awq, bitsandbytes, ...), or a
    GPTQ variant lamina does not read (bits other than 4, marlin packing,
    per-module overrides), raises GPTQImportError naming the file and key."""
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        return None
    config = read_json(config_path)
    qc, where = config.get("quantization_config"), config_path
    if qc is None:
        for name in QUANT_CONFIG_FILES:
            if (hf_dir / name).is_file():
                qc, where = read_json(hf_dir / name), hf_dir / name
                break
        else:
            return None
        qc = {"quant_method": "gptq", **qc}  # AutoGPTQ's quantize_config.json predates the key
    if not isinstance(qc, dict):
        raise GPTQImportError(f"{where}: quantization_config must be a JSON object, found {type(qc).__name__}")
    if qc.get("quant_method") == "mxfp4":
        return None  # released gpt-oss: the HF converter keeps its MXFP4 experts (convert/hf/mxfp4.py)
    return _parse_quant_config(qc, where)


def _parse_quant_config(qc: dict[str, Any], where: Path) -> GPTQCheckpointConfig:
    def bad(key: str, message: str) -> GPTQImportError:
        return GPTQImportError(f"{where}: {key}: {message}")

    method = qc.get("quant_method")
    if not isinstance(method, str) or method.lower() != "gptq":
        raise bad(
            "quant_method", f"{method!r} is not supported: lamina imports GPTQ checkpoints (quant_method 'gptq') only"
        )
    try:
        bits = check_bits(qc.get("bits"))
    except GPTQError as e:
        raise bad("bits", str(e)) from None
    gs = qc.get("group_size", -1)
    if isinstance(gs, bool) or not isinstance(gs, int) or not (gs == -1 or gs >= 1):
        raise bad("group_size", f"must be -1 or a positive integer, found {gs!r}")
    flags = {}
    for key, default in (("sym", True), ("desc_act", False)):
        value = qc.get(key, default)
        if not isinstance(value, bool):
            raise bad(key, f"must be true or false, found {value!r}")
        flags[key] = value
    fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
    if qc.get("is_marlin_format"):
        fmt = "marlin"
    if fmt not in CHECKPOINT_FORMATS:
        raise bad(
            "checkpoint_format",
            f"{fmt!r} is not supported: expected one of {', '.join(CHECKPOINT_FORMATS)} "
            f"(marlin/bitblas/other repacked layouts are not read)",
        )
    pack_dtype = qc.get("pack_dtype", "int32")
    if str(pack_dtype).removeprefix("torch.") != "int32":
        raise bad("pack_dtype", f"{pack_dtype!r} is not supported: expected int32")
    if qc.get("dynamic"):
        raise bad(
            "dynamic",
            "per-module quantization overrides are not supported: lamina needs every "
            "linear at the same bits and group size",
        )
    damp = qc.get("damp_percent")
    damp = float(damp) if isinstance(damp, (int, float)) and not isinstance(damp, bool) else None
    return GPTQCheckpointConfig(bits, gs, flags["sym"], flags["desc_act"], fmt, where, damp)


# ----------------------------------------------------------------------------
# one quantized linear of the checkpoint


@dataclass(frozen=True)
class _Linear:
    prefix: str  # e.g. "model.layers.0.self_attn.q_proj"
    n_in: int
    n_out: int
    n_groups: int
    has_g_idx: bool  # the checkpoint stores one
    trivial_g_idx: bool  # ... equal to i // group_size (or none stored)

    def part(self, name: str) -> str:
        return f"{self.prefix}.{name}"


def _find_linears(ckpt: HFCheckpoint) -> list[str]:
    prefixes = sorted({n.rpartition(".")[0] for n in ckpt.tensors if n.rpartition(".")[2] in GPTQ_PARTS})
    for p in prefixes:
        if f"{p}.qweight" not in ckpt.tensors:
            have = ", ".join(n for n in (f"{p}.{x}" for x in GPTQ_PARTS) if n in ckpt.tensors)
            raise CheckpointError(f"{ckpt.dir}: tensor {p + '.qweight'!r} is missing (the checkpoint has {have})")
        if f"{p}.weight" in ckpt.tensors:
            raise CheckpointError(f"{ckpt.dir}: {p!r} has both a dense .weight and GPTQ .qweight")
    if not prefixes:
        raise CheckpointError(f"{ckpt.dir}: the config says GPTQ but no tensor ends in .qweight")
    return prefixes


def _stored(ckpt: HFCheckpoint, name: str, dtype: str, shape: tuple[int, ...]) -> StoredTensor:
    t = ckpt.tensors.get(name)
    if t is None:
        raise CheckpointError(f"{ckpt.dir}: GPTQ tensor {name!r} is missing (expected {dtype} {shape})")
    if t.dtype != dtype:
        raise CheckpointError(f"{t.path}: tensor {name!r} has dtype {t.dtype}; expected {dtype}")
    if t.shape != shape:
        raise TensorShapeError(f"{t.path}: tensor {name!r} has shape {t.shape}; config.json implies {shape}")
    return t


def _check_linear(
    ckpt: HFCheckpoint, prefix: str, dense: tuple[int, int], qc: GPTQCheckpointConfig, q4_0: bool
) -> _Linear:
    """Every part's dtype and shape, g_idx's range and the zero points, from the data."""
    n_out, n_in = dense
    if n_in % PER_WORD or n_out % PER_WORD:
        raise TensorShapeError(
            f"{prefix}: GPTQ INT4 needs in/out features that are multiples of 8, config.json implies [{n_out}, {n_in}]"
        )
    gs = n_in if qc.group_size == -1 else qc.group_size
    G = -(-n_in // gs)
    _stored(ckpt, f"{prefix}.qweight", "I32", (n_in // PER_WORD, n_out))
    _stored(ckpt, f"{prefix}.scales", "F16", (G, n_out))
    _stored(ckpt, f"{prefix}.qzeros", "I32", (G, n_out // PER_WORD))
    lin = _Linear(prefix, n_in, n_out, G, f"{prefix}.g_idx" in ckpt.tensors, True)
    g_idx = None
    if lin.has_g_idx:
        _stored(ckpt, lin.part("g_idx"), "I32", (n_in,))
        g_idx = ckpt.load_array(lin.part("g_idx"))
        bad = np.flatnonzero((g_idx < 0) | (g_idx >= G))
        if bad.size:
            raise CheckpointError(
                f"{ckpt.tensors[lin.part('g_idx')].path}: tensor {lin.part('g_idx')!r}: "
                f"value {int(g_idx[bad[0]])} at input {int(bad[0])} is outside [0, {G}) "
                f"(group_size={qc.group_size}, n_in={n_in})"
            )
        lin = _Linear(prefix, n_in, n_out, G, True, trivial_g_idx(g_idx, qc.group_size))
    elif qc.desc_act:
        raise CheckpointError(
            f"{ckpt.dir}: GPTQ tensor {lin.part('g_idx')!r} is missing (desc_act=true needs the group of each input)"
        )
    zeros = _zeros_v2(ckpt, lin.part("qzeros"), qc)
    scales = ckpt.load_array(lin.part("scales"))
    if not np.all(np.isfinite(scales)):
        g, o = (int(v) for v in np.argwhere(~np.isfinite(scales))[0])
        raise CheckpointError(
            f"{ckpt.tensors[lin.part('scales')].path}: tensor {lin.part('scales')!r}: "
            f"NaN/Inf scale at group {g}, output {o}"
        )
    if q4_0:
        problem = q4_0_problem(qc.sym, qc.group_size, n_in, g_idx, zeros)
        if problem is not None:
            raise GPTQImportError(
                f"{qc.source.parent}: --q4_0 cannot repack {prefix!r} losslessly: {problem}; "
                f"convert without --q4_0 to keep the GPTQ INT4 weights"
            )
    return lin


def _zeros_v2(ckpt: HFCheckpoint, name: str, qc: GPTQCheckpointConfig) -> np.ndarray:
    """int32 [G, out]: the zero points, whichever convention the checkpoint uses."""
    zeros = unpack_qzeros(ckpt.load_array(name), qc.zero_format)
    if zeros.max() > 15:  # v1 "zero minus one" nibble 15: a zero of 16, outside INT4
        g, o = (int(v) for v in np.argwhere(zeros > 15)[0])
        raise GPTQImportError(
            f"{ckpt.tensors[name].path}: tensor {name!r}: stored zero nibble 15 at group {g}, "
            f"output {o} means zero 16 in checkpoint_format 'gptq' (v1), outside 0..15; "
            f"if the checkpoint is really gptq_v2, say so in its quantization config"
        )
    return zeros


def _load_packed(ckpt: HFCheckpoint, lin: _Linear, qc: GPTQCheckpointConfig, out_perm: np.ndarray | None) -> GPTQPacked:
    """The linear in v2 form, its outputs in GGUF order."""
    qweight = ckpt.load_array(lin.part("qweight"))
    scales = ckpt.load_array(lin.part("scales"))
    zeros = _zeros_v2(ckpt, lin.part("qzeros"), qc)
    g_idx = (
        ckpt.load_array(lin.part("g_idx"))
        if lin.has_g_idx
        else (np.arange(lin.n_in) // (lin.n_in if qc.group_size == -1 else qc.group_size)).astype(np.int32)
    )
    if out_perm is not None:
        qweight, scales, zeros = qweight[:, out_perm], scales[:, out_perm], zeros[:, out_perm]
    try:
        return GPTQPacked(
            np.ascontiguousarray(qweight),
            pack_qzeros(zeros, "v2"),
            np.ascontiguousarray(scales),
            g_idx.astype(np.int32),
            "v2",
            qc.bits,
        )
    except GPTQPackError as e:
        raise GPTQImportError(f"{ckpt.dir}: {lin.prefix}: {e}") from None


def _output_permutation(src: SourceTensor, n_out: int) -> np.ndarray | None:
    """The dense converter's transform of this weight, as a permutation of its rows
    (None: identity); anything that is not a row permutation cannot apply to INT4."""
    if src.transform is None:
        return None
    idx = np.arange(n_out, dtype=np.float64)[:, None]
    moved = np.asarray(src.transform(idx)).reshape(-1)
    if moved.shape != (n_out,) or not np.array_equal(np.sort(moved), idx[:, 0]):
        raise GPTQImportError(
            f"{src.hf_name}: the converter transforms this weight beyond a row permutation, "
            f"which cannot be applied to GPTQ INT4 weights"
        )
    perm = moved.astype(np.int64)
    return None if np.array_equal(perm, np.arange(n_out)) else perm


def _bias_kept(ckpt: HFCheckpoint, name: str, kind: gguf.MODEL_TENSOR, hp: HFConfig) -> bool:
    """GPTQ packers save a (zero) bias for every linear; keep the ones the model has."""
    if kind in _BIASED and hp.arch.model_arch == gguf.MODEL_ARCH.QWEN2:
        return True
    b = ckpt.load_f32(name)
    if not np.any(b):
        return False
    if kind in _BIASED and hp.arch.model_arch == gguf.MODEL_ARCH.LLAMA:
        return True
    raise CheckpointError(
        f"{ckpt.tensors[name].path}: tensor {name!r} is a non-zero bias, which the "
        f"{hp.arch.name} architecture has no place for"
    )


# ----------------------------------------------------------------------------
# the plan


def plan_gptq_import(
    hf_dir: Path,
    mix: Mix,
    encoder: Encoder,
    out: Path | None = None,
    force: bool = False,
    pure: bool = False,
    *,
    q4_0: bool | None = None,
) -> Job:
    """A GPTQ checkpoint -> one planned GGUF Job (run it with pipeline.run_job or
    cli_common.execute). Called like convert_hf.plan_hf.

    mix: the types of the non-GPTQ tensors (f16 by default on the CLI).
    q4_0: repack the GPTQ linears to Q4_0 (default: when mix is q4_0);
    otherwise they are stored as GPTQ INT4 tensors."""
    hf_dir = Path(hf_dir)
    qc = gptq_checkpoint_config(hf_dir)
    if qc is None:
        raise CheckpointError(
            f"{hf_dir}: not a GPTQ checkpoint (no quantization_config in config.json and no {QUANT_CONFIG_FILES[0]})"
        )
    repack = mix.name == "q4_0" if q4_0 is None else q4_0
    ckpt = HFCheckpoint(hf_dir, int_tensors=True)
    arch = detect(ckpt.config, str(hf_dir / "config.json"))
    hp = load_hparams(arch, ckpt.config)
    vocab = load_vocab(hf_dir, hp)
    name_map = gguf.get_tensor_name_map(arch.model_arch, hp.n_layer)
    expected = _expected_shapes(hp)

    # each quantized linear: its GGUF name, dense shape from config.json, checked parts
    linears: dict[str, _Linear] = {}  # by the dense HF name "<prefix>.weight"
    for prefix in _find_linears(ckpt):
        mapped = name_map.get_type_and_name(prefix + ".weight", try_suffixes=(".weight",))
        if mapped is None or not is_gptq_weight_name(mapped[1]):
            raise GPTQImportError(
                f"{hf_dir}: {prefix!r} is GPTQ-quantized, which lamina supports only for the "
                f"attention and feed-forward linears (q/k/v/o, gate/up/down)"
            )
        n_out, n_in = expected[(mapped[0], False)]  # a linear's dense [out, in]
        linears[prefix + ".weight"] = _check_linear(ckpt, prefix, (n_out, n_in), qc, repack)

    parts = {lin.part(p) for lin in linears.values() for p in GPTQ_PARTS}
    hf_shapes: dict[str, tuple[int, ...]] = {}
    for name, t in ckpt.tensors.items():
        if name in parts:
            continue
        if t.dtype not in ("F32", "F16", "BF16"):
            raise CheckpointError(f"{t.path}: tensor {name!r} has dtype {t.dtype}; expected F32, F16 or BF16")
        if name.endswith(".bias") and name[:-5] + ".weight" in linears:
            mapped = name_map.get_type_and_name(name, try_suffixes=(".bias",))
            if mapped is None or not _bias_kept(ckpt, name, mapped[0], hp):
                continue
        hf_shapes[name] = t.shape
    for name, lin in linears.items():
        hf_shapes[name] = (lin.n_out, lin.n_in)
    sources = {s.name: s for s in plan_tensors(hp, hf_shapes, vocab.n_real)}
    gptq_src = {s.name: s for s in sources.values() if s.hf_name in linears}

    meta = model_metadata(hf_dir, {n: s.shape for n, s in sources.items()})
    ftype = gguf.LlamaFileType.MOSTLY_Q4_0 if repack else mix.ftype
    out = output_path(out, hf_dir, meta, mix_label(ftype) if repack else FILE_LABEL, force)

    order = tensor_order(list(sources))
    specs = [TensorSpec(n, tuple(reversed(sources[n].shape)), Q.F32) for n in order]
    types = choose_types(specs, mix, model_shape(hp), pure)
    check_imatrix(types, mix, has_imatrix=False)  # no importance matrix reaches the encoder yet

    def metadata(w: gguf.GGUFWriter) -> None:
        write_model_metadata(w, meta, hp, vocab, ftype)
        if not repack:
            gptq_metadata(
                w,
                group_size=qc.group_size,
                sym=qc.sym,
                desc_act=qc.desc_act,
                source=f"checkpoint:{qc.checkpoint_format}",
                bits=qc.bits,
                damp=qc.damp,
            )

    tensors: list[tuple[OutTensor, Any]] = []
    for n in order:
        src = sources[n]
        if n not in gptq_src:
            tensors.append((OutTensor(n, src.shape, types[n]), partial(_produce, ckpt, src, types[n], encoder)))
            continue
        assert src.hf_name is not None, "gptq_src holds only tensors of the checkpoint's linears"
        lin = linears[src.hf_name]
        load = partial(_load_packed, ckpt, lin, qc, _output_permutation(src, lin.n_out))
        if repack:
            tensors.append(
                (OutTensor(n, src.shape, Q.Q4_0), lambda n=n, load=load: repack_q4_0(n, load(), qc.group_size))
            )
        else:
            tensors += gptq_job_tensors(
                n,
                load,
                qc.group_size,
                n_in=lin.n_in,
                n_out=lin.n_out,
                n_groups=lin.n_groups,
                with_g_idx=not lin.trivial_g_idx,
            )
    return Job(out, arch.name, metadata, tensors)
