"""Bake LoRA adapters into a new GGUF (llama-export-lora's job), at any output type:

    W' = W + sum over adapters of scale * alpha / rank * B A

for every matrix an adapter targets; the adapters are checked against the
base as `lamina run --lora` checks them (lamina.engine.lora), every other
tensor and key goes through `lamina quantize`'s plan with the chosen mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from lamina.convert.encode import Encoder
from lamina.convert.pipeline import Job
from lamina.convert.recipes import get_mix
from lamina.convert.requantize import plan_gguf
from lamina.engine.lora import LoraAdapter, check_scale


def plan_merge(
    base: Path, loras: Sequence[tuple[str, float]], out: Path, mix: str, encoder: Encoder, force: bool = False
) -> Job:
    from lamina.engine.context import Model

    if not loras:
        raise ValueError("--merge needs at least one adapter (--lora FILE or --lora-scaled FILE SCALE)")
    model = Model.load(base, n_threads=1)
    edits: dict[str, list[tuple[LoraAdapter, float]]] = {}
    for path, scale in loras:
        adapter = LoraAdapter.load(path, model)
        for name in adapter.pairs:
            edits.setdefault(name, []).append((adapter, check_scale(scale)))
    edit = {name: partial(_merged, name, entries) for name, entries in edits.items()}
    return plan_gguf(base, out, get_mix(mix), encoder, force, allow_requantize=True, edit=edit)


def _merged(name: str, entries: list[tuple[LoraAdapter, float]], w: np.ndarray) -> np.ndarray:
    """w [n_out, n_in] f32 plus every adapter's delta, in the order given"""
    for adapter, scale in entries:
        w = w + adapter.delta(name, scale)
    return w
