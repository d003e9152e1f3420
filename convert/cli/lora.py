"""`lamina convert-lora PEFT_DIR --base HF_DIR -o adapter.gguf`: a PEFT LoRA adapter
as llama.cpp's GGUF adapter (the file convert_lora_to_gguf.py writes).

    lamina convert-lora PEFT_DIR --base HF_DIR -o OUT.gguf [--outtype f32|f16|q8_0] [--force] [--quiet]

Run it with `lamina run MODEL --lora OUT.gguf` (or llama.cpp's --lora).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamina.convert.cli.common import default_threads, execute
from lamina.convert.encode import Encoder
from lamina.convert.lora.peft import OUTTYPES, plan_lora
from lamina.convert.pipeline import Job


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina convert-lora", description=__doc__.split("\n\n")[0])
    p.add_argument("peft_dir", type=Path, help="PEFT adapter dir (adapter_config.json, adapter_model.safetensors)")
    p.add_argument("--base", type=Path, required=True, help="the base model's HF directory (its config.json is read)")
    p.add_argument("-o", "--outfile", type=Path, required=True, help="output GGUF adapter")
    p.add_argument("--outtype", choices=list(OUTTYPES), default="f32", help="tensor type (default: f32)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def plan(enc: Encoder) -> Job:
        return plan_lora(args.peft_dir, args.base, args.outfile, args.outtype, enc, args.force)

    return execute(plan, default_threads(), args.quiet)


if __name__ == "__main__":
    sys.exit(main())
