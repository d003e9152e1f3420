"""`bin/convert HF_DIR`: a Hugging Face checkpoint to GGUF in one step.

    bin/convert HF_DIR [-o OUT.gguf] [--outtype TYPE | --q4_k | --q8_0 | ...]
                [--pure] [--threads N] [--force] [--quiet]

The output is byte-for-byte what llama.cpp's converter (to f32) followed by
llama-quantize TYPE writes. Without -o the file goes into HF_DIR, named as
llama.cpp names it (model name, size, type).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert.cli_common import default_threads, execute
from convert.convert_hf import plan_hf
from convert.recipes import ALIASES, MIXES, get_mix

DEFAULT_TYPE = "f16"  # llama.cpp's converter default


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convert", description=__doc__.split("\n\n")[0])
    p.add_argument("hf_dir", type=Path, help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument("-o", "--output", type=Path, help="output GGUF path or directory (default: HF_DIR; file named like llama.cpp's)")
    types = p.add_mutually_exclusive_group()
    types.add_argument("--outtype", choices=[*MIXES, *ALIASES], help=f"output type / mix (default {DEFAULT_TYPE})")
    for name in [*MIXES, *ALIASES]:
        types.add_argument(f"--{name}", dest="outtype", action="store_const", const=name, help=argparse.SUPPRESS)
    p.add_argument("--pure", action="store_true", help="no mix: every quantizable tensor gets the type itself")
    p.add_argument("--threads", type=int, default=default_threads(), help="quantization threads (default: all)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    mix = get_mix(args.outtype or DEFAULT_TYPE)
    return execute(lambda enc: plan_hf(args.hf_dir, mix, enc, args.output, args.force, args.pure),
                   args.threads, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
