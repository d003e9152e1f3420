"""transformers running a GGUF file (dequantized to float32): the reference
of the real-model tests. Its outputs are cached under the file's bytes, the
token ids and the versions of transformers and torch
(tests/support/oracle_cache.py); the model loads (tens of seconds on the
dequantize) only when one is missing."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from support.oracle_cache import cached_array, oracle_key


class TransformersGGUF:
    def __init__(self, path: Path):
        self.path = path

    @functools.cached_property
    def model(self):
        import torch
        import transformers

        return transformers.AutoModelForCausalLM.from_pretrained(
            self.path.parent, gguf_file=self.path.name, dtype=torch.float32
        ).eval()

    def _cached(self, what: str, ids: list[int], run) -> np.ndarray:
        import torch
        import transformers

        def compute() -> np.ndarray:
            with torch.no_grad():
                return run(torch.tensor([ids]))

        key = oracle_key(transformers.__version__, torch.__version__, self.path, what, [int(i) for i in ids])
        return cached_array(f"transformers-{what}", key, compute)

    def logits(self, ids: list[int]) -> np.ndarray:
        """[T, n_vocab] float32, every position"""
        return self._cached("logits", ids, lambda t: self.model(t).logits[0].float().numpy())

    def hidden(self, ids: list[int]) -> np.ndarray:
        """[T, n_embd] float64: last_hidden_state (after the final norm)"""
        return self._cached("hidden", ids, lambda t: self.model.model(t).last_hidden_state[0].double().numpy())
