"""Random PEFT LoRA adapters on the tiny checkpoints of tiny_hf.py, and
llama.cpp's convert_lora_to_gguf.py (the vendored tree, in a child process)
as the oracle for their GGUF form.

peft's default init leaves B at zero (the adapter is a no-op); the B here
are redrawn so the adapter moves the logits well beyond rounding."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_peft_adapter(hf_dir: Path, out: Path, rank: int = 8, alpha: float = 16.0, seed: int = 1) -> Path:
    """adapter_config.json + adapter_model.safetensors of a random LoRA on hf_dir's model"""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    # the output head too where it is a matrix of its own (llama.cpp refuses one tied to the embeddings)
    targets = TARGETS + ([] if base.config.tie_word_embeddings else ["lm_head"])
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape) / np.sqrt(p.shape[1]))
            elif "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape) / np.sqrt(p.shape[1]))
    model.save_pretrained(out, save_embedding_layers=False)  # the adapter alone, not the head it adapts
    return out


def peft_logits(hf_dir: Path, adapter_dir: Path, ids: list[int], scale: float = 1.0) -> np.ndarray:
    """transformers + peft logits f32 [T, V] with the adapter (scaled as llama.cpp's scale does)"""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    if scale != 1.0:
        for m in model.modules():
            if hasattr(m, "scaling") and isinstance(m.scaling, dict):
                for k in m.scaling:
                    m.scaling[k] *= scale
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def llama_cpp_lora_gguf(adapter_dir: Path, hf_dir: Path, out: Path, outtype: str = "f32") -> Path:
    """llama.cpp's convert_lora_to_gguf.py of adapter_dir over hf_dir's config
    (cached under both folders' bytes: tests/support/oracle_cache.py), copied to out"""
    from support.llama_cpp_ref import SDIST, llama_cpp_tree
    from support.oracle_cache import cached_file, oracle_key

    script = llama_cpp_tree() / "convert_lora_to_gguf.py"

    def convert(tmp: Path) -> None:
        cmd = [sys.executable, str(script), "--base", str(hf_dir), "--outtype", outtype, "--outfile", str(tmp)]
        subprocess.run([*cmd, str(adapter_dir)], check=True, capture_output=True, timeout=300)

    key = oracle_key(SDIST, adapter_dir, hf_dir, outtype)
    shutil.copyfile(cached_file("convert-lora", f"{outtype}.gguf", key, convert), out)
    return out
