"""`bin/convert HF_DIR --gptq [...]`: GPTQ-quantize a checkpoint while converting it.

    job = plan_gptq(hf_dir, GPTQOptions(...), encoder, out, force, threads)
    run_job(job)

1. The output is planned first (path, tensor table), so a bad output path
   or option fails before any work.
2. The checkpoint is converted to an f32 GGUF in a hidden temporary folder
   next to the output (removed afterwards, also on errors and interrupts).
3. convert/gptq/calibrate.py runs the calibration text through lamina's
   native engine layer by layer and quantizes every linear true-sequentially.
4. The planned file is written atomically with the quantized linears.

Two kinds of output:

--gptq (alone): GPTQ INT4 tensors (qweight/scales/qzeros[/g_idx], zeros in
    v2 form, keys lamina.gptq.*; runtime/gptq/format.py) for the seven
    linears of every layer, with --bits/--group-size/--sym/--act-order/--damp
    as in AutoGPTQ. Every other tensor gets the type the q4_k_m recipe gives
    it (token_embd / output Q6_K or Q4_K, norms F32), so bits per weight
    compare fairly with a Q4_K_M file. llama.cpp parses such a file but cannot
    run it (it has no GPTQ linear); lamina can.

--gptq --q4_0 / --q4_k (q4_k_m, q4_k_s): an ordinary llama.cpp file of that
    mix. Every linear the recipe gives Q4_0, Q5_0 or Q4_K (Q5_0: the mix's
    fallback for rows that are not a multiple of 256, and some attn_v layers)
    is GPTQ-rounded into that ggml grid (convert/gptq/grids.py); every other
    tensor (token_embd, output, the attn_v/ffn_down layers the recipe gives
    Q6_K or Q8_0) is quantized exactly as plain conversion does (round to
    nearest). The calibration forward runs each
    linear as it will be stored, so later layers see the real quantized
    model. The calibration settings are recorded under quantize.gptq.* (as
    llama-quantize records an imatrix under quantize.imatrix.*), which
    llama.cpp ignores. Group size and symmetry are the type's own (32-weight
    blocks), so --group-size/--sym/--asym are refused there.

The token embedding stays in float during calibration (as in AutoGPTQ); it is
not a matmul over activations, so GPTQ does not apply to it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.encode import Encoder
from lamina.convert.errors import ConvertError
from lamina.convert.gptq.algorithm import GPTQConfig, check_bits, gptq_quantize, quantize_rtn
from lamina.convert.gptq.calibrate import (
    LayerStats,
    LinearOutcome,
    Progress,
    calibrate,
    calibration_windows,
    check_window_settings,
    default_calibration,
    read_calibration_text,
    read_calibration_tokens,
)
from lamina.convert.gptq.grids import DEFAULT_BLOCK_GRID, GGML_GRID_TYPES, GridQuant, gptq_ggml
from lamina.convert.gptq.tensors import FILE_LABEL, Producer, gptq_job_tensors, gptq_metadata
from lamina.convert.hf.convert import FILE_TYPE_KEY, QUANT_VERSION_KEY, plan_hf
from lamina.convert.pipeline import Job, run_job
from lamina.convert.recipes import MIXES, Mix, get_mix
from lamina.convert.writer import OutTensor, move_to_end, set_kv
from lamina.gptq.format import is_gptq_weight_name
from lamina.gptq.pack import GPTQPacked, pack_result
from lamina.quants import dequantize

# --gptq with a type: the mixes whose 4-bit linears GPTQ rounds into ggml's grid
GRID_MIXES = ("q4_0", "q4_k_m", "q4_k_s")  # the mixes whose linears GPTQ can round into their grids
# --gptq alone: the recipe of the tensors that are not GPTQ linears
PURE_BASE_MIX = "q4_k_m"
GPTQ_KV = "quantize.gptq."  # provenance keys of GPTQ-rounded ggml files


class GPTQOptionsError(ConvertError, ValueError):
    """--gptq options that do not fit together."""


@dataclass(frozen=True)
class GPTQOptions:
    bits: int = 4
    group_size: int = 128  # pure GPTQ only (-1: one group per row)
    sym: bool = True  # pure GPTQ only
    act_order: bool = False
    damp: float = 0.01
    calibration: Path | None = None  # None: default_calibration()
    nsamples: int = 128
    seqlen: int = 512
    mix: str | None = None  # None: pure GPTQ tensors; else a GRID_MIXES key (aliases allowed)
    pure: bool = False  # --pure with a mix: every quantizable tensor gets the mix's type
    block_grid: str = DEFAULT_BLOCK_GRID

    def grid_mix(self) -> Mix | None:
        if self.mix is None:
            return None
        mix = get_mix(self.mix)
        if mix.name not in GRID_MIXES:
            raise GPTQOptionsError(
                f"--gptq rounds into q4_0, q4_k (q4_k_m) or q4_k_s, not {self.mix}; "
                f"leave the type out for GPTQ INT4 tensors"
            )
        return mix

    def config(self) -> GPTQConfig:
        """The GPTQConfig of pure GPTQ (validates bits, group size, damp)."""
        return GPTQConfig(
            bits=check_bits(self.bits),
            group_size=self.group_size,
            sym=self.sym,
            act_order=self.act_order,
            percdamp=self.damp,
        )

    def validate(self) -> None:
        check_bits(self.bits)
        check_window_settings(self.nsamples, self.seqlen)
        self.grid_mix()
        if self.mix is None and self.pure:
            raise GPTQOptionsError(
                "--pure needs a type (--gptq --q4_0 --pure); GPTQ INT4 files already quantize every linear alike"
            )
        self.config()


# ----------------------------------------------------------------------------
# what each linear becomes


class _GridPlan:
    """GPTQ into every linear the recipe gives a type GPTQ can round into
    (Q4_0, Q5_0, Q4_K); the recipe's round-to-nearest everywhere else."""

    def __init__(self, types: dict[str, Q], opts: GPTQOptions, encoder: Encoder) -> None:
        self.types, self.opts, self.encoder = types, opts, encoder
        self.data: dict[str, np.ndarray] = {}

    def needs_hessian(self, name: str) -> bool:
        return self.types[name] in GGML_GRID_TYPES

    def quantize(self, name: str, W: np.ndarray, H: np.ndarray | None) -> LinearOutcome:
        qt = self.types[name]
        plain = self.encoder.encode(name, W, qt)
        baseline = W if qt == Q.F32 else dequantize(plain, qt)
        if H is None:
            return LinearOutcome(baseline, None, f"rtn {qt.name}")
        gq: GridQuant = gptq_ggml(
            name, W, H, qt, act_order=self.opts.act_order, percdamp=self.opts.damp, block_grid=self.opts.block_grid
        )
        self.data[name] = gq.data
        return LinearOutcome(gq.dequantize(), baseline, f"gptq {qt.name}")


class _PurePlan:
    """GPTQ INT4 for every linear."""

    def __init__(self, cfg: GPTQConfig) -> None:
        self.cfg = cfg
        self.packed: dict[str, GPTQPacked] = {}

    def needs_hessian(self, name: str) -> bool:
        return True

    def quantize(self, name: str, W: np.ndarray, H: np.ndarray | None) -> LinearOutcome:
        assert H is not None, "needs_hessian() holds for every linear, so calibrate passes H"
        res = gptq_quantize(W, H, self.cfg)
        self.packed[name] = pack_result(res, "v2")
        return LinearOutcome(res.dequantize(), quantize_rtn(W, self.cfg).dequantize(), "gptq int4")


# ----------------------------------------------------------------------------
# the job


def plan_gptq(
    hf_dir: Path,
    opts: GPTQOptions,
    encoder: Encoder,
    out: Path | None = None,
    force: bool = False,
    n_threads: int | None = None,
    progress: Progress | None = None,
    stats: list[LayerStats] | None = None,
) -> Job:
    """Plan, calibrate and quantize; returns the Job that writes the file.
    `stats` (if given) receives the per-layer calibration statistics."""
    hf_dir = Path(hf_dir)
    opts.validate()
    calib = Path(opts.calibration) if opts.calibration is not None else default_calibration()
    read_calibration_text(calib)  # readable, UTF-8, not empty: before any work
    mix = opts.grid_mix()

    # 1. the output, planned (checks the path and the checkpoint)
    if mix is not None:
        job = plan_hf(hf_dir, mix, encoder, out, force, opts.pure)
        types = {t.name: t.type for t, _ in job.tensors}
        plan: _GridPlan | _PurePlan = _GridPlan(types, opts, encoder)
    else:
        job = _plan_pure_base(hf_dir, encoder, out, force)
        plan = _PurePlan(opts.config())
        _check_pure_shapes(job)

    # 2. + 3. the calibration windows (from a metadata-only GGUF: a bad text
    # fails before the model is converted), the f32 GGUF, calibration
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{job.out.name}.gptq-", dir=job.out.parent))
    try:
        f32_job = plan_hf(hf_dir, MIXES["f32"], encoder, tmp / "model-f32.gguf")
        vocab_only = run_job(Job(tmp / "vocab.gguf", f32_job.arch, f32_job.metadata, [])).path
        windows, n_tokens = _windows(vocab_only, calib, opts)
        f32 = run_job(f32_job).path
        layer_stats = calibrate(f32, windows, plan, n_threads, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if stats is not None:
        stats.extend(layer_stats)
    seconds = time.perf_counter() - t0
    source = f"{calib.name}: {n_tokens} tokens, {opts.nsamples} windows of {opts.seqlen}"

    # 4. the file
    if isinstance(plan, _GridPlan):
        return _grid_job(job, plan, opts, source, seconds)
    return _pure_job(job, plan, opts, source)


def _windows(gguf_path: Path, calib: Path, opts: GPTQOptions) -> tuple[np.ndarray, int]:
    """The calibration windows, tokenized with the model's own tokenizer."""
    from lamina.gguf.reader import GGUFFile
    from lamina.tokenizer import Tokenizer

    with GGUFFile(gguf_path) as g:
        tokenizer = Tokenizer.from_metadata(g.metadata)
    tokens = read_calibration_tokens(calib, tokenizer)
    bos = tokenizer.bos_id if tokenizer.add_bos else None
    return calibration_windows(tokens, opts.nsamples, opts.seqlen, bos, calib), len(tokens)


def _plan_pure_base(hf_dir: Path, encoder: Encoder, out: Path | None, force: bool) -> Job:
    """The q4_k_m plan, named like a GPTQ import when no file name was given."""
    return plan_hf(hf_dir, get_mix(PURE_BASE_MIX), encoder, out, force, label=FILE_LABEL)


def _check_pure_shapes(job: Job) -> None:
    for t, _ in job.tensors:
        if is_gptq_weight_name(t.name):
            n_out, n_in = t.shape
            if n_in % 8 or n_out % 8:
                raise GPTQOptionsError(
                    f"{t.name}: GPTQ INT4 packs 8 values per int32, so n_in and n_out must be "
                    f"multiples of 8; this weight is [out={n_out}, in={n_in}] "
                    f"(use --gptq --q4_k or --q4_0 instead)"
                )


def _constant(data: np.ndarray) -> Producer:
    return lambda: data


def _grid_job(job: Job, plan: _GridPlan, opts: GPTQOptions, source: str, seconds: float) -> Job:
    tensors: list[tuple[OutTensor, Producer]] = []
    for t, produce in job.tensors:
        if t.name in plan.data:
            tensors.append((t, _constant(plan.data[t.name])))
        else:
            tensors.append((t, produce))
    base_metadata = job.metadata

    def metadata(w: gguf.GGUFWriter) -> None:
        base_metadata(w)
        s = gguf.GGUFValueType
        set_kv(w, GPTQ_KV + "dataset", source, s.STRING)
        set_kv(w, GPTQ_KV + "nsamples", opts.nsamples, s.UINT32)
        set_kv(w, GPTQ_KV + "seqlen", opts.seqlen, s.UINT32)
        set_kv(w, GPTQ_KV + "damp", float(opts.damp), s.FLOAT32)
        set_kv(w, GPTQ_KV + "act_order", bool(opts.act_order), s.BOOL)
        set_kv(w, GPTQ_KV + "tensors_count", len(plan.data), s.UINT32)
        move_to_end(w, QUANT_VERSION_KEY, FILE_TYPE_KEY)

    return Job(job.out, job.arch, metadata, tensors)


def _pure_job(job: Job, plan: _PurePlan, opts: GPTQOptions, source: str) -> Job:
    cfg = plan.cfg
    tensors = []
    for t, produce in job.tensors:
        if t.name in plan.packed:
            tensors += gptq_job_tensors(t.name, plan.packed[t.name], cfg.group_size)
        else:
            tensors.append((t, produce))
    missing = [n for n in (t.name for t, _ in job.tensors) if is_gptq_weight_name(n) and n not in plan.packed]
    if missing:
        raise AssertionError(f"calibration left linears unquantized: {missing[:3]}")
    base_metadata = job.metadata

    def metadata(w: gguf.GGUFWriter) -> None:
        base_metadata(w)
        gptq_metadata(
            w,
            group_size=cfg.group_size,
            sym=cfg.sym,
            desc_act=cfg.act_order,
            source="lamina",
            bits=cfg.bits,
            damp=cfg.percdamp,
            calibration=source,
        )

    return Job(job.out, job.arch, metadata, tensors)
