"""lamina: a llama.cpp-style LLM runtime for Python.

    from lamina import Llama                  # llama-cpp-python's API
    llm = Llama("smollm2-135m-instruct")      # a GGUF path or a known model name

The package: `Llama` (llama.py) on the generation loop (generation.py) over
the engine (engine/: the model, its contexts, offload), the tokenizers
(tokenizer/), GGUF reading (gguf/), block formats (quants.py), GPTQ storage
(gptq/), quality measurement (eval/), the `lamina` command (cli/) and the
converter (convert/, `lamina.convert`). Importing the package stays light, so
`lamina inspect` needs no native code: `Llama` loads on first use."""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Llama":
        from lamina.llama import Llama

        return Llama
    if name == "LlamaGrammar":
        from lamina.grammar import LlamaGrammar

        return LlamaGrammar
    if name in ("LlamaPromptLookupDecoding", "LlamaDraftModel", "LlamaDraftFile"):
        import lamina.speculative

        return getattr(lamina.speculative, name)
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")
