"""HF checkpoint -> one planned GGUF Job, in one step.

llama.cpp takes two: its converter writes f32, then llama-quantize applies the
mix. This plans the file those two steps produce: the converter's metadata
and tensor values, llama-quantize's tensor order, types and final keys
(general.quantization_version and general.file_type re-set, so last).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.encode import Encoder
from lamina.convert.hf.arch import (
    HFConfig,
    SourceTensor,
    detect,
    load_hparams,
    plan_tensors,
    write_early_hparams,
    write_hparams,
)
from lamina.convert.hf.checkpoint import HFCheckpoint
from lamina.convert.hf.mxfp4 import ggml_mxfp4
from lamina.convert.hf.vocab import load_vocab
from lamina.convert.imatrix import apply as imatrix_apply
from lamina.convert.imatrix.format import Imatrix
from lamina.convert.pipeline import Job
from lamina.convert.recipes import Mix, ModelShape, TensorSpec, choose_types, tensor_order
from lamina.convert.writer import OutTensor, check_output, move_to_end
from lamina.quants import dequantize

QUANT_VERSION_KEY = gguf.Keys.General.QUANTIZATION_VERSION
FILE_TYPE_KEY = gguf.Keys.General.FILE_TYPE
F = gguf.LlamaFileType
FLOAT_FTYPES = (F.ALL_F32, F.MOSTLY_F16, F.MOSTLY_BF16)


def plan_hf(
    hf_dir: Path,
    mix: Mix,
    encoder: Encoder,
    out: Path | None = None,
    force: bool = False,
    pure: bool = False,
    label: str | None = None,
    imatrix: Imatrix | None = None,
    imatrix_arg: str = "",
) -> Job:
    """label: the last part of the default file name (the mix's, e.g. Q4_K_M, by default);
    imatrix: importance data as llama-quantize --imatrix uses it (imatrix_arg: the
    file name as given, which the output records)."""
    ckpt = HFCheckpoint(hf_dir)
    arch = detect(ckpt.config, str(hf_dir / "config.json"))
    hp = load_hparams(arch, ckpt.config)
    hp.directory = hf_dir
    vocab = load_vocab(hf_dir, hp)
    sources = {s.name: s for s in plan_tensors(hp, {n: t.shape for n, t in ckpt.tensors.items()}, vocab.n_real)}

    meta = model_metadata(hf_dir, {n: s.shape for n, s in sources.items()})
    order = tensor_order(list(sources))
    specs = [TensorSpec(n, tuple(reversed(sources[n].shape)), Q.F32) for n in order]
    types = choose_types(specs, mix, model_shape(hp), pure, has_imatrix=imatrix is not None)
    ftype = mix.ftype
    packed = [n for n in order if sources[n].mxfp4 is not None]
    if packed and ftype in FLOAT_FTYPES:
        # llama.cpp's converter keeps released MXFP4 experts as they are under
        # --outtype f32/f16/bf16 and labels the file MXFP4_MOE; a quantized mix
        # requantizes them from their exact values (llama-quantize --allow-requantize)
        types.update(dict.fromkeys(packed, Q.MXFP4))
        ftype = gguf.LlamaFileType.MOSTLY_MXFP4_MOE
    out = output_path(out, hf_dir, meta, label or mix_label(ftype), force)
    quantized = [(n, spec.ne, types[n]) for n, spec in zip(order, specs) if types[n] != Q.F32]
    importance = imatrix_apply.plan_importance(imatrix, quantized, mix.ftype, str(hf_dir))

    def metadata(w: gguf.GGUFWriter) -> None:
        write_model_metadata(w, meta, hp, vocab, ftype)
        if imatrix is not None:
            for key, (value, vtype) in imatrix_apply.quantize_keys(imatrix, imatrix_arg).items():
                w.add_key_value(key, value, vtype)

    tensors = [
        (
            OutTensor(n, sources[n].shape, types[n]),
            partial(_produce, ckpt, sources[n], types[n], encoder, importance.get(n)),
        )
        for n in order
    ]
    return Job(out, arch.name, metadata, tensors)


def model_metadata(hf_dir: Path, shapes: dict[str, tuple[int, ...]]) -> gguf.Metadata:
    """gguf-py's model metadata of a checkpoint (GGUF tensor name -> numpy
    shape), name and size label filled in as llama.cpp's converter fills them:
    a mixture of experts is labelled "8x20M" from its *_exps tensors."""
    total = shared = expert = expert_sum = n_expert_tensors = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        total += size
        if "_exps." in name and len(shape) >= 3:
            expert += size // shape[0]
            expert_sum += shape[0]
            n_expert_tensors += 1
        else:
            shared += size
    meta = gguf.Metadata.load(None, hf_dir, None, total)
    if meta.name is None:
        meta.name = hf_dir.name
    if meta.size_label is None and total > 0:
        n_expert = expert_sum // n_expert_tensors if n_expert_tensors else 0
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    return meta


def mix_label(ftype: gguf.LlamaFileType) -> str:
    return ftype.name.partition("_")[2]  # MOSTLY_Q4_K_M -> Q4_K_M


def output_path(out: Path | None, hf_dir: Path, meta: gguf.Metadata, label: str, force: bool) -> Path:
    """out, or llama.cpp's default file name (Name-Size-LABEL.gguf) in out or
    hf_dir when out is None or a directory; checked before any work."""
    if out is None or out.is_dir():
        out = (out or hf_dir) / (
            gguf.naming_convention(meta.name, meta.basename, meta.finetune, meta.version, meta.size_label, label)
            + ".gguf"
        )
    check_output(out, force)
    return out


def write_model_metadata(w: gguf.GGUFWriter, meta: gguf.Metadata, hp: HFConfig, vocab, ftype) -> None:
    """The keys every converted file starts with, in llama.cpp's order."""
    write_early_hparams(w, hp)
    w.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(w)
    write_hparams(w, hp, int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab.write(w)
    move_to_end(w, QUANT_VERSION_KEY, FILE_TYPE_KEY)


def model_shape(hp: HFConfig) -> ModelShape:
    # llama.cpp sizes llama/qwen2 models by layer count; 80 layers with GQA is "70B"
    is_70b = (
        hp.n_layer == 80
        and hp.arch.model_arch in (gguf.MODEL_ARCH.LLAMA, gguf.MODEL_ARCH.QWEN2)
        and (hp.arch.model_arch == gguf.MODEL_ARCH.QWEN2 or hp.n_head != hp.n_head_kv)
    )
    n_expert = hp.find("num_local_experts", "num_experts", "n_routed_experts")
    n_expert = n_expert if isinstance(n_expert, int) else 0
    return ModelShape(hp.n_layer, hp.n_head, hp.n_head_kv, is_70b, n_expert=n_expert)


def _produce(
    ckpt: HFCheckpoint, src: SourceTensor, qtype: Q, encoder: Encoder, importance: np.ndarray | None = None
) -> np.ndarray:
    if src.mxfp4 is not None:
        start, step = src.rows
        blocks, scales = (ckpt.load_array(name, slice(start, None, step)) for name in src.mxfp4)  # only these rows
        raw = ggml_mxfp4(src.name, blocks, scales)  # [X * rows, nb * 17]
        if qtype == Q.MXFP4:
            return raw
        x = dequantize(raw, Q.MXFP4).reshape(src.shape)
    elif src.generate is not None:
        x = src.generate()
    elif src.stack:
        x = np.stack([ckpt.load_f32(name) for name in src.stack])  # [n_expert, rows, cols]
    else:
        assert src.hf_name is not None, f"{src.name}: neither generated nor read from the checkpoint"
        x = ckpt.load_f32(src.hf_name)
        if src.transform is not None:
            x = src.transform(x)
    return encoder.encode(src.name, x, qtype, importance)
