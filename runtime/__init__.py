"""lamina's Python runtime: GGUF loading, block formats, and (soon) the model,
tokenizer, KV cache, sampling and chat. Import submodules directly; this
package import stays light so tools like `bin/inspect` need no native code."""

__version__ = "0.1.0"
