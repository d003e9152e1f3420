"""run: chat with a GGUF model in the terminal, or complete one prompt.

bin/run [MODEL] [-t N] [-c N] [--temp T] ...          chat REPL (default model if none)
bin/run MODEL -p PROMPT -n N [--temp 0] [--seed S]   one-shot raw completion to stdout
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from lamina.cli.errors import one_line_errors
from lamina.sampling import SamplingParams

HELP = """commands:
  /help          this text
  /reset         forget the conversation (keeps the system prompt)
  /system TEXT   set the system prompt and reset
  /stats         model, context and speed so far
  /exit          quit (also Ctrl-D); Ctrl-C stops a reply"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina run", description="Chat with a GGUF model, or complete a prompt.")
    ap.add_argument("model", nargs="?", help="GGUF path or a known model name (default: smollm2-135m-instruct)")
    ap.add_argument("-m", "--model", dest="model_opt", help=argparse.SUPPRESS)
    ap.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=0,
        help="context size (default: the model's, capped by a 1 GiB KV-cache budget)",
    )
    ap.add_argument("-b", "--batch-size", type=int, default=512, help="prompt tokens per native call")
    ap.add_argument("--cache-type", choices=["f16", "q8_0"], default="f16", help="KV cache format")
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--min-p", type=float, default=0.05)
    ap.add_argument("--repeat-penalty", type=float, default=1.0)
    ap.add_argument("--repeat-last-n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=None, help="same seed, same output")
    ap.add_argument("--system", default=None, help="system prompt")
    ap.add_argument("--chat-template-file", type=Path, default=None, help="Jinja chat template overriding the file's")
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument(
        "--context-shift", action="store_true", help="when the context fills, drop the oldest turns instead of stopping"
    )
    ap.add_argument(
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        dest="gpu_layers",
        default="0",
        help="layers to offload to the GPU, llama.cpp's meaning (the output head counts as one), "
        "or 'auto'; without a usable GPU: a warning and a CPU run",
    )
    ap.add_argument("--require-gpu", action="store_true", help="fail instead of running on the CPU without a GPU")
    ap.add_argument("-p", "--prompt", default=None, help="one-shot: complete this prompt and exit")
    ap.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens to generate (-1: until done)")
    ap.add_argument("--chat", action="store_true", help="one-shot: send the prompt through the chat template")
    return ap


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
    )


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


@one_line_errors("lamina run")
def _run(args: argparse.Namespace) -> int:
    from lamina.engine.offload import OffloadWarning, parse_gpu_layers
    from lamina.generation import open_generator
    from lamina.model_cache import resolve_model

    params = sampling_params(args)  # validate before the (slow) model load
    template = args.chat_template_file.read_text() if args.chat_template_file else None
    gpu_layers = parse_gpu_layers(args.gpu_layers)
    path = resolve_model(args.model_opt or args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OffloadWarning)
        gen = open_generator(
            path,
            n_ctx=args.ctx_size,
            n_threads=args.threads,
            n_batch=args.batch_size,
            kv_type=args.cache_type,
            chat_template=template,
            gpu_layers=gpu_layers,
            require_gpu=args.require_gpu,
        )
    for w in caught:
        print(f"run: warning: {w.message}", file=sys.stderr)
    if gen.context.offload.gpu_layers:
        print(f"run: {gen.context.offload_description}", file=sys.stderr)
    if args.prompt is not None:
        from lamina.cli.oneshot import complete

        return complete(gen, args, params)
    from lamina.cli.repl import Repl

    return Repl(gen, args, params).loop()


if __name__ == "__main__":
    sys.exit(main())
