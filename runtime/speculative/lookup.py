"""Prompt-lookup decoding (Saxena 2023; llama.cpp's llama-lookup,
llama-cpp-python's LlamaPromptLookupDecoding): the draft is what followed
the latest earlier occurrence of the sequence's last n tokens in its own
prompt and output. Nothing extra to load; it pays where the output copies
the input (code edits, summaries, RAG quotes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.speculative.verify import SpeculativeError


def lookup_draft(tokens: Sequence[int] | np.ndarray, max_ngram_size: int, num_pred_tokens: int) -> np.ndarray:
    """Up to num_pred_tokens tokens (int32) continuing tokens: for n from
    max_ngram_size down to 1, the tokens after the latest earlier occurrence
    of the last n tokens; empty when none occurs."""
    ids = np.asarray(tokens, dtype=np.int32)
    n_tok = ids.size
    for n in range(min(max_ngram_size, n_tok - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)  # [n_tok - n, n]: not the tail itself
        hits = np.flatnonzero((windows == ids[n_tok - n :]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return ids[start : min(start + num_pred_tokens, n_tok)].copy()
    return np.zeros(0, dtype=np.int32)


class LlamaDraftModel:
    """llama-cpp-python's draft-model interface: called with the sequence's
    tokens so far (np.intc array), returns the tokens it guesses come next.
    Subclass it for a drafter of your own; lamina verifies its tokens as
    point-mass drafts, so any guess keeps the output's distribution."""

    def __call__(self, input_ids: np.ndarray, /, **kwargs: object) -> np.ndarray:
        raise NotImplementedError


class LlamaPromptLookupDecoding(LlamaDraftModel):
    """Llama(model, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10)):
    llama-cpp-python's class and defaults."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        for name, v, hi in (("max_ngram_size", max_ngram_size, 64), ("num_pred_tokens", num_pred_tokens, 256)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise SpeculativeError(f"LlamaPromptLookupDecoding: {name} must be an integer in [1, {hi}], got {v!r}")
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens

    def __call__(self, input_ids: np.ndarray, /, **kwargs: object) -> np.ndarray:
        return lookup_draft(input_ids, self.max_ngram_size, self.num_pred_tokens).astype(np.intc)

    def __repr__(self) -> str:
        return (
            f"LlamaPromptLookupDecoding(max_ngram_size={self.max_ngram_size}, num_pred_tokens={self.num_pred_tokens})"
        )
