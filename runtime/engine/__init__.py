"""The model and its contexts: hyperparameters and weights from a GGUF
(loader.py) bound to the native forward pass, KV caches (context.py), the
offload plan (offload.py) and the float64 numpy reference forward pass that
tests hold the native one to (reference.py).

    from lamina.engine import Model, Context
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Model": "lamina.engine.context",
    "Context": "lamina.engine.context",
    "ContextError": "lamina.engine.context",
    "ContextFullError": "lamina.engine.context",
    "InvalidTokenError": "lamina.engine.context",
    "HParams": "lamina.engine.loader",
}


def __getattr__(name: str) -> Any:
    # lazily, so importing a light submodule (offload planning) does not load the native core
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lamina.engine' has no attribute {name!r}")
