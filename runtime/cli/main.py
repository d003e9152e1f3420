"""`lamina`: one command, one subcommand per tool (as `git`, `ollama` do).

    lamina run MODEL --gpu-layers 20        lamina convert HF_DIR --q4_k
    lamina --help                           lamina SUBCOMMAND --help

Each subcommand lives in its own module with a `main(argv)`; it is imported
only when asked for, so `lamina inspect` never loads the native core."""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

from lamina import __version__


class Subcommand(NamedTuple):
    module: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("lamina.cli.run", "chat with a model in the terminal, or complete one prompt"),
    "convert": Subcommand("lamina.convert.cli.convert", "Hugging Face checkpoint -> GGUF (K-quants, GPTQ INT4)"),
    "convert-lora": Subcommand("lamina.convert.cli.lora", "PEFT LoRA adapter -> GGUF (as convert_lora_to_gguf.py)"),
    "quantize": Subcommand("lamina.convert.cli.quantize", "re-quantize a GGUF file to another type"),
    "compress": Subcommand("lamina.cli.compress", "prune (layers, FFN neurons, sparsity), distill and quantize"),
    "imatrix": Subcommand("lamina.convert.cli.imatrix", "importance matrix over calibration text, as llama-imatrix"),
    "serve": Subcommand("lamina.cli.serve", "an OpenAI-compatible HTTP server (many users at once)"),
    "batched-bench": Subcommand(
        "lamina.cli.batched_bench", "decode speed of B sequences at once, as llama-batched-bench"
    ),
    "bench": Subcommand("lamina.cli.bench", "prompt/generation tokens per second, as llama-bench"),
    "bench-kernels": Subcommand("lamina.cli.bench_kernels", "kernel throughput next to the memory bandwidth"),
    "perplexity": Subcommand("lamina.cli.perplexity", "perplexity and KL-divergence, as llama-perplexity"),
    "inspect": Subcommand("lamina.cli.inspect", "metadata and tensor table of a GGUF file"),
    "quant-report": Subcommand("lamina.cli.quant_report", "per-tensor error of one GGUF against another"),
    "models": Subcommand("lamina.model_cache", "list or fetch the known models"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: lamina [--version] [--help] SUBCOMMAND [ARGS]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "`lamina SUBCOMMAND --help` describes each one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:
        # `lamina --help | head`: the reader left; no traceback, no flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"lamina {__version__}")
        return 0
    name, rest = args[0], args[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        print(f"lamina: unknown subcommand {name!r}; expected one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(sub.module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
