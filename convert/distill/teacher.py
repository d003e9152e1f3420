"""Where word-level KD's teacher logits come from: the teacher checkpoint in
PyTorch, or a GGUF teacher run by lamina's own engine.

    teacher = open_teacher(path, device, n_threads)   # HF directory or .gguf file
    teacher.n_vocab
    logits = teacher.logits(x)                        # x int64 [B, T] -> f32 [B, T, V] on device
    teacher.scored                                    # positions of x the logits are of (here: all)
    teacher.close()

The engine teacher evaluates each window from an empty cache (f32 KV) and
returns every position's logits; it is what the issue asks of distillation
(the teacher's logits computed by lamina's engine), and lets a teacher that
exists only as a GGUF (a quantized one, too) heal a student.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from lamina.convert.errors import ConvertError

if TYPE_CHECKING:
    from lamina.engine.context import Context


class TeacherError(ConvertError, ValueError):
    """The teacher cannot be loaded or run."""


class Teacher(Protocol):
    n_vocab: int
    scored: slice  # the positions of a window that logits() returns (kld_base.py: the file's second halves)

    def logits(self, x: torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor: ...

    def close(self) -> None: ...


class TorchTeacher:
    def __init__(self, hf_dir: Path, device: torch.device):
        from lamina.convert.distill.kd import load_model

        self.model = load_model(hf_dir, device).eval()
        self.n_vocab = int(self.model.config.vocab_size)
        self.scored = slice(None)

    def logits(self, x: torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.model(input_ids=x).logits  # [B, T, V]

    def close(self) -> None:
        self.model = None


class EngineTeacher:
    def __init__(self, gguf: Path, device: torch.device, n_threads: int | None = None):
        from lamina.engine.context import Model

        self.path, self.device, self.n_threads = gguf, device, n_threads
        self.model = Model.load(gguf, n_threads=n_threads)
        self.n_vocab = int(self.model.n_vocab)
        self._ctx: Context | None = None
        self._n_ctx = 0
        self.scored = slice(None)

    def logits(self, x: torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor:
        from lamina.engine.context import Context

        B, T = x.shape
        ctx = self._ctx
        if ctx is None or self._n_ctx < T:
            if ctx is not None:
                ctx.close()
            ctx = self._ctx = Context(self.model, n_ctx=T, n_batch=T, kv_type="f32", n_threads=self.n_threads)
            self._n_ctx = T
        rows = []
        ids = x.detach().cpu().numpy()
        for b in range(B):
            ctx.truncate(0)
            rows.append(ctx.eval(ids[b].astype(np.int32), all_logits=True))  # [T, V]
        return torch.from_numpy(np.stack(rows)).to(self.device)  # [B, T, V]

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        self.model.close()


def open_teacher(path: Path, device: torch.device, n_threads: int | None = None) -> Teacher:
    path = Path(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise TeacherError(f"{path}: a teacher is a Hugging Face checkpoint directory or a .gguf file")
        return EngineTeacher(path, device, n_threads)
    if not (path / "config.json").is_file():
        raise TeacherError(f"{path}: no config.json (a teacher is a Hugging Face checkpoint directory or a .gguf file)")
    return TorchTeacher(path, device)
