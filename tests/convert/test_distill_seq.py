"""Sequence-level distillation and GGUF teachers on a tiny random llama: the
teacher's text from lamina's engine (greedy = transformers' argmax, seeded
sampling reproducible), a training run on it that lowers the student's loss
on that text and resumes, the engine teacher's logits against PyTorch's, and
`lamina compress --distill-seq / --teacher` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.cli.compress import main as compress_main  # noqa: E402
from lamina.convert.distill.kd import CHECKPOINT, distill, load_model  # noqa: E402
from lamina.convert.distill.loss import text_loss  # noqa: E402
from lamina.convert.distill.teacher import open_teacher  # noqa: E402
from lamina.convert.distill.teacher_text import TeacherText, teacher_text  # noqa: E402
from lamina.convert.encode import Encoder  # noqa: E402
from lamina.convert.prune.hf_state import ModelState  # noqa: E402
from lamina.convert.prune.pipeline import DistillSettings, _f32_gguf  # noqa: E402
from lamina.convert.prune.structured import drop_layers  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(teacher HF dir, the teacher as an f32 GGUF, a student with one layer less)."""
    from support.tiny_hf import tiny_hf_checkpoint

    root = tmp_path_factory.mktemp("seqkd")
    teacher = tiny_hf_checkpoint("llama", root / "teacher")
    encoder = Encoder(2)
    try:
        gguf = _f32_gguf(teacher, encoder, root / "teacher-f32.gguf")
    finally:
        encoder.close()
    state = ModelState.load(teacher)
    drop_layers(state, [2])
    return teacher, gguf, state.save(root / "student")


def _prompts(n: int, p: int) -> np.ndarray:
    return np.random.default_rng(1).integers(3, 1000, (n, p)).astype(np.int32)


def test_teacher_text_is_the_teachers_greedy_continuation(models) -> None:
    teacher, gguf, _ = models
    text = teacher_text(gguf, _prompts(3, 6), 10, temperature=0.0, n_threads=2)
    assert text.tokens.shape == (3, 16) and text.n_prompt == 6
    assert np.array_equal(text.tokens[:, :6], _prompts(3, 6))
    model = load_model(teacher, CPU).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(text.tokens.astype(np.int64))).logits.numpy()  # [3, 16, V]
    # every generated token is transformers' argmax after the tokens before it
    assert np.array_equal(logits[:, 5:-1].argmax(-1), text.tokens[:, 6:])

    a = teacher_text(gguf, _prompts(3, 6), 10, temperature=1.0, seed=7, n_threads=2)
    b = teacher_text(gguf, _prompts(3, 6), 10, temperature=1.0, seed=7, n_threads=2)
    c = teacher_text(gguf, _prompts(3, 6), 10, temperature=1.0, seed=8, n_threads=2)
    assert np.array_equal(a.tokens, b.tokens)  # seeded: the same text again
    assert not np.array_equal(a.tokens, c.tokens)
    assert not np.array_equal(a.tokens, text.tokens)  # sampled, not greedy


def _text_loss(student: Path, text: TeacherText) -> float:
    model = load_model(student, CPU).eval()
    y = torch.as_tensor(text.tokens.astype(np.int64))
    with torch.no_grad():
        return float(text_loss(model(input_ids=y).logits, y, text.n_prompt))


def test_sequence_kd_lowers_the_students_loss_on_the_teachers_text(models, tmp_path: Path) -> None:
    _, gguf, student = models
    text = teacher_text(gguf, _prompts(4, 8), 24, n_threads=2)
    settings = DistillSettings(steps=4, lr=3e-3, batch=4, checkpoint_every=2, word=False, seq=4)
    before = _text_loss(student, text)
    out, work = tmp_path / "healed", tmp_path / "work"
    log = distill(None, student, out, None, settings, work, text=text)
    after = _text_loss(out, text)
    assert after < 0.8 * before, (before, after, log)
    assert "teacher-text CE" in log[0]
    assert torch.load(work / CHECKPOINT, weights_only=False)["step"] == 4
    said: list[str] = []
    distill(None, student, tmp_path / "again", None, settings, work, said.append, text=text)
    assert any("resuming distillation at step 4" in s for s in said)
    # other text: the checkpoint is not this run's
    other = TeacherText(text.tokens[::-1].copy(), text.n_prompt)
    said.clear()
    distill(None, student, tmp_path / "other", None, settings, work, said.append, text=other)
    assert any("from other settings, starting over" in s for s in said)


def test_engine_teacher_logits_equal_pytorchs(models) -> None:
    teacher, gguf, _ = models
    x = torch.as_tensor(_prompts(2, 20).astype(np.int64))
    engine, torch_teacher = open_teacher(gguf, CPU, 2), open_teacher(teacher, CPU)
    try:
        got, want = engine.logits(x), torch_teacher.logits(x)  # [2, 20, V]
        assert got.shape == want.shape and engine.n_vocab == torch_teacher.n_vocab
        assert float(((got - want) ** 2).mean() / (want**2).mean()) < 1e-5
    finally:
        engine.close()
        torch_teacher.close()


def test_compress_distill_seq_with_a_gguf_teacher(models, tmp_path: Path, capsys) -> None:
    teacher, gguf, _ = models
    out = tmp_path / "out"
    flags = ["--drop-layers", "1", "--nsamples", "2", "--seqlen", "32", "--threads", "2", "--outtype", "f32"]
    seq = ["--distill-seq", "4", "--distill-seq-tokens", "12", "--distill-seq-prompt", "8", "--teacher", str(gguf)]
    word = ["--distill", "--distill-seqlen", "32", "--distill-steps", "2", "--distill-batch", "2"]
    assert compress_main([str(teacher), "-o", str(out), *flags, *seq, *word]) == 0
    printed = capsys.readouterr()
    assert "sequence-level KD on 4 continuations of 12 tokens after 8-token calibration prompts (greedy" in printed.out
    assert "teacher logits from lamina's engine" in printed.out
    assert "word-level KD + teacher-text CE loss" in printed.out
    saved = np.load(out / "distill" / "teacher-text.npz")
    assert saved["tokens"].shape == (4, 20)
    assert ModelState.load(out / "hf").config["num_hidden_layers"] == 3
    # again with --force: the teacher's text and the finished checkpoint are reused
    assert compress_main([str(teacher), "-o", str(out), *flags, *seq, *word, "--force"]) == 0
    err = capsys.readouterr().err
    assert "reusing the teacher's text" in err and "resuming distillation at step 2" in err

    bad = [
        (["--distill-seq-tokens", "8"], "--distill-seq-tokens applies to distillation: give --distill-seq N"),
        (["--distill-temperature", "3"], "--distill-temperature applies to distillation: give --distill"),
        (["--teacher", str(gguf)], "--teacher applies to distillation"),
        (["--distill-seq", "2", "--teacher", str(teacher)], "expected an existing .gguf file"),
    ]
    for extra, message in bad:
        assert compress_main([str(teacher), "-o", str(tmp_path / "x"), *flags, *extra]) == 1
        assert message in capsys.readouterr().err
