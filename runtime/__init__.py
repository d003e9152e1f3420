"""lamina's Python runtime: GGUF loading, block formats, and (soon) the model,
tokenizer, KV cache, sampling and chat. Import submodules directly; this
package import stays light so tools like `bin/inspect` need no native code."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from runtime import Llama` without loading the native core for every import
    if name == "Llama":
        from lamina.llama import Llama

        return Llama
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
