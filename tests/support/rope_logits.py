"""The logits the rope-scaling checkpoint tests compare: a prefill and 16
one-token decode steps in lamina, the same ids through transformers (with
the checkpoint's rope parameters or others given), and the nmse between."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lamina.engine.context import Context, Model
from lamina.engine.loader import HParams
from lamina.gguf.reader import GGUFFile

N_PREFILL, N_DECODE = 24, 16  # 40 positions: past the tests' 32-position original contexts


def random_ids(path: Path, seed: int = 7) -> list[int]:
    """N_PREFILL + N_DECODE token ids of the file's vocabulary"""
    n_vocab = GGUFFile(path).tensor("token_embd.weight").ne[1]
    return np.random.default_rng(seed).integers(3, n_vocab, N_PREFILL + N_DECODE).tolist()


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(((got - want) ** 2).mean() / (want**2).mean())


def transformers_logits(hf_dir: Path, ids: list[int], rope_parameters: dict[str, Any] | None = None) -> np.ndarray:
    """[T, V] of the checkpoint; rope_parameters: these instead of its config's (the same weights)"""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(hf_dir)
    if rope_parameters is not None:
        config.rope_parameters = rope_parameters
    model = AutoModelForCausalLM.from_pretrained(hf_dir, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()  # [T, V]


def lamina_logits(path: Path, ids: list[int], hparams: HParams | None = None) -> np.ndarray:
    """[T, V]: the first N_PREFILL ids in one eval, then one at a time
    (hparams: these instead of the file's, a test's one switch flipped)"""
    ctx = Context(Model.load(path, n_threads=2, hparams=hparams), n_ctx=64)
    rows = [ctx.eval(ids[:N_PREFILL], all_logits=True)]  # [N_PREFILL, V]
    rows += [ctx.eval(ids[i : i + 1]) for i in range(N_PREFILL, len(ids))]  # N_DECODE x [V]
    return np.vstack(rows)
