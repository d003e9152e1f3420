"""Distillation on a tiny random llama: the KD loss, a training step that lowers
it, the kept sparsity, checkpoint resume, and the saved student."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.convert.distill.kd import CHECKPOINT, distill, load_model  # noqa: E402
from lamina.convert.distill.loss import kd_loss  # noqa: E402
from lamina.convert.prune.hf_state import ModelState  # noqa: E402
from lamina.convert.prune.pipeline import DistillSettings  # noqa: E402
from lamina.convert.prune.structured import drop_layers  # noqa: E402


def test_kd_loss_is_the_tempered_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 11, generator=g), torch.randn(2, 3, 11, generator=g)
    T = 2.0
    p = torch.softmax(t / T, -1).double().numpy()
    q = torch.softmax(s / T, -1).double().numpy()
    want = T * T * float((p * (np.log(p) - np.log(q))).sum(-1).mean())
    assert abs(float(kd_loss(s, t, T)) - want) < 1e-5
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def teacher_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from support.tiny_hf import tiny_hf_checkpoint

    root = tmp_path_factory.mktemp("distill")
    teacher = tiny_hf_checkpoint("llama", root / "teacher")
    state = ModelState.load(teacher)
    drop_layers(state, [2])
    w = state.tensors["model.layers.0.mlp.up_proj.weight"]
    w[:, ::2] = 0.0  # a sparsity pattern distillation must keep
    return teacher, state.save(root / "student")


def _loss(teacher: Path, student: Path, x: torch.Tensor) -> float:
    t, s = load_model(teacher, torch.device("cpu")), load_model(student, torch.device("cpu"))
    with torch.no_grad():
        return float(kd_loss(s(input_ids=x).logits, t(input_ids=x).logits, 2.0))


def test_distillation_lowers_the_kd_loss_and_keeps_zeros(teacher_student, tmp_path: Path) -> None:
    teacher, student = teacher_student
    windows = np.random.default_rng(0).integers(3, 1000, (4, 32)).astype(np.int32)
    settings = DistillSettings(steps=4, lr=3e-3, temperature=2.0, batch=4, seqlen=32, checkpoint_every=2)
    before = _loss(teacher, student, torch.as_tensor(windows.astype(np.int64)))
    out, work = tmp_path / "healed", tmp_path / "work"
    log = distill(teacher, student, out, windows, settings, work)
    after = _loss(teacher, out, torch.as_tensor(windows.astype(np.int64)))
    assert after < 0.9 * before, (before, after, log)
    healed = ModelState.load(out)
    up = healed.tensors["model.layers.0.mlp.up_proj.weight"]
    assert np.all(up[:, ::2] == 0) and np.all(up[:, 1::2] != 0)
    assert healed.config["num_hidden_layers"] == 3
    assert (out / "tokenizer.json").is_file()

    # the same settings again: resumes at the last checkpoint (step 4 of 4) and trains no more
    ckpt = torch.load(work / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 4
    said: list[str] = []
    distill(teacher, student, tmp_path / "again", windows, settings, work, said.append)
    assert any("resuming distillation at step 4" in s for s in said)
    again = ModelState.load(tmp_path / "again")
    for name, t in healed.tensors.items():
        assert np.array_equal(again.tensors[name], t), name


def test_compress_holds_no_pruned_model_in_memory_while_distilling(
    teacher_student, tmp_path: Path, monkeypatch
) -> None:
    """`lamina compress --distill` trains from the student saved on disk: the
    pipeline's own f32 copy of the cut model (and of the pruned weights) is
    released first, since training's peak (teacher + student + gradients +
    AdamW moments) is what limits the model size a machine can heal."""
    import gc

    from lamina.convert.distill import kd
    from lamina.convert.encode import Encoder
    from lamina.convert.prune.pipeline import CompressPlan, run
    from lamina.convert.prune.unstructured import SparsityPlan

    teacher, _ = teacher_student
    live: list[int] = []
    pruned: list[int] = []
    real = kd.distill

    def watching(*args, **kwargs):
        gc.collect()
        live.append(sum(isinstance(o, ModelState) for o in gc.get_objects()))
        pruned.append(len(plan.sparsity.pruned) if plan.sparsity else -1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kd, "distill", watching)
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(f"word{i % 97}" for i in range(600)))
    plan = CompressPlan(
        teacher,
        tmp_path / "out",
        calib,
        drop=[1],
        sparsity=SparsityPlan(method="magnitude", sparsity=0.5),
        distill=DistillSettings(steps=1, batch=1, seqlen=16),
        nsamples=2,
        seqlen=16,
    )
    res = run(plan, Encoder(1))
    assert live == [0] and pruned == [0]
    assert res.n_params_after < res.n_params_before and res.gguf.path.is_file()
    assert res.zero_fraction == pytest.approx(0.5, abs=0.01)  # the pruned zeros survived healing


def test_compress_distill_trains_a_dense_checkpoints_incidental_zeros(teacher_student, tmp_path: Path) -> None:
    """A checkpoint dequantized from a K-quant holds exact zeros (about 5% of
    Qwen2.5-Coder-0.5B's linears): without --sparsity they are weights like any
    other, not a pattern to keep, so healing moves them."""
    from lamina.convert.encode import Encoder
    from lamina.convert.prune.pipeline import CompressPlan, run

    teacher, _ = teacher_student
    state = ModelState.load(teacher)
    name = "model.layers.0.mlp.up_proj.weight"
    state.tensors[name][:, :4] = 0.0  # [n_ff, n_embd]: incidental zeros
    dense = state.save(tmp_path / "dense")
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(f"word{i % 97}" for i in range(600)))
    settings = DistillSettings(steps=2, lr=3e-3, batch=2, seqlen=16)
    plan = CompressPlan(dense, tmp_path / "out", calib, drop=[1], distill=settings, nsamples=2, seqlen=16)
    res = run(plan, Encoder(1))
    w = ModelState.load(res.hf_out).tensors[name]
    assert np.count_nonzero(w[:, :4]) > 0.9 * w[:, :4].size
