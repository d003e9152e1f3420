"""Distillation training: a pruned student learns the teacher's next-token distributions.

    log = distill(teacher_dir, student_dir, out_dir, windows, settings, work_dir, say)

Both models are transformers' *ForCausalLM in float32 on the CPU (or the
first CUDA device when there is one); the teacher's logits come from the
teacher itself, under no_grad, for each batch. AdamW on every student
parameter, the KD loss of loss.py. Weights that are exactly zero in the
student when training starts (unstructured / N:M pruning) stay zero: their
mask is applied after every step, so healing never undoes the sparsity.

Checkpoints: every `checkpoint_every` steps work_dir/checkpoint.pt holds the
student, the optimizer, the step and the settings (temp file + rename); a
run started with the same work_dir and settings resumes from it. When done
the student is saved to out_dir as safetensors with its tokenizer files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lamina.convert.distill.loss import kd_loss
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


def _settings_key(settings, windows: np.ndarray) -> dict:
    return {
        "steps": settings.steps,
        "lr": settings.lr,
        "temperature": settings.temperature,
        "batch": settings.batch,
        "windows": list(windows.shape),
        "windows_sum": int(windows.astype(np.int64).sum()),
    }


def distill(
    teacher_dir: Path,
    student_dir: Path,
    out_dir: Path,
    windows: np.ndarray,
    settings,
    work_dir: Path,
    say: Callable[[str], None] = lambda s: None,
    console: Console | None = None,
) -> list[str]:
    """Train; returns log lines (first and last loss, tokens/s)."""
    if settings.steps < 1 or settings.batch < 1:
        raise DistillError(f"distillation needs steps >= 1 and batch >= 1, got {settings.steps}, {settings.batch}")
    device = _device()
    torch.manual_seed(0)
    teacher = load_model(Path(teacher_dir), device).eval()
    student = load_model(Path(student_dir), device).train()
    if teacher.config.vocab_size != student.config.vocab_size:
        raise DistillError(
            f"teacher and student vocabularies differ ({teacher.config.vocab_size} vs {student.config.vocab_size})"
        )
    masks = sparsity_masks(student)
    params = dict(student.named_parameters())
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    work_dir.mkdir(parents=True, exist_ok=True)
    key = _settings_key(settings, windows)
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
    x_all = torch.as_tensor(windows.astype(np.int64))  # [n, T]
    n = x_all.shape[0]
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(n) for _ in range((settings.steps * settings.batch) // n + 1)])
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
            idx = order[step * settings.batch : (step + 1) * settings.batch]
            x = x_all[idx].to(device)  # [B, T]
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits  # [B, T, V]
            s_logits = student(input_ids=x).logits  # [B, T, V]
            loss = kd_loss(s_logits, t_logits, settings.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, keep in masks.items():
                    params[name].mul_(keep)
            step += 1
            tokens_done += x.numel()
            last = float(loss.detach())
            if first != first:
                first = last
            bar.update(task, completed=step, loss=last, tps=tokens_done / (time.perf_counter() - t0))
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                _save_checkpoint(ckpt_path, student, opt, step, key)
    log.append(f"KD loss {first:.4f} -> {last:.4f} over {settings.steps} steps ({tokens_done} tokens this run)")
    save_student(student, Path(student_dir), Path(out_dir))
    return log


def _save_checkpoint(path: Path, student, opt, step: int, key: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"student": student.state_dict(), "optimizer": opt.state_dict(), "step": step, "settings": key}, tmp)
    os.replace(tmp, path)


def save_student(student, source: Path, out: Path) -> Path:
    """The trained student as a checkpoint directory: safetensors + config + the source's tokenizer files."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        student.save_pretrained(tmp)
        for f in source.iterdir():
            weights = f.name.endswith(".safetensors") or f.name == "model.safetensors.index.json"
            if f.is_file() and not weights and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
