"""Typed errors for everything lamina rejects on purpose.

Every message names the file, the key or tensor, and what was expected versus
what was found, so a user can act on the one line they see.
"""

from __future__ import annotations

import os


class LaminaError(Exception):
    """Base of every error lamina raises on purpose; CLIs catch this."""


class UnsupportedArchitectureError(LaminaError, ValueError):
    """A model of an architecture lamina does not run: a GGUF's
    general.architecture, or an HF config's `architectures`. The message names
    the file, the architecture and the supported ones."""


class QuantizerUnavailableError(LaminaError, ValueError):
    """A request to write a ggml type lamina runs but has no quantizer for
    (lm_type_supported but not lm_type_quantizable). `qtype` is the type."""

    def __init__(self, qtype_name: str) -> None:
        self.qtype = qtype_name
        super().__init__(
            f"lamina has no quantizer for {qtype_name}: it runs {qtype_name} files "
            "(made by llama-quantize) but cannot write them"
        )


class ImatrixRequiredError(LaminaError, ValueError):
    """A request to quantize to a type whose quantizer needs an importance
    matrix (IQ1_S, IQ2_XXS, IQ2_XS: ggml_quantize_requires_imatrix; ggml
    aborts without one) without giving one. `qtype` is the type, `tensor` the
    tensor's name where one is known."""

    def __init__(self, qtype_name: str, tensor: str | None = None) -> None:
        self.qtype = qtype_name
        self.tensor = tensor
        what = f"tensor {tensor!r} to {qtype_name}" if tensor else qtype_name
        super().__init__(
            f"quantizing {what} needs an importance matrix (imatrix): pass imatrix=, e.g. from llama-imatrix"
        )


class GGUFError(LaminaError, ValueError):
    """Something is wrong with a GGUF file (or with a request against one)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        *,
        key: str | None = None,
        tensor: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.tensor = tensor
        self.offset = offset
        where = ""
        if key is not None:
            where += f"key {key!r}: "
        if tensor is not None:
            where += f"tensor {tensor!r}: "
        at = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{self.path}: {where}{message}{at}")

    # The KeyError subclasses below would otherwise repr() the message.
    __str__ = LaminaError.__str__


class GGUFFormatError(GGUFError):
    """The header is malformed: magic, version, value types, keys, alignment."""


class GGUFTruncatedError(GGUFFormatError):
    """The file ends before the structure it declares does (or a count lies)."""


class GGUFTensorError(GGUFError):
    """A tensor's info is invalid: shape, type, offset, size or overlap."""


class GGUFMissingTensorError(GGUFTensorError, KeyError):
    """A tensor asked for by name is not in the file."""


class GGUFMissingKeyError(GGUFError, KeyError):
    """A required metadata key is not in the file."""


class ModelFetchError(LaminaError):
    """A model could not be downloaded, assembled or verified."""


class UnknownModelError(ModelFetchError):
    """A model argument is neither an existing file nor a known model name."""
