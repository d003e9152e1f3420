"""Sequence-level distillation's training text: what the teacher writes after
calibration prompts, generated on lamina's own engine.

    seqs = teacher_text(teacher_gguf, prompts, n_new=128, temperature=0.0, seed=0)
    seqs.tokens    # int32 [N, P + n_new]: each prompt and its continuation
    seqs.n_prompt  # P: targets are positions P.. (the teacher's tokens)

Kim & Rush (2016): training the student with cross-entropy on the teacher's
own outputs (its mode, approximated by greedy decoding, or samples from it)
transfers the teacher's sequence distribution, not only its next-token one.
The prompts run through the batched engine (lamina.generation), several at a
time; temperature 0 is greedy, above it plain ancestral sampling (no top-k /
top-p / min-p cut) seeded per sequence (seed + i), so the text does not
depend on how requests were scheduled. Every continuation has exactly n_new
tokens: the teacher does not stop at an end-of-generation token (calibration
text is a stream of documents, and equal lengths need no padding).

cached(path, key, make) keeps the generated text in the distillation's work
folder, so a resumed run trains on the same text without generating again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina.convert.errors import ConvertError


class TeacherTextError(ConvertError, ValueError):
    """The teacher cannot generate the text asked for."""


@dataclass
class TeacherText:
    tokens: np.ndarray  # int32 [N, P + n_new]
    n_prompt: int  # P

    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.tokens, dtype=np.int32).tobytes()).hexdigest()[:16]


def teacher_text(
    teacher_gguf: str | os.PathLike[str],
    prompts: np.ndarray,
    n_new: int,
    temperature: float = 0.0,
    seed: int = 0,
    n_threads: int | None = None,
    n_slots: int = 4,
    progress: Callable[[int, int], None] | None = None,
    n_vocab: int | None = None,
) -> TeacherText:
    """prompts int32 [N, P] -> the prompts and n_new teacher tokens after each.
    n_vocab: the student's vocabulary size, which the teacher's must equal."""
    from lamina.generation import open_session
    from lamina.sampling import Sampler, SamplingParams

    prompts = np.asarray(prompts, dtype=np.int32)
    if prompts.ndim != 2 or prompts.shape[0] < 1 or prompts.shape[1] < 1:
        raise TeacherTextError(f"teacher prompts: expected int [N >= 1, P >= 1], got shape {prompts.shape}")
    if n_new < 1:
        raise TeacherTextError(f"teacher text: tokens to generate must be >= 1, got {n_new}")
    if temperature < 0:
        raise TeacherTextError(f"teacher text: temperature must be >= 0, got {temperature}")
    N, P = prompts.shape
    n_slots = max(1, min(n_slots, N))
    params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0)
    # one shared cache holds every slot's sequence
    n_ctx = n_slots * (P + n_new + 1)
    session = open_session(teacher_gguf, n_ctx=n_ctx, n_threads=n_threads, n_slots=n_slots, kv_type="f32")
    out = np.empty((N, P + n_new), dtype=np.int32)
    out[:, :P] = prompts
    try:
        if n_vocab is not None and session.model.n_vocab != n_vocab:
            raise TeacherTextError(
                f"{teacher_gguf}: the teacher's vocabulary has {session.model.n_vocab} tokens, the student's {n_vocab}"
            )
        for first in range(0, N, n_slots):
            batch = range(first, min(N, first + n_slots))
            requests = [
                session.engine.submit(
                    prompts[i].tolist(), Sampler(params, seed=seed + i), max_tokens=n_new, stop_at_eog=False
                )
                for i in batch
            ]
            for i, r in zip(batch, requests, strict=True):
                for piece in r.pieces():
                    if piece.error is not None:
                        raise TeacherTextError(f"the teacher's generation failed: {piece.error}") from piece.error
                if len(r.output) != n_new:
                    raise TeacherTextError(
                        f"the teacher generated {len(r.output)} of {n_new} tokens ({r.finish_reason})"
                    )
                out[i, P:] = r.output
            if progress is not None:
                progress(batch.stop, N)
    finally:
        session.close()
    return TeacherText(out, P)


def cached(path: Path, key: dict, make: Callable[[], TeacherText]) -> tuple[TeacherText, bool]:
    """The text saved at path when it was made with this key, else make() it and
    save it (temp file + rename). Returns (text, whether it came from the file)."""
    stamp = json.dumps(key, sort_keys=True)
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == stamp:
                return TeacherText(z["tokens"].astype(np.int32), int(z["n_prompt"])), True
    text = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, tokens=text.tokens, n_prompt=np.int64(text.n_prompt), key=np.array(stamp))
    os.replace(tmp, path)
    return text, False
