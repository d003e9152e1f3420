"""A Hugging Face checkpoint held in memory while it is cut: config + f32 tensors.

    state = ModelState.load(hf_dir)            # every tensor as float32, torch order
    state.save(out_dir)                        # config.json, model.safetensors, tokenizer files
    to_hf = gguf_to_hf(state)                  # GGUF linear name -> (HF name, row un-permutation)

Calibration runs on lamina's engine over an f32 GGUF of the state, so the
weights it hands back carry GGUF names and llama's q/k row permutation;
`gguf_to_hf` says where each goes back. Pruning decisions are made per
output row (Wanda, SparseGPT, N:M) or over the whole matrix (magnitude), so
a row permutation does not change them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lamina.convert.atomic_dir import atomic_directory
from lamina.convert.errors import CheckpointError
from lamina.convert.hf.arch import detect, load_hparams, plan_tensors
from lamina.convert.hf.checkpoint import INDEX_NAME, HFCheckpoint

# files of a checkpoint that are not weights and travel unchanged (config.json is rewritten)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class ModelState:
    source: Path  # the directory the non-weight files (tokenizer, generation config) come from
    config: dict[str, Any]  # config.json as written (not flattened)
    tensors: dict[str, np.ndarray]  # HF name -> f32 array, torch order

    @classmethod
    def load(cls, hf_dir: str | os.PathLike[str]) -> ModelState:
        ckpt = HFCheckpoint(Path(hf_dir))
        if isinstance(ckpt.raw_config.get("text_config"), dict):
            raise CheckpointError(f"{hf_dir}/config.json: multimodal configs (text_config) cannot be pruned")
        detect(ckpt.config, str(Path(hf_dir) / "config.json"))  # a supported architecture, or a typed error
        tensors = {name: ckpt.load_f32(name) for name in ckpt.tensors}
        return cls(Path(hf_dir), dict(ckpt.raw_config), tensors)

    @property
    def n_layer(self) -> int:
        return int(self.config["num_hidden_layers"])

    def n_params(self) -> int:
        return sum(int(t.size) for t in self.tensors.values())

    def save(self, out: str | os.PathLike[str], dtype: str = "float32") -> Path:
        """Write a checkpoint directory atomically (temp folder, then rename)."""
        from safetensors.numpy import save_file

        out = Path(out)
        with atomic_directory(out) as tmp:
            for f in sorted(self.source.iterdir()):
                if f.is_file() and f.name not in ("config.json", INDEX_NAME) and not f.name.endswith(_WEIGHT_SUFFIXES):
                    shutil.copy(f, tmp / f.name)
            np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
            config = dict(self.config)
            config["dtype"] = dtype
            config.pop("torch_dtype", None)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            arrays = {n: np.ascontiguousarray(t, dtype=np_dtype) for n, t in self.tensors.items()}
            save_file(arrays, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        return out


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """ggml's interleaved q/k rows -> HF's rotate-half rows (the inverse of arch.permute_rope)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf(state: ModelState) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """GGUF weight name -> (HF name, GGUF rows -> HF rows), for every tensor read straight from the checkpoint."""
    arch = detect(state.config, "config.json")
    hp = load_hparams(arch, state.config)
    shapes = {n: tuple(t.shape) for n, t in state.tensors.items()}
    out: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
    for src in plan_tensors(hp, shapes, None):
        if src.hf_name is None:
            continue
        back: Callable[[np.ndarray], np.ndarray] = _same
        if arch.llama_family and src.name.endswith(("attn_q.weight", "attn_k.weight")):
            back = partial(unpermute_rope, n_head=hp.n_head if src.name.endswith("attn_q.weight") else hp.n_head_kv)
        out[src.name] = (src.hf_name, back)
    return out


def _same(w: np.ndarray) -> np.ndarray:
    return w
