"""Typed errors for everything the converter rejects on purpose.

Each message is one line naming the file, key or tensor and what was expected;
the CLIs print it and exit 1 (no traceback), and nothing is left under the
output name.
"""

from __future__ import annotations

from lamina.errors import LaminaError


class ConvertError(LaminaError):
    """Base of the converter's errors."""


class OutputWriteError(ConvertError):
    """Writing the output failed (a full disk, a file-size limit, an I/O error)."""


class CheckpointError(ConvertError):
    """The HF directory is missing, or a config/weights file is missing or unreadable."""


class TensorShapeError(ConvertError):
    """A weight's shape disagrees with what config.json implies."""


class NonFiniteWeightError(ConvertError):
    """A weight holds NaN or Inf; quantizing it would write garbage silently."""


class VocabError(ConvertError):
    """The tokenizer files are missing or inconsistent with the model."""


class OutputExistsError(ConvertError):
    """The output file exists and --force was not given."""


class ImatrixRequiredError(ConvertError):
    """The mix gives some tensor a type llama-quantize writes only with an
    importance matrix (IQ1_S .. IQ2_S, IQ3_XXS), and none was given."""


class QuantizeInputError(ConvertError):
    """A GGUF given to `quantize` cannot be requantized as asked."""


class ImatrixError(ConvertError, ValueError):
    """An importance-matrix file is unreadable, malformed, or does not fit the model."""

    def __init__(self, path: object, message: str, *, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        super().__init__(f"{self.path}: {field + ': ' if field else ''}{message}")
