"""`lamina compress HF_DIR -o OUT`: prune, heal by distillation, quantize, in one command.

    lamina compress HF_DIR --prune-layers 4 --ffn-keep 0.75 -o OUT
    lamina compress HF_DIR --heads-keep 0.5 -o OUT
    lamina compress HF_DIR --sparsity 0.5 --method wanda --calibration FILE --q4_k_m -o OUT
    lamina compress HF_DIR --nm 2:4 --method sparsegpt -o OUT
    lamina compress HF_DIR --prune-layers 6 --distill --distill-steps 200 -o OUT
    lamina compress HF_DIR --prune-layers 6 --distill-seq 64 --teacher teacher.gguf -o OUT
    lamina compress HF_DIR --prune-layers 6 --distill --teacher-kld-base base.kld -o OUT

Prints the plan first, then writes OUT/hf (safetensors + config.json +
tokenizer: the cut model as a Hugging Face checkpoint) and
OUT/<name>-compressed-<TYPE>.gguf. See docs/compression.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from lamina import options
from lamina.cli.errors import checked


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    from lamina.convert.cli.common import default_threads
    from lamina.convert.prune.unstructured import METHODS
    from lamina.convert.recipes import ALIASES, MIXES

    p = argparse.ArgumentParser(prog="lamina compress", description=__doc__.split("\n\n")[0])
    p.add_argument("hf_dir", type=Path, help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (hf/ and the GGUF go there)")
    types = p.add_mutually_exclusive_group()
    types.add_argument("--outtype", choices=[*MIXES, *ALIASES], default="f16", help="GGUF type / mix (default f16)")
    for name in [*MIXES, *ALIASES]:
        types.add_argument(f"--{name}", dest="outtype", action="store_const", const=name, help=argparse.SUPPRESS)
    s = p.add_argument_group("structured pruning (smaller and faster)")
    lay = s.add_mutually_exclusive_group()
    lay.add_argument("--prune-layers", type=int, default=0, metavar="N", help="drop N layers chosen by importance")
    lay.add_argument("--drop-layers", type=_layers, metavar="I,J,...", help="drop these layers (0-based)")
    s.add_argument(
        "--layer-choice",
        choices=("block", "each"),
        default="block",
        help="block: N consecutive layers (Gromov et al.); each: N layers ranked alone (ShortGPT)",
    )
    s.add_argument("--ffn-keep", type=_fraction, default=1.0, metavar="F", help="keep this fraction of FFN neurons")
    s.add_argument(
        "--heads-keep",
        type=_fraction,
        default=1.0,
        metavar="F",
        help="keep this fraction of attention KV groups (a kv head and its query heads) in every layer",
    )
    u = p.add_argument_group("unstructured / N:M sparsity (smaller files only after compression; no faster)")
    u.add_argument("--sparsity", type=_fraction, metavar="S", help="fraction of each linear's weights set to zero")
    u.add_argument("--nm", metavar="N:M", help="N:M pattern instead of --sparsity (2:4, 4:8)")
    u.add_argument("--method", choices=METHODS, help="how weights are chosen (default wanda)")
    u.add_argument("--damp", type=float, default=0.01, help="SparseGPT dampening (fraction of mean diag H)")
    c = p.add_argument_group("calibration")
    c.add_argument("--calibration", type=Path, help="UTF-8 text (default: the shipped asyoulik.txt)")
    c.add_argument("--nsamples", type=int, default=16, help="calibration windows (default 16)")
    c.add_argument("--seqlen", type=int, default=256, help="tokens per window (default 256)")
    d = p.add_argument_group("distillation (needs the train extra: pip install 'lamina[train]')")
    d.add_argument("--distill", action="store_true", help="heal the student by word-level KD from the teacher")
    d.add_argument(
        "--distill-seq",
        type=int,
        default=0,
        metavar="N",
        help="sequence-level KD: train on N continuations of calibration prompts that the teacher writes",
    )
    # None: not given (a flag of a distillation mode that is off is refused, not ignored)
    d.add_argument("--distill-steps", type=int, help="optimizer steps (default 100)")
    d.add_argument("--distill-lr", type=float, help="AdamW learning rate (default 5e-5)")
    d.add_argument("--distill-batch", type=int, help="windows / sequences per step (default 4)")
    d.add_argument("--distill-temperature", type=float, help="word-level KD temperature (default 2)")
    d.add_argument("--distill-seqlen", type=int, help="word-level KD tokens per window (default 256)")
    d.add_argument("--distill-seq-tokens", type=int, help="tokens the teacher writes per prompt (default 128)")
    d.add_argument("--distill-seq-prompt", type=int, help="calibration tokens per prompt (default 32)")
    d.add_argument("--distill-seq-temperature", type=float, help="teacher sampling temperature (default 0: greedy)")
    d.add_argument("--distill-seed", type=int, help="seed of the teacher's sampling (default 0)")
    d.add_argument(
        "--teacher",
        type=Path,
        metavar="FILE.gguf",
        help="a GGUF teacher run by lamina's engine (default: the input checkpoint, in PyTorch)",
    )
    d.add_argument(
        "--teacher-kld-base",
        type=Path,
        metavar="FILE",
        help="word-level KD's teacher log-probs, and its text, from a llama-perplexity --kl-divergence-base file",
    )
    p.add_argument("--threads", type=checked(options.n_threads), default=default_threads(), help="threads")
    p.add_argument("--force", action="store_true", help="overwrite OUT/hf and the GGUF if they exist")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    from lamina.errors import LaminaError

    try:
        plan = build_plan(args)
        return execute(plan, console)
    except LaminaError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]error:[/] interrupted; distillation resumes from its last checkpoint")
        return 130


def build_plan(args: argparse.Namespace):
    from lamina.convert.gptq.calibrate import default_calibration
    from lamina.convert.prune.masks import PruneError, parse_nm
    from lamina.convert.prune.pipeline import CompressPlan, DistillSettings
    from lamina.convert.prune.unstructured import SparsityPlan
    from lamina.convert.recipes import get_mix

    if args.hf_dir.suffix == ".gguf" or args.hf_dir.is_file():
        raise PruneError(
            f"{args.hf_dir}: lamina compress reads a Hugging Face checkpoint directory; "
            "GGUF input is not supported (the cut model is also written as safetensors, which needs the HF names)"
        )
    if args.nm is not None and args.sparsity is not None:
        raise PruneError("--nm and --sparsity are exclusive: N:M fixes the sparsity (2:4 is 50%)")
    if args.method is not None and args.nm is None and args.sparsity is None:
        raise PruneError("--method chooses how --sparsity or --nm prunes; give one of them")
    for name in (
        "nsamples",
        "seqlen",
        "distill_steps",
        "distill_batch",
        "distill_seqlen",
        "distill_seq_tokens",
        "distill_seq_prompt",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PruneError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.distill_seq < 0:
        raise PruneError(f"--distill-seq must be >= 0, got {args.distill_seq}")
    if args.prune_layers < 0:
        raise PruneError(f"--prune-layers must be >= 0, got {args.prune_layers}")
    sparsity = None
    if args.nm is not None or args.sparsity is not None:
        nm = parse_nm(args.nm) if args.nm is not None else None
        sparsity = SparsityPlan(args.method or "wanda", args.sparsity or 0.0, nm, args.damp)
    distill = _distill_settings(args, DistillSettings, PruneError)
    if not 0 < args.ffn_keep <= 1:
        raise PruneError(f"--ffn-keep must be a fraction in (0, 1], got {args.ffn_keep}")
    if not 0 < args.heads_keep <= 1:
        raise PruneError(f"--heads-keep must be a fraction in (0, 1], got {args.heads_keep}")
    plan = CompressPlan(
        hf_dir=args.hf_dir,
        out=args.output,
        calibration=args.calibration or default_calibration(),
        mix=get_mix(args.outtype),
        drop=args.drop_layers,
        prune_layers=args.prune_layers,
        layer_choice=args.layer_choice,
        ffn_keep=args.ffn_keep,
        heads_keep=args.heads_keep,
        sparsity=sparsity,
        distill=distill,
        teacher=args.teacher,
        teacher_kld_base=args.teacher_kld_base,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        threads=args.threads,
        force=args.force,
    )
    if not (plan.drop or plan.prune_layers or plan.ffn_keep < 1 or plan.heads_keep < 1 or sparsity or distill):
        raise PruneError(
            "nothing to do: give --prune-layers, --drop-layers, --ffn-keep, --heads-keep, --sparsity, --nm, "
            "--distill or --distill-seq"
        )
    if args.calibration is not None and args.teacher_kld_base is not None and not plan.needs_calibration():
        raise PruneError(
            f"--calibration {args.calibration}: nothing reads it: word-level KD trains on the text of "
            f"--teacher-kld-base {args.teacher_kld_base} (calibration text is for pruning and --distill-seq)"
        )
    return plan


def _check_kld_base(args: argparse.Namespace, error) -> None:
    """--teacher-kld-base: word-level KD's teacher; the flags it makes meaningless are refused."""
    from lamina.eval.logits_file import LogitsFile

    if args.teacher_kld_base is None:
        return
    if not args.distill:
        raise error("--teacher-kld-base is word-level KD's teacher: give --distill too")
    if args.distill_seqlen is not None:
        raise error(
            f"--distill-seqlen {args.distill_seqlen}: with --teacher-kld-base the windows are the file's chunks "
            "(its n_ctx tokens each)"
        )
    if args.teacher is not None and args.distill_seq == 0:
        raise error(
            "--teacher and --teacher-kld-base: word-level KD's teacher is the file; "
            "--teacher would only write --distill-seq's text, and --distill-seq is off"
        )
    LogitsFile(args.teacher_kld_base)  # LogitsFileError naming the file and field, before any work


_WORD_FLAGS = ("distill_temperature", "distill_seqlen")
_SEQ_FLAGS = ("distill_seq_tokens", "distill_seq_prompt", "distill_seq_temperature", "distill_seed")
_COMMON_FLAGS = ("distill_steps", "distill_lr", "distill_batch", "teacher")


def _distill_settings(args: argparse.Namespace, settings_type, error):
    """DistillSettings from the flags, or None; a flag of a mode that is off is an error."""

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    _check_kld_base(args, error)
    seq = args.distill_seq > 0
    for names, on, needs in (
        (_WORD_FLAGS, args.distill, "--distill"),
        (_SEQ_FLAGS, seq, "--distill-seq N"),
        (_COMMON_FLAGS, args.distill or seq, "--distill or --distill-seq N"),
    ):
        given = [flag(n) for n in names if getattr(args, n) is not None]
        if given and not on:
            raise error(f"{given[0]} applies to distillation: give {needs} too")
    if not (args.distill or seq):
        return None
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise error("--distill needs PyTorch and transformers: pip install 'lamina[train]'") from None
    if args.teacher is not None and (args.teacher.suffix != ".gguf" or not args.teacher.is_file()):
        raise error(f"--teacher {args.teacher}: expected an existing .gguf file")
    if args.distill_seq_temperature is not None and args.distill_seq_temperature < 0:
        raise error(f"--distill-seq-temperature must be >= 0, got {args.distill_seq_temperature}")
    d = settings_type(word=bool(args.distill), seq=args.distill_seq)
    for name in (*_COMMON_FLAGS[:-1], *_WORD_FLAGS, *_SEQ_FLAGS):
        value = getattr(args, name)
        if value is not None:
            setattr(d, name.removeprefix("distill_"), value)
    return d


def execute(plan, console: Console) -> int:
    from lamina.convert.encode import Encoder
    from lamina.convert.hf.checkpoint import HFCheckpoint
    from lamina.convert.prune.pipeline import run

    ckpt = HFCheckpoint(plan.hf_dir)
    cfg = ckpt.config
    if plan.heads_keep < 1:
        from lamina.convert.prune.heads import check_supported

        check_supported(dict(ckpt.raw_config))
    out = Console()
    out.print("[bold]plan[/]")
    for line in plan.describe(int(cfg["num_hidden_layers"]), int(cfg.get("intermediate_size") or 0), dict(cfg)):
        out.print("  " + escape(line), highlight=False, soft_wrap=True)
    encoder = Encoder(plan.threads)
    try:
        res = run(plan, encoder, say=lambda s: console.print(escape(s), highlight=False))
    finally:
        encoder.close()
    out.print(
        f"params {res.n_params_before / 1e6:.1f}M -> {res.n_params_after / 1e6:.1f}M"
        f"{', layers dropped: ' + ', '.join(map(str, res.dropped)) if res.dropped else ''}"
        f", zeros in the linears {res.zero_fraction:.1%}"
    )
    for line in res.distill_log:
        out.print(line)
    out.print(f"wrote {res.hf_out} and {res.gguf.path} ({res.gguf.nbytes / 2**20:.1f} MiB of tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
