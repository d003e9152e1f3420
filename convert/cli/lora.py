"""`lamina convert-lora`: a PEFT LoRA adapter as llama.cpp's GGUF adapter (the
file convert_lora_to_gguf.py writes), or adapters baked into a new GGUF.

    lamina convert-lora PEFT_DIR --base HF_DIR -o OUT.gguf [--outtype f32|f16|q8_0]
    lamina convert-lora --merge -m BASE.gguf --lora A.gguf [--lora-scaled B.gguf:0.5] -o OUT.gguf [--outtype TYPE]

Run an adapter with `lamina run MODEL --lora OUT.gguf` (or llama.cpp's
--lora); --merge writes W + scale * alpha / rank * B A for every adapted
matrix at any type `lamina quantize` writes (default f16), as
llama-export-lora does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamina.cli.model_flags import add_lora_flags, lora_files
from lamina.convert.cli.common import default_threads, execute
from lamina.convert.encode import Encoder
from lamina.convert.lora.merge import plan_merge
from lamina.convert.lora.peft import OUTTYPES, plan_lora
from lamina.convert.pipeline import Job
from lamina.convert.recipes import ALIASES, MIXES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina convert-lora", description=__doc__.split("\n\n")[0])
    p.add_argument("peft_dir", type=Path, nargs="?", help="PEFT adapter dir (adapter_config.json + safetensors)")
    p.add_argument("--base", type=Path, help="the base model's HF directory (its config.json is read)")
    p.add_argument("-o", "--outfile", type=Path, required=True, help="output GGUF")
    p.add_argument(
        "--outtype",
        type=str.lower,
        default=None,
        metavar="TYPE",
        help=f"adapter: {', '.join(OUTTYPES)} (default f32); --merge: any mix of lamina quantize (default f16)",
    )
    p.add_argument("--merge", action="store_true", help="bake the --lora adapters into -m's weights")
    p.add_argument("-m", "--model", type=Path, help="--merge: the base GGUF")
    add_lora_flags(p)
    p.add_argument("--threads", type=int, default=default_threads(), help="quantization threads (default: all)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.merge:
        if args.model is None or args.peft_dir is not None or args.base is not None:
            ap.error("--merge takes -m BASE.gguf and --lora / --lora-scaled adapters (no PEFT_DIR, no --base)")
        outtype = args.outtype or "f16"
        if outtype not in (*MIXES, *ALIASES):
            ap.error(f"--outtype {outtype!r}: expected one of {', '.join([*MIXES, *ALIASES])}")
        try:
            loras = lora_files(args)
        except ValueError as e:
            ap.error(str(e))

        def plan(enc: Encoder) -> Job:
            return plan_merge(args.model, loras, args.outfile, outtype, enc, args.force)

    else:
        if args.peft_dir is None or args.base is None or args.model or args.lora or args.lora_scaled:
            ap.error("an adapter conversion takes PEFT_DIR and --base HF_DIR (-m and --lora go with --merge)")
        outtype = args.outtype or "f32"
        if outtype not in OUTTYPES:
            ap.error(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")

        def plan(enc: Encoder) -> Job:
            return plan_lora(args.peft_dir, args.base, args.outfile, outtype, enc, args.force)

    return execute(plan, args.threads, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
