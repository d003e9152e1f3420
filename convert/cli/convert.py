"""`lamina convert HF_DIR`: a Hugging Face checkpoint to GGUF in one step.

    lamina convert HF_DIR [-o OUT.gguf] [--outtype TYPE | --q4_k | --q8_0 | ...]
                   [--imatrix FILE] [--pure] [--threads N] [--force] [--quiet]
    lamina convert HF_DIR --gptq [--q4_0 | --q4_k] [--bits 4] [--group-size 128]
                   [--act-order] [--sym | --asym] [--damp 0.01]
                   [--calibration FILE] [--nsamples 128] [--seqlen 512]

The output is byte-for-byte what llama.cpp's converter (to f32) followed by
llama-quantize TYPE (--imatrix FILE) writes. Without -o the file goes into HF_DIR, named as
llama.cpp names it (model name, size, type).

--gptq quantizes with GPTQ, calibrated layer by layer on lamina's own engine
(convert/gptq/convert.py): alone it writes GPTQ INT4 tensors; with --q4_0 or
--q4_k it GPTQ-rounds the mix's 4-bit linears into those ggml blocks, a file
llama.cpp runs. The calibration text defaults to As You Like It, shipped with the
package (lamina/convert/gptq/data/asyoulik.txt; evaluation uses alice29.txt);
pass --calibration for your own.

A GPTQ checkpoint (AutoGPTQ / GPTQModel: quantization_config in config.json
or quantize_config.json) is imported with its INT4 weights kept exactly
(convert/gptq/importer.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lamina import options
from lamina.cli.errors import checked
from lamina.convert.cli.common import default_threads, execute
from lamina.convert.gptq.calibrate import LayerStats
from lamina.convert.gptq.convert import GPTQOptions, GPTQOptionsError, plan_gptq
from lamina.convert.gptq.importer import gptq_checkpoint_config, plan_gptq_import
from lamina.convert.hf.convert import plan_hf
from lamina.convert.imatrix.format import read_imatrix
from lamina.convert.recipes import ALIASES, MIXES, get_mix

DEFAULT_TYPE = "f16"  # llama.cpp's converter default
# the --gptq options (dest, flag), all None unless given
GPTQ_FLAGS = (
    ("bits", "--bits"),
    ("group_size", "--group-size"),
    ("act_order", "--act-order"),
    ("sym", "--sym/--asym"),
    ("damp", "--damp"),
    ("calibration", "--calibration"),
    ("nsamples", "--nsamples"),
    ("seqlen", "--seqlen"),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina convert", description=__doc__.split("\n\n")[0])
    p.add_argument("hf_dir", type=Path, help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument(
        "-o", "--output", type=Path, help="output GGUF path or directory (default: HF_DIR; file named like llama.cpp's)"
    )
    types = p.add_mutually_exclusive_group()
    types.add_argument("--outtype", choices=[*MIXES, *ALIASES], help=f"output type / mix (default {DEFAULT_TYPE})")
    for name in [*MIXES, *ALIASES]:
        types.add_argument(f"--{name}", dest="outtype", action="store_const", const=name, help=argparse.SUPPRESS)
    p.add_argument(
        "--imatrix", metavar="FILE", help="importance matrix (GGUF or legacy .dat), as llama-quantize --imatrix"
    )
    p.add_argument("--pure", action="store_true", help="no mix: every quantizable tensor gets the type itself")
    threads = checked(options.n_threads)
    p.add_argument("--threads", type=threads, default=default_threads(), help="quantization threads (default: all)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    g = p.add_argument_group("GPTQ (calibrated on lamina's engine, layer by layer)")
    g.add_argument(
        "--gptq",
        action="store_true",
        help="GPTQ INT4 tensors; with --q4_0 / --q4_k: GPTQ rounding into those ggml blocks",
    )
    g.add_argument("--bits", type=int, help="bits per weight (4, the only width supported)")
    g.add_argument(
        "--group-size",
        type=int,
        help="inputs per scale group, -1 for one per row (default 128; --q4_0/--q4_k use their 32-weight blocks)",
    )
    g.add_argument(
        "--act-order",
        action="store_const",
        const=True,
        help="quantize columns in order of decreasing Hessian diagonal (desc_act)",
    )
    sym = g.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_const", const=True, help="symmetric grids (default)")
    sym.add_argument("--asym", dest="sym", action="store_const", const=False, help="asymmetric grids (zero points)")
    g.add_argument("--damp", type=float, help="dampening, a fraction of the mean Hessian diagonal (default 0.01)")
    g.add_argument("--calibration", type=Path, help="calibration text, UTF-8 (default: the shipped asyoulik.txt)")
    g.add_argument("--nsamples", type=int, help="calibration windows (default 128)")
    g.add_argument("--seqlen", type=int, help="tokens per window (default 512)")
    return p


def gptq_options(args: argparse.Namespace) -> GPTQOptions:
    """The GPTQOptions the flags ask for; GPTQOptionsError for flags that do not fit."""
    given = [flag for dest, flag in GPTQ_FLAGS if getattr(args, dest) is not None]
    if not args.gptq:
        if given:
            raise GPTQOptionsError(f"{', '.join(given)} only apply with --gptq")
        raise AssertionError("gptq_options without --gptq")
    if args.outtype is not None:
        fixed = [flag for dest, flag in GPTQ_FLAGS if dest in ("group_size", "sym") and getattr(args, dest) is not None]
        if fixed:
            raise GPTQOptionsError(
                f"{', '.join(fixed)}: --gptq --{args.outtype} rounds into {args.outtype}'s own "
                f"32-weight blocks, whose grouping and symmetry are fixed; leave them out"
            )
    defaults = GPTQOptions()
    value = lambda name: getattr(args, name) if getattr(args, name) is not None else getattr(defaults, name)
    return GPTQOptions(
        bits=value("bits"),
        group_size=value("group_size"),
        sym=value("sym"),
        act_order=value("act_order"),
        damp=value("damp"),
        calibration=args.calibration,
        nsamples=value("nsamples"),
        seqlen=value("seqlen"),
        mix=args.outtype,
        pure=args.pure,
    )


class CalibrationProgress:
    """A bar over layers naming the step in flight, and one line per finished
    layer: the GPTQ error of each linear relative to round-to-nearest."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar = Progress(
            TextColumn("{task.description}", style="cyan"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("layers"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def start(self, n_layer: int, n_windows: int) -> None:
        self.n_layer = n_layer
        self.console.print(f"GPTQ calibration: {n_layer} layers x {n_windows} windows", highlight=False)
        self._bar.start()
        self._task = self._bar.add_task("", total=n_layer)

    def _started(self) -> TaskID:
        assert self._task is not None, "start() comes first"
        return self._task

    def step(self, il: int, what: str) -> None:
        self._bar.update(self._started(), description=f"layer {il:>3}: {what:<16}")

    def layer_done(self, stats: LayerStats) -> None:
        parts = []
        for s in stats.linears:
            short = s.name.split(".")[2]
            parts.append(f"{short} {s.ratio:.2f}" if s.ratio == s.ratio else f"{short} {s.method}")
        self._bar.console.print(
            f"layer {stats.il:>3}/{self.n_layer}  {stats.seconds:6.1f} s  err/rtn: {'  '.join(parts)}", highlight=False
        )
        self._bar.advance(self._started())

    def stop(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    progress = None if args.quiet else CalibrationProgress(console)

    def plan(enc):
        if args.gptq or any(getattr(args, dest) is not None for dest, _ in GPTQ_FLAGS):
            if args.imatrix:
                raise GPTQOptionsError("--imatrix and --gptq do not go together (GPTQ calibrates on its own)")
            opts = gptq_options(args)
            if gptq_checkpoint_config(args.hf_dir) is not None:
                raise GPTQOptionsError(
                    f"{args.hf_dir}: the checkpoint is GPTQ-quantized already; convert it "
                    f"without --gptq to import its INT4 weights as they are"
                )
            try:
                return plan_gptq(args.hf_dir, opts, enc, args.output, args.force, args.threads, progress)
            finally:
                if progress is not None:
                    progress.stop()
        mix = get_mix(args.outtype or DEFAULT_TYPE)
        if gptq_checkpoint_config(args.hf_dir) is not None:
            if args.imatrix:
                raise GPTQOptionsError("--imatrix applies to ggml quantization, not to importing a GPTQ checkpoint")
            return plan_gptq_import(args.hf_dir, mix, enc, args.output, args.force, args.pure)
        im = read_imatrix(args.imatrix) if args.imatrix else None
        src = args.imatrix or ""
        return plan_hf(args.hf_dir, mix, enc, args.output, args.force, args.pure, imatrix=im, imatrix_arg=src)

    return execute(plan, args.threads, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
