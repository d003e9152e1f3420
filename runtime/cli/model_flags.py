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
