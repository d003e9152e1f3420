"""Where logits come from for perplexity and KL-divergence: lamina's engine,
or llama.cpp through llama-cpp-python (the same computation over llama.cpp's
numbers)."""

from __future__ import annotations

import os

import numpy as np

from lamina.eval.scoring import PerplexityError

# ----------------------------------------------------------------------------
# lamina's engine as a provider


class EngineLogits:
    """LogitsProvider over a lamina Context: each call clears the KV cache and
    evaluates the chunk in batches of n_batch (one native call each)."""

    def __init__(
        self, model, n_ctx: int, n_batch: int = 512, n_threads: int | None = None, kv_type: str = "f16"
    ) -> None:
        from lamina.engine.context import Context

        self.n_vocab = model.n_vocab
        self.ctx = Context(model, n_ctx=n_ctx, n_batch=n_batch, kv_type=kv_type, n_threads=n_threads)

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray:
        self.ctx.truncate(0)
        return self.ctx.eval(tokens, all_logits=True)[first:]


class LlamaCppLogits:
    """LogitsProvider over llama.cpp (llama-cpp-python) with all logits kept,
    plus llama.cpp's own tokenizer: the same computation over llama.cpp's
    numbers, for comparing with lamina."""

    def __init__(
        self, path: str | os.PathLike[str], n_ctx: int, n_batch: int = 512, n_threads: int | None = None
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise PerplexityError("--llama-cpp needs llama-cpp-python (pip install llama-cpp-python)") from None
        threads = n_threads or os.cpu_count() or 1
        self.llm = Llama(
            os.fspath(path),
            n_ctx=n_ctx,
            n_batch=min(n_batch, n_ctx),
            n_ubatch=min(n_batch, n_ctx),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            logits_all=True,
            verbose=False,
        )
        self.n_vocab = int(self.llm.n_vocab())
        bos = int(self.llm.token_bos())
        with_bos = self.llm.tokenize(b"a", add_bos=True, special=False)
        without = self.llm.tokenize(b"a", add_bos=False, special=False)
        # does the vocabulary add BOS (llama_vocab_get_add_bos)?
        self.bos_id: int | None = bos if len(with_bos) == len(without) + 1 and with_bos[0] == bos else None

    def tokenize(self, text: bytes | str) -> list[int]:
        """common_tokenize(ctx, text, add_special=true, parse_special=false)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(self.llm.tokenize(data, add_bos=True, special=False))

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray:
        self.llm.reset()  # n_tokens = 0: eval() drops every cached position
        self.llm.eval([int(t) for t in tokens])
        return np.array(self.llm.scores[first : len(tokens)], dtype=np.float32)
