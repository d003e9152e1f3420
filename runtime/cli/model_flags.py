"""The flags that load a model, shared by `lamina run` and `lamina serve`:
llama.cpp's names and meanings (-m, -t, -c, -b, -ctk, -ngl)."""

from __future__ import annotations

import argparse

from lamina import options
from lamina.cli.errors import checked


def add_model_flags(ap: argparse.ArgumentParser, ctx_help: str) -> None:
    ap.add_argument("model", nargs="?", help="GGUF path or a known model name (default: smollm2-135m-instruct)")
    ap.add_argument("-m", "--model", dest="model_opt", help=argparse.SUPPRESS)
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=None, help="CPU threads (default: all)")
    ap.add_argument("-c", "--ctx-size", type=checked(options.n_ctx), default=0, help=ctx_help)
    ap.add_argument(
        "-b", "--batch-size", type=checked(options.n_batch), default=512, help="prompt tokens per native call"
    )
    ap.add_argument("--cache-type", "-ctk", choices=["f16", "q8_0"], default="f16", help="KV cache format")
    ap.add_argument(
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        dest="gpu_layers",
        type=checked(options.gpu_layers),
        default=0,
        help="layers to offload to the GPU, llama.cpp's meaning (the output head counts as one; -1: all), "
        "or 'auto'; without a usable GPU: a warning and a CPU run",
    )


def add_lora_flags(ap: argparse.ArgumentParser) -> None:
    """llama.cpp's --lora / --lora-scaled (repeatable; comma-separated lists too)"""
    ap.add_argument(
        "--lora", action="append", default=[], metavar="FNAME", help="LoRA adapter (GGUF) at scale 1; repeatable"
    )
    ap.add_argument(
        "--lora-scaled",
        action="append",
        nargs="+",
        default=[],
        metavar="FNAME:SCALE",
        help="LoRA adapter with a scale: FNAME:SCALE[,FNAME:SCALE...] (llama.cpp's form) or FNAME SCALE; repeatable",
    )


def lora_files(args: argparse.Namespace) -> list[tuple[str, float]]:
    """(path, scale) of every adapter the flags name, --lora ones first, as llama.cpp parses them"""
    out = [(item, 1.0) for value in args.lora for item in value.split(",") if item]
    for values in args.lora_scaled:
        if len(values) == 2 and ":" not in values[0]:
            items = [(values[0], values[1])]
        elif len(values) == 1:
            items = [tuple(item.rsplit(":", 1)) for item in values[0].split(",") if item]
        else:
            raise ValueError(f"--lora-scaled {' '.join(values)}: expected FNAME:SCALE[,...] or FNAME SCALE")
        for item in items:
            if len(item) != 2:
                raise ValueError(f"--lora-scaled {item[0]}: expected FNAME:SCALE")
            try:
                scale = float(item[1])
            except ValueError:
                raise ValueError(f"--lora-scaled {item[0]}: scale {item[1]!r} is not a number") from None
            out.append((item[0], scale))
    return out
