"""Fixtures and hooks for the whole suite. Helpers live in tests/support/
(pytest puts tests/ on the path: pyproject.toml's `pythonpath`)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """None when the core can load liblamina_cuda and sees a GPU, else why not."""
    try:
        from lamina.engine.offload import load_cuda
        from lamina.native import last_error, lib
    except ImportError as e:
        return f"the native core does not load: {e}"
    if load_cuda() and lib.lm_device_available(lib.LM_DEVICE_CUDA):
        return None
    return last_error() or "no usable CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip, all with the same one reason, where there is no GPU."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    reason = gpu_unavailable_reason()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"no GPU: {reason}")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny(cfg) -> path of that tiny model's GGUF (tests/support/tiny_models.py), written once per module."""
    from support.tiny_models import write_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    cache = {}

    def make(cfg):
        if cfg not in cache:
            cache[cfg] = write_tiny_model(root / f"m{len(cache)}.gguf", cfg)
        return cache[cfg]

    return make


@pytest.fixture(scope="module")
def tokenizer_source() -> Path:
    """SmolLM2's HF checkpoint folder: the tokenizer files tiny test checkpoints borrow."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from support.hf_checkpoints import hf_checkpoint

    return hf_checkpoint("smollm2-135m-instruct")
