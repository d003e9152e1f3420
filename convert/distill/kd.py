"""Distillation training: a pruned student learns what its teacher does.

    log = distill(teacher, student_dir, out_dir, windows, settings, work_dir, say, text=None)

Two losses, either or both summed at every step (loss.py):
- word-level KD over `windows` (int [n, T] of calibration text): the KL
  between the teacher's and the student's next-token distributions. The
  teacher (teacher.py) is a checkpoint directory run in PyTorch or a GGUF
  run by lamina's engine, for each batch, or a llama-perplexity
  --kl-divergence-base file (kld_base.py; its chunks are the windows).
- sequence-level KD over `text` (teacher_text.py: calibration prompts and
  what the teacher generated after them): cross-entropy of the teacher's
  tokens. No teacher model is needed while training on it.

The student is transformers' *ForCausalLM in float32 on the CPU (or the
first CUDA device when there is one); AdamW on every student parameter. Weights that are exactly zero in the
student when training starts (unstructured / N:M pruning) stay zero: their
mask is applied after every step, so healing never undoes the sparsity
(keep_zeros=False for a dense student: `lamina compress` passes it when it
made no zeros, since a checkpoint dequantized from a K-quant has incidental
ones, about 5% of Qwen2.5-Coder-0.5B's linears, that should train).

Checkpoints: every `checkpoint_every` steps work_dir/checkpoint.pt holds the
student, the optimizer, the step and the settings (temp file + rename); a
run started with the same work_dir and settings resumes from it. When done
the student is saved to out_dir as safetensors with its tokenizer files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lamina.convert.atomic_dir import atomic_directory
from lamina.convert.distill.loss import kd_loss, text_loss
from lamina.convert.distill.teacher import Teacher
from lamina.convert.distill.teacher_text import TeacherText
from lamina.convert.errors import ConvertError

CHECKPOINT = "checkpoint.pt"


class DistillError(ConvertError, ValueError):
    """Distillation cannot run with these models or settings."""


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device)  # type: ignore[arg-type]  # transformers' stubs type .to() oddly


def sparsity_masks(model) -> dict[str, torch.Tensor]:
    """Masks of the linear weights that hold exact zeros (a pruned pattern to keep)."""
    masks = {}
    for name, p in model.named_parameters():
        if p.ndim == 2 and name.endswith("_proj.weight"):
            keep = p.detach() != 0
            if not bool(keep.all()):
                masks[name] = keep
    return masks


def _settings_key(settings, windows: np.ndarray | None, text: TeacherText | None) -> dict:
    key = {
        "steps": settings.steps,
        "lr": settings.lr,
        "temperature": settings.temperature,
        "batch": settings.batch,
        "windows": None if windows is None else list(windows.shape),
        "windows_sum": None if windows is None else int(windows.astype(np.int64).sum()),
    }
    if text is not None:  # added only when used, so word-level checkpoints of earlier runs still resume
        key["teacher_text"] = text.digest()
    return key


def _order(n: int, draws: int, seed: int) -> np.ndarray:
    """Indices into n items for `draws` picks: shuffled passes, one after another."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(draws // n + 1)])


def distill(
    teacher_path: Path | Teacher | None,
    student_dir: Path,
    out_dir: Path,
    windows: np.ndarray | None,
    settings,
    work_dir: Path,
    say: Callable[[str], None] = lambda s: None,
    console: Console | None = None,
    text: TeacherText | None = None,
    n_threads: int | None = None,
    keep_zeros: bool = True,
) -> list[str]:
    """Train; returns log lines (first and last loss, tokens/s). windows None:
    no word-level KD (and no teacher needed); text None: no sequence-level KD.
    teacher_path may be an opened teacher (a KLDBaseTeacher: windows are then its .windows); distill closes it.
    keep_zeros: the student's zero weights are a pruning pattern to keep (False: a dense student, whose
    incidental zeros, as in a checkpoint dequantized from Q4_K_M, train like any other weight)."""
    from lamina.convert.distill.teacher import open_teacher

    if settings.steps < 1 or settings.batch < 1:
        raise DistillError(f"distillation needs steps >= 1 and batch >= 1, got {settings.steps}, {settings.batch}")
    if windows is None and text is None:
        raise DistillError("distillation needs calibration windows (word-level KD), teacher text, or both")
    device = _device()
    torch.manual_seed(0)
    student = load_model(Path(student_dir), device).train()
    teacher = None
    if windows is not None:
        if teacher_path is None:
            raise DistillError("word-level KD needs a teacher")
        if isinstance(teacher_path, (str, Path)):
            teacher = open_teacher(Path(teacher_path), device, n_threads)
        else:
            teacher = teacher_path
        if teacher.n_vocab != student.config.vocab_size:
            teacher.close()
            raise DistillError(
                f"teacher and student vocabularies differ ({teacher.n_vocab} vs {student.config.vocab_size})"
            )
    if text is not None and int(text.tokens.max()) >= student.config.vocab_size:
        raise DistillError(f"the teacher's text has token {int(text.tokens.max())}, outside the student's vocabulary")
    try:
        masks = sparsity_masks(student) if keep_zeros else {}
        return _train(
            teacher, student, Path(student_dir), out_dir, windows, text, settings, work_dir, say, console, masks
        )
    finally:
        if teacher is not None:
            teacher.close()


def _train(teacher, student, student_dir, out_dir, windows, text, settings, work_dir, say, console, masks) -> list[str]:
    device = next(student.parameters()).device
    params = dict(student.named_parameters())
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    work_dir.mkdir(parents=True, exist_ok=True)
    key = _settings_key(settings, windows, text)
    step = 0
    ckpt_path = work_dir / CHECKPOINT
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt.get("settings") == key:
            student.load_state_dict(ckpt["student"])
            opt.load_state_dict(ckpt["optimizer"])
            step = int(ckpt["step"])
            say(f"resuming distillation at step {step} from {ckpt_path}")
        else:
            say(f"{ckpt_path}: from other settings, starting over")
    draws = settings.steps * settings.batch
    x_all = None if windows is None else torch.as_tensor(windows.astype(np.int64))  # [n, T]
    order = None if x_all is None else _order(x_all.shape[0], draws, 0)
    s_all = None if text is None else torch.as_tensor(text.tokens.astype(np.int64))  # [N, P + n_new]
    s_order = None if s_all is None else _order(s_all.shape[0], draws, 1)
    log: list[str] = []
    first = last = float("nan")
    t0, tokens_done = time.perf_counter(), 0
    columns = (
        TextColumn("distill"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task("distill", total=settings.steps, completed=step, loss=float("nan"), tps=0.0)
        while step < settings.steps:
            pick = slice(step * settings.batch, (step + 1) * settings.batch)
            loss = torch.zeros((), device=device)
            if x_all is not None and order is not None:
                x = x_all[order[pick]].to(device)  # [B, T]
                t_logits = teacher.logits(x, order[pick]).to(device)  # [B, S, V] of positions teacher.scored
                s_logits = student(input_ids=x).logits[:, teacher.scored]  # [B, S, V]
                loss = loss + kd_loss(s_logits, t_logits, settings.temperature)
                tokens_done += x.numel()
            if s_all is not None and s_order is not None:
                y = s_all[s_order[pick]].to(device)  # [B, P + n_new]
                loss = loss + text_loss(student(input_ids=y).logits, y, text.n_prompt)
                tokens_done += y.numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, keep in masks.items():
                    params[name].mul_(keep)
            step += 1
            last = float(loss.detach())
            if first != first:
                first = last
            bar.update(task, completed=step, loss=last, tps=tokens_done / (time.perf_counter() - t0))
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                _save_checkpoint(ckpt_path, student, opt, step, key)
    parts = (("word-level KD", x_all is not None), ("teacher-text CE", s_all is not None))
    what = " + ".join(name for name, on in parts if on)
    log.append(f"{what} loss {first:.4f} -> {last:.4f} over {settings.steps} steps ({tokens_done} tokens this run)")
    save_student(student, Path(student_dir), Path(out_dir))
    return log


def _save_checkpoint(path: Path, student, opt, step: int, key: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"student": student.state_dict(), "optimizer": opt.state_dict(), "step": step, "settings": key}, tmp)
    os.replace(tmp, path)


def save_student(student, source: Path, out: Path) -> Path:
    """The trained student as a checkpoint directory: safetensors + config + the source's tokenizer files."""
    with atomic_directory(out) as tmp:
        student.save_pretrained(tmp)
        for f in source.iterdir():
            weights = f.name.endswith(".safetensors") or f.name == "model.safetensors.index.json"
            if f.is_file() and not weights and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
    return out
