"""A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) as
llama.cpp's convert_lora_to_gguf.py writes it, byte for byte:

    general.architecture, general.type = adapter, adapter.type = lora,
    the model card's general.* keys (gguf-py's Metadata of the adapter dir),
    adapter.lora.alpha, general.quantization_version;
    per adapted matrix, in the order the safetensors file lists them:
      <gguf name>.lora_a  [rank, n_in]    PEFT's lora_A
      <gguf name>.lora_b  [n_out, rank]   PEFT's lora_B, rows moved as the
                                          base converter moves W's (llama's q/k rope permutation)

Only the base model's config.json is read (its weights are not needed).
Types: f32, f16, or q8_0, where a tensor whose rows are not whole Q8_0
blocks (lora_b's rank) falls back to f16, as gguf-py does.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.encode import Encoder
from lamina.convert.errors import ConvertError
from lamina.convert.hf.arch import _transform, detect, load_hparams
from lamina.convert.hf.checkpoint import _flatten_config, read_json
from lamina.convert.pipeline import Job
from lamina.convert.writer import OutTensor, check_output

OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}
ADAPTER_FILE = "adapter_model.safetensors"


class LoraConvertError(ConvertError):
    """A PEFT adapter that cannot be converted: what is wrong, naming the file and tensor."""


def plan_lora(peft_dir: Path, base_dir: Path, out: Path, outtype: str, encoder: Encoder, force: bool = False) -> Job:
    if outtype not in OUTTYPES:
        raise LoraConvertError(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    qtype = OUTTYPES[outtype]
    lcfg = _adapter_config(peft_dir)
    config = _flatten_config(read_json(base_dir / "config.json"))
    arch = detect(config, str(base_dir / "config.json"))
    hp = load_hparams(arch, config)
    name_map = gguf.get_tensor_name_map(arch.model_arch, hp.n_layer)
    tensors = _read_adapter(peft_dir / ADAPTER_FILE)

    pairs: dict[str, dict[str, str]] = {}  # gguf base name -> {"a": key, "b": key}, in file order
    kinds: dict[str, tuple[Any, str]] = {}
    for key in tensors:
        base = key.replace("base_model.model.", "")
        if ".lora_A.weight" in key or ".lora_B.weight" in key:
            half = "a" if ".lora_A.weight" in key else "b"
            base = base.replace(".lora_A.weight", ".weight").replace(".lora_B.weight", ".weight")
        elif ".base_layer.weight" in key:
            continue
        else:
            raise LoraConvertError(f"{peft_dir / ADAPTER_FILE}: tensor {key!r}: not a lora_A / lora_B tensor")
        mapped = name_map.get_type_and_name(base, try_suffixes=(".weight",))
        if mapped is None:
            raise LoraConvertError(
                f"{peft_dir / ADAPTER_FILE}: tensor {key!r}: no GGUF name for {base!r} ({arch.name})"
            )
        kind, name = mapped
        pairs.setdefault(name, {})[half] = key
        kinds[name] = (kind, base)
    plan: list[tuple[OutTensor, Any]] = []
    total = 0
    for name, halves in pairs.items():
        if set(halves) != {"a", "b"}:
            raise LoraConvertError(f"{peft_dir / ADAPTER_FILE}: {name}: lora_A and lora_B must come in pairs")
        a, b = tensors[halves["a"]], tensors[halves["b"]]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoraConvertError(
                f"{peft_dir / ADAPTER_FILE}: {halves['b']}: shapes {a.shape} / {b.shape} are not a LoRA pair"
            )
        kind, hf_base = kinds[name]
        transform = _transform(hp, hf_base, kind)
        total += a.shape[1] * b.shape[0]
        for suffix, x, tf in ((".lora_a", a, None), (".lora_b", b, transform)):
            t = qtype if x.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0 else Q.F16
            plan.append((OutTensor(name + suffix, x.shape, t), partial(_produce, encoder, name + suffix, x, tf, t)))

    meta = gguf.Metadata.load(None, peft_dir, None, -total)  # negative: gguf-py's mark of a LoRA's count
    if meta.name is None:
        meta.name = base_dir.name
    alpha = float(lcfg["lora_alpha"])
    check_output(out, force)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        meta.set_gguf_meta_model(w)
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    return Job(out, arch.name, metadata, plan)


def _adapter_config(peft_dir: Path) -> dict[str, Any]:
    path = peft_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LoraConvertError(f"{path}: unreadable: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA":
        raise LoraConvertError(f"{path}: not a LoRA adapter config (peft_type {cfg.get('peft_type')!r})")
    alpha = cfg.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise LoraConvertError(f"{path}: 'lora_alpha' must be a number, found {alpha!r}")
    for key in ("use_dora", "alora_invocation_tokens", "invocation_string"):
        if cfg.get(key):
            raise LoraConvertError(f"{path}: {key!r} adapters are not supported")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise LoraConvertError(f"{path}: per-module rank_pattern / alpha_pattern are not supported")
    return cfg


def _read_adapter(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise LoraConvertError(f"{path}: unreadable safetensors file (f32/f16 expected): {e}") from None


def _produce(encoder: Encoder, name: str, x: np.ndarray, transform: Any, qtype: Q) -> np.ndarray:
    x = x.astype(np.float32)
    if transform is not None:
        x = transform(x)
    return encoder.encode(name, x, qtype)
