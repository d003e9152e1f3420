"""Speculative decoding: guess several next tokens cheaply, check them all in
one forward pass of the model, keep the longest prefix the model agrees with.

    from lamina import Llama, LlamaPromptLookupDecoding, LlamaDraftFile
    llm = Llama("model.gguf", draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))
    llm = Llama("model.gguf", draft_model=LlamaDraftFile("small.gguf", n_max=8))

lookup.py drafts from the sequence's own tokens (prompt lookup), draft.py
from a small model sharing the tokenizer, policy.py picks the draft length,
verify.py accepts or rejects (exact at temperature 0, the target's
distribution when sampling) and step.py is the engine's side of it."""

from lamina.speculative.draft import LlamaDraftFile
from lamina.speculative.lookup import LlamaDraftModel, LlamaPromptLookupDecoding
from lamina.speculative.step import Speculative
from lamina.speculative.verify import SpeculativeError

__all__ = ["LlamaDraftFile", "LlamaDraftModel", "LlamaPromptLookupDecoding", "Speculative", "SpeculativeError"]
