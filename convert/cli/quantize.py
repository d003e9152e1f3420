"""`lamina quantize IN.gguf OUT.gguf TYPE`: apply a quantization mix to a GGUF.

    lamina quantize IN.gguf OUT.gguf TYPE [--imatrix FILE] [--pure] [--allow-requantize]
                    [--threads N] [--force] [--quiet]

The same recipes as `convert` and llama-quantize; an already-quantized input
is refused unless --allow-requantize. --imatrix takes an importance matrix
(`lamina imatrix`'s or llama-imatrix's, GGUF or legacy .dat) and uses it as
llama-quantize does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamina import options
from lamina.cli.errors import checked
from lamina.convert.cli.common import default_threads, execute
from lamina.convert.encode import Encoder
from lamina.convert.imatrix.format import read_imatrix
from lamina.convert.pipeline import Job
from lamina.convert.recipes import ALIASES, MIXES, get_mix
from lamina.convert.requantize import plan_gguf


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="input GGUF (typically f32/f16/bf16)")
    p.add_argument("output", type=Path, help="output GGUF")
    p.add_argument(
        "type",
        type=str.lower,
        choices=[*MIXES, *ALIASES],
        metavar="TYPE",
        help=f"one of: {', '.join([*MIXES, *ALIASES])}",
    )
    p.add_argument(
        "--imatrix", metavar="FILE", help="importance matrix (GGUF or legacy .dat) the quantizers weight errors by"
    )
    p.add_argument("--pure", action="store_true", help="no mix: every quantizable tensor gets TYPE itself")
    p.add_argument("--allow-requantize", action="store_true", help="requantize tensors that are already quantized")
    p.add_argument(
        "--threads",
        type=checked(options.n_threads),
        default=default_threads(),
        help="quantization threads (default: all)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    mix = get_mix(args.type)

    def plan(enc: Encoder) -> Job:
        im = read_imatrix(args.imatrix) if args.imatrix else None
        return plan_gguf(
            args.input, args.output, mix, enc, args.force, args.pure, args.allow_requantize, im, args.imatrix or ""
        )

    return execute(plan, args.threads, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
