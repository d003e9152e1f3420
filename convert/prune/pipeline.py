"""`lamina compress`: prune -> (distill) -> write HF safetensors + GGUF, in one plan.

    plan = CompressPlan(hf_dir, out, prune_layers=4, ffn_keep=0.75, heads_keep=0.5, sparsity=SparsityPlan(...), ...)
    for line in plan.describe(): print(line)
    result = run(plan, encoder, progress)

Order: calibration statistics of the original model (when layers are chosen
by importance or FFN neurons or attention heads are pruned) -> prune FFN
neurons and KV groups -> drop layers -> unstructured / N:M sparsity (sequential, on the cut model) ->
distillation from the original model or a GGUF teacher (optional: word-level
KD and/or training on text the teacher generates; the sparsity pattern is
kept) -> OUT/hf (safetensors + config.json + tokenizer) and OUT/<name>-<TYPE>.gguf.
Temporary f32 GGUFs live in a hidden folder in OUT, removed at the end.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lamina.convert.encode import Encoder
from lamina.convert.gptq.calibrate import (
    LINEARS,
    calibrate,
    calibration_windows,
    read_calibration_tokens,
    weight_name,
)
from lamina.convert.hf.checkpoint import HFCheckpoint
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import Job, Summary, run_job
from lamina.convert.prune import heads, structured
from lamina.convert.prune.hf_state import ModelState, gguf_to_hf
from lamina.convert.prune.importance import Importance, measure
from lamina.convert.prune.masks import PruneError
from lamina.convert.prune.unstructured import SparsityPlan
from lamina.convert.recipes import MIXES, Mix


@dataclass
class DistillSettings:
    steps: int = 100
    lr: float = 5e-5
    temperature: float = 2.0
    batch: int = 4
    seqlen: int = 256
    checkpoint_every: int = 25
    word: bool = True  # word-level KD on calibration windows
    seq: int = 0  # sequence-level KD: this many teacher continuations of calibration prompts
    seq_tokens: int = 128  # tokens the teacher writes after each prompt
    seq_prompt: int = 32  # prompt tokens
    seq_temperature: float = 0.0  # 0: greedy; else seeded sampling
    seed: int = 0


@dataclass
class CompressPlan:
    hf_dir: Path
    out: Path
    calibration: Path
    mix: Mix = field(default_factory=lambda: MIXES["f16"])
    drop: list[int] | None = None  # layers by index
    prune_layers: int = 0  # or this many, by importance
    layer_choice: str = "block"
    ffn_keep: float = 1.0
    heads_keep: float = 1.0  # fraction of KV groups (a kv head + its query heads) kept per layer
    sparsity: SparsityPlan | None = None
    distill: DistillSettings | None = None
    teacher: Path | None = None  # a GGUF teacher run by lamina's engine (None: the input checkpoint)
    teacher_kld_base: Path | None = None  # word-level KD's teacher log-probs (and text) from this llama-perplexity file
    nsamples: int = 16
    seqlen: int = 256
    threads: int | None = None
    force: bool = False  # overwrite existing outputs

    def needs_importance(self) -> bool:
        return self.prune_layers > 0 or self.ffn_keep < 1.0 or self.heads_keep < 1.0

    def needs_calibration(self) -> bool:
        """Whether the calibration text is read (magnitude pruning alone needs none)."""
        calibrated_sparsity = self.sparsity is not None and self.sparsity.method != "magnitude"
        d = self.distill
        # word-level KD from a --kl-divergence-base file trains on the file's tokens
        distill_text = d is not None and (d.seq > 0 or (d.word and self.teacher_kld_base is None))
        return self.needs_importance() or calibrated_sparsity or distill_text

    def describe(self, n_layer: int, n_ff: int, config: dict | None = None) -> list[str]:
        lines = [f"model        {self.hf_dir} ({n_layer} layers, FFN {n_ff})"]
        if self.drop:
            lines.append(f"drop layers  {', '.join(map(str, self.drop))} (by index)")
        elif self.prune_layers:
            how = "consecutive block" if self.layer_choice == "block" else "layers, each"
            lines.append(f"drop layers  {self.prune_layers} ({how} with the smallest input/output angular distance)")
        if self.ffn_keep < 1.0:
            k = structured.ffn_keep_count(n_ff, self.ffn_keep)
            lines.append(f"FFN neurons  keep {k} of {n_ff} per layer (activation norm x down-projection norm)")
        if self.heads_keep < 1.0 and config is not None:
            H, Hkv, D = heads.head_geometry(config)
            k = heads.groups_keep_count(Hkv, self.heads_keep)
            lines.append(
                f"attention    keep {k} of {Hkv} KV groups per layer ({k * (H // Hkv)} of {H} query heads, "
                f"head_dim {D}; norm of each group's output through o_proj)"
            )
            note = heads.llama_cpp_note(config)
            if note is not None:
                lines.append(f"             {note}")
        if self.sparsity is not None:
            lines.append(f"sparsity     {self.sparsity.describe()} on every linear (embeddings and head dense)")
        if self.needs_calibration():
            lines.append(f"calibration  {self.calibration} ({self.nsamples} windows of {self.seqlen} tokens)")
        if self.distill is not None:
            d = self.distill
            teacher = f"{self.teacher} (lamina's engine)" if self.teacher else "the original model"
            parts = []
            if d.word and self.teacher_kld_base is not None:
                from lamina.eval.logits_file import LogitsFile

                h = LogitsFile(self.teacher_kld_base).header
                teacher = f"{self.teacher_kld_base}" if not d.seq else f"{self.teacher_kld_base} and {teacher}"
                parts.append(
                    f"word-level KD (T={d.temperature}, teacher log-probs and text from {self.teacher_kld_base}: "
                    f"{h.n_chunk} chunks of {h.n_ctx} tokens, positions {h.n_ctx // 2}..{h.n_ctx - 2} of each)"
                )
            elif d.word:
                how = "lamina's engine" if self.teacher else "PyTorch"
                parts.append(f"word-level KD (T={d.temperature}, {d.seqlen}-token windows, teacher logits from {how})")
            if d.seq:
                sampling = "greedy" if d.seq_temperature == 0 else f"sampled at T={d.seq_temperature}, seed {d.seed}"
                parts.append(
                    f"sequence-level KD on {d.seq} continuations of {d.seq_tokens} tokens after "
                    f"{d.seq_prompt}-token calibration prompts ({sampling}, generated by lamina's engine)"
                )
            lines.append(
                f"distill      {d.steps} steps from {teacher}: {' + '.join(parts)}; "
                f"lr={d.lr}, batch {d.batch}; checkpoints in {self.out}/distill"
            )
        lines.append(f"output       {self.out}/hf (safetensors) and {self.out}/{self.gguf_name()}")
        return lines

    def gguf_name(self) -> str:
        return f"{self.hf_dir.name}-compressed-{self.mix.ftype.name.partition('_')[2]}.gguf"


@dataclass
class CompressResult:
    hf_out: Path
    gguf: Summary
    dropped: list[int]
    n_params_before: int
    n_params_after: int
    zero_fraction: float
    distill_log: list[str] = field(default_factory=list)


Say = Callable[[str], None]


def run(plan: CompressPlan, encoder: Encoder, say: Say = lambda s: None, progress=None) -> CompressResult:
    for existing in (plan.out / "hf", plan.out / plan.gguf_name()):
        if existing.exists() and not plan.force:
            raise PruneError(f"{existing} exists; pass --force to overwrite it")
    state = ModelState.load(plan.hf_dir)
    before = state.n_params()
    plan.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".compress-", dir=plan.out))
    try:
        windows = _windows(plan, encoder, work)
        kld_base = _kld_base_teacher(plan, encoder, work)  # checked before any pruning work
        dropped: list[int] = []
        imp: Importance | None = None
        if plan.needs_importance():
            say("measuring layer and neuron importance on the calibration text")
            f32 = _f32_gguf(plan.hf_dir, encoder, work / "original-f32.gguf")
            imp = measure(f32, windows, plan.threads, heads=plan.heads_keep < 1.0)
            f32.unlink()
        if plan.drop:
            dropped = structured.check_layer_indices(plan.drop, state.n_layer)
        elif plan.prune_layers:
            assert imp is not None
            dropped = structured.layers_to_drop(imp.dist, plan.prune_layers, plan.layer_choice)
        if plan.ffn_keep < 1.0:
            assert imp is not None
            n_ff = int(state.config["intermediate_size"])
            k = structured.ffn_keep_count(n_ff, plan.ffn_keep)
            keep = []
            for il in range(state.n_layer):
                _, _, down = structured.ffn_names(state, il)
                scores = structured.neuron_scores(imp.act_sumsq[il], state.tensors[down])
                keep.append(structured.choose_neurons(scores, k))
            say(f"FFN: {k} of {n_ff} neurons kept in every layer")
            structured.prune_ffn(state, keep)
        if plan.heads_keep < 1.0:
            assert imp is not None and imp.head_gram is not None
            _prune_heads(state, imp.head_gram, plan.heads_keep, say)
        # layers are dropped after the neuron and head choices, which are indexed by the original layers
        if dropped:
            say(f"dropping layers {', '.join(map(str, dropped))}")
            structured.drop_layers(state, dropped)
        if plan.sparsity is not None:
            say(f"pruning: {plan.sparsity.describe()}")
            back = gguf_to_hf(state)
            if plan.sparsity.method == "magnitude":  # no inputs needed: straight on the weights
                for il in range(state.n_layer):
                    for linear in LINEARS:
                        name = weight_name(il, linear)
                        if name in back:
                            plan.sparsity.quantize(name, state.tensors[back[name][0]], None)
                back = {n: (back[n][0], _same) for n in plan.sparsity.pruned}  # HF rows already
            else:
                cut = state.save(work / "cut-hf")
                f32 = _f32_gguf(cut, encoder, work / "cut-f32.gguf")
                calibrate(f32, windows, plan.sparsity, plan.threads, progress)
                f32.unlink()
            for name, W in plan.sparsity.pruned.items():
                hf_name, unpermute = back[name]
                state.tensors[hf_name] = unpermute(W)
        hf_out = plan.out / "hf"
        log: list[str] = []
        if plan.distill is not None:
            from lamina.convert.distill.kd import distill

            student = state.save(work / "student-hf")
            # the student is on disk now; its f32 tensors (and the pruned copies) are not held through
            # training, whose peak is the teacher + student + gradients + AdamW's two moments
            del state
            if plan.sparsity is not None:
                plan.sparsity.pruned.clear()
            text = _teacher_text(plan, encoder, work, say) if plan.distill.seq else None
            if kld_base is not None:
                teacher, kd_windows = kld_base, kld_base.windows
            else:
                teacher = plan.teacher or plan.hf_dir
                kd_windows = windows_for_distill(plan, encoder, work) if plan.distill.word else None
            log = distill(
                teacher,
                student,
                hf_out,
                kd_windows,
                plan.distill,
                plan.out / "distill",
                say,
                text=text,
                n_threads=plan.threads,
                # only zeros this run made are a pattern to keep: a dequantized checkpoint has incidental ones
                keep_zeros=plan.sparsity is not None,
            )
            state = ModelState.load(hf_out)
        else:
            state.save(hf_out)
        linears = [t for n, t in state.tensors.items() if n.endswith("_proj.weight")]
        zeros = sum(int((t == 0).sum()) for t in linears) / max(1, sum(t.size for t in linears))
        job = plan_hf(hf_out, plan.mix, encoder, plan.out / plan.gguf_name(), force=True)
        summary = run_job(job)
        return CompressResult(hf_out, summary, dropped, before, state.n_params(), zeros, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prune_heads(state: ModelState, gram: np.ndarray, keep_fraction: float, say: Say) -> None:
    heads.check_supported(state.config)
    H, Hkv, D = heads.head_geometry(state.config)
    k = heads.groups_keep_count(Hkv, keep_fraction)
    keep = []
    for il in range(state.n_layer):
        w_o = state.tensors[heads.attention_names(state, il)[3]]  # [n_embd, H*D]
        keep.append(heads.choose_groups(heads.group_scores(gram[il], w_o, H, Hkv, D), k))
    chosen = "; ".join(f"{il}: {','.join(map(str, g))}" for il, g in enumerate(keep))
    say(f"attention: {k} of {Hkv} KV groups kept in every layer (layer: groups) {chosen}")
    heads.prune_heads(state, keep)


def _f32_gguf(hf_dir: Path, encoder: Encoder, path: Path) -> Path:
    return run_job(plan_hf(hf_dir, MIXES["f32"], encoder, path, force=True)).path


def _tokenizer(plan: CompressPlan, encoder: Encoder, work: Path):
    from lamina.gguf.reader import GGUFFile
    from lamina.tokenizer import Tokenizer

    job = plan_hf(plan.hf_dir, MIXES["f32"], encoder, work / "vocab.gguf", force=True)
    path = run_job(Job(job.out, job.arch, job.metadata, [])).path
    with GGUFFile(path) as g:
        return Tokenizer.from_metadata(g.metadata)


def _kld_base_teacher(plan: CompressPlan, encoder: Encoder, work: Path):
    """Word-level KD's teacher from --teacher-kld-base, checked against the student's vocabulary."""
    if plan.distill is None or not plan.distill.word or plan.teacher_kld_base is None:
        return None
    from lamina.convert.distill.kld_base import KLDBaseTeacher

    n_vocab = int(HFCheckpoint(plan.hf_dir).config["vocab_size"])
    return KLDBaseTeacher(plan.teacher_kld_base, _tokenizer(plan, encoder, work), n_vocab)


def _windows(plan: CompressPlan, encoder: Encoder, work: Path) -> np.ndarray:
    if not plan.needs_calibration():
        return np.zeros((0, 0), dtype=np.int32)
    tok = _tokenizer(plan, encoder, work)
    tokens = read_calibration_tokens(plan.calibration, tok)
    return calibration_windows(
        tokens, plan.nsamples, plan.seqlen, tok.bos_id if tok.add_bos else None, plan.calibration
    )


def _teacher_text(plan: CompressPlan, encoder: Encoder, work: Path, say: Say):
    """The teacher's continuations of calibration prompts (generated once, kept in OUT/distill)."""
    from lamina.convert.distill.teacher_text import cached, teacher_text

    d = plan.distill
    assert d is not None
    tok = _tokenizer(plan, encoder, work)
    tokens = read_calibration_tokens(plan.calibration, tok)
    prompts = calibration_windows(tokens, d.seq, d.seq_prompt, tok.bos_id if tok.add_bos else None, plan.calibration)
    teacher = plan.teacher
    stamp = f"{plan.hf_dir.resolve()}" if teacher is None else f"{teacher.resolve()}:{teacher.stat().st_size}"
    key = {
        "prompts": hashlib.sha256(prompts.tobytes()).hexdigest()[:16],
        "tokens": d.seq_tokens,
        "temperature": d.seq_temperature,
        "seed": d.seed,
        "teacher": stamp,
    }
    n_vocab = int(HFCheckpoint(plan.hf_dir).config["vocab_size"]) if teacher is not None else None

    def make():
        path = teacher
        if path is None:  # the original, in f16 for the engine
            path = run_job(plan_hf(plan.hf_dir, MIXES["f16"], encoder, work / "teacher-f16.gguf", force=True)).path
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("teacher text"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("teacher", total=d.seq)
            return teacher_text(
                path,
                prompts,
                d.seq_tokens,
                d.seq_temperature,
                d.seed,
                plan.threads,
                progress=lambda done, total: bar.update(task, completed=done),
                n_vocab=n_vocab,
            )

    text, reused = cached(plan.out / "distill" / "teacher-text.npz", key, make)
    if reused:
        say(f"reusing the teacher's text in {plan.out / 'distill' / 'teacher-text.npz'}")
    return text


def windows_for_distill(plan: CompressPlan, encoder: Encoder, work: Path) -> np.ndarray:
    """Distillation's training windows: as many disjoint windows as the text holds."""
    assert plan.distill is not None
    tok = _tokenizer(plan, encoder, work)
    tokens = read_calibration_tokens(plan.calibration, tok)
    T = plan.distill.seqlen
    n = len(tokens) // T
    if n < 1:
        raise PruneError(f"{plan.calibration}: {len(tokens)} tokens, fewer than one distillation window of {T}")
    return calibration_windows(tokens, n, T, tok.bos_id if tok.add_bos else None, plan.calibration)


def _same(w: np.ndarray) -> np.ndarray:
    return w
