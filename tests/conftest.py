import sys
from pathlib import Path

import pytest

# tests import helpers (ggml_oracle, distributions) by plain module name
sys.path.insert(0, str(Path(__file__).parent))



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny(cfg) -> path of that tiny model's GGUF (tests/tiny_models.py), written once per module."""
    from tiny_models import write_tiny_model
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
    from hf_checkpoints import hf_checkpoint
    return hf_checkpoint("smollm2-135m-instruct")
