"""What the compress tests share: run `lamina compress` to an f32 GGUF, and
the logits of the result in lamina and in transformers (the oracle, on the
pruned HF weights `compress` writes next to the GGUF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lamina.cli.compress import main as compress_main
from lamina.gguf.reader import GGUFFile

CALIB = ["--nsamples", "4", "--seqlen", "64", "--threads", "2"]


def compress(src: Path, out: Path, *flags: str) -> Path:
    """`lamina compress src -o out --outtype f32` with a small calibration; the one GGUF it writes."""
    assert compress_main([str(src), "-o", str(out), "--outtype", "f32", *CALIB, *flags]) == 0
    (gguf,) = out.glob("*.gguf")
    return gguf


def transformers_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()  # [T, V]


def lamina_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    from lamina.engine.context import Context, Model

    ctx = Context(Model.load(gguf, n_threads=2), n_ctx=64)
    try:
        return ctx.eval(ids, all_logits=True)  # [T, V]
    finally:
        ctx.close()


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(((got - want) ** 2).mean() / (want**2).mean())


def random_ids(gguf: Path, n: int = 24) -> list[int]:
    """n token ids drawn past the first three (the special ones), the same every call"""
    n_vocab = GGUFFile(gguf).tensor("token_embd.weight").ne[1]
    return np.random.default_rng(3).integers(3, n_vocab, n).tolist()
