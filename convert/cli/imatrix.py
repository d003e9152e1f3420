"""`lamina imatrix`: an importance matrix over calibration text, as llama-imatrix computes it.

    lamina imatrix -m MODEL -f TEXT [-c 512] [--chunks N] [-b 2048] [-ub 512] [-t N] [-o imatrix.gguf]
                   [--output-format gguf|dat] [--process-output] [--parse-special]

The output is llama.cpp's GGUF imatrix (llama-quantize --imatrix reads it, and
so do `lamina quantize --imatrix` and `lamina convert --imatrix`). See
lamina/convert/imatrix/collect.py for what is counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rich.console import Console

from lamina import options
from lamina.cli.errors import checked, one_line_errors


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina imatrix", description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", required=True, help="GGUF path or known model name")
    p.add_argument("-f", "--file", required=True, help="calibration text file")
    p.add_argument("-o", "--output", default="imatrix.gguf", help="output file (default imatrix.gguf)")
    p.add_argument(
        "--output-format",
        choices=["gguf", "dat"],
        default="gguf",
        help="gguf (default) or llama-imatrix's legacy dat, for tools that read only that",
    )
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, default=None, help="use only the first N chunks")
    p.add_argument(
        "-b", "--batch-size", type=int, default=2048, help="llama-imatrix's -b: chunks run side by side (default 2048)"
    )
    p.add_argument(
        "-ub", "--ubatch-size", type=int, default=512, help="llama-imatrix's -ub: micro-batch size (default 512)"
    )
    p.add_argument("-t", "--threads", type=checked(options.n_threads), default=None, help="threads (default: all)")
    p.add_argument(
        "--process-output", action="store_true", help="collect the output head too (output.weight), as llama-imatrix's"
    )
    p.add_argument(
        "--parse-special", action="store_true", help="recognise control tokens written in the text (llama.cpp's flag)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return one_line_errors("lamina imatrix")(_run)(args, Console(stderr=True))


def _run(args: argparse.Namespace, err: Console) -> int:
    from lamina.convert.imatrix.collect import compute_imatrix, plan_chunks
    from lamina.convert.imatrix.format import write_imatrix, write_imatrix_legacy
    from lamina.engine.context import Model
    from lamina.model_cache import fetch_model
    from lamina.tokenizer import Tokenizer

    path = str(fetch_model(args.model))
    with open(args.file, "rb") as f:
        text = f.read()
    if text.endswith(b"\n"):  # llama.cpp's -f drops one trailing newline
        text = text[:-1]
    model = Model.load(path, n_threads=args.threads)
    tok = Tokenizer.from_metadata(model.native.gguf.metadata)
    tokens = tok.encode(text, add_bos=None, special=args.parse_special)
    n_chunk = plan_chunks(len(tokens), args.ctx_size, args.chunks)
    err.print(
        f"imatrix: {os.path.basename(path)}: {args.file} tokenizes to {len(tokens)} tokens; "
        f"computing over {n_chunk} chunks of {args.ctx_size}"
    )
    t0 = time.perf_counter()

    def tick(done: int, total: int) -> None:
        err.print(f"[{done}/{total}] {time.perf_counter() - t0:.1f} s", end="\r", highlight=False)

    im = compute_imatrix(
        model,
        tokens,
        args.ctx_size,
        args.chunks,
        bos_id=tok.bos_id if tok.add_bos else None,
        dataset=args.file,
        n_threads=args.threads,
        on_chunk=tick,
        n_batch=args.batch_size,
        n_ubatch=args.ubatch_size,
        process_output=args.process_output,
    )
    (write_imatrix_legacy if args.output_format == "dat" else write_imatrix)(args.output, im)
    err.print(f"\nimatrix: {len(im.entries)} entries from {n_chunk} chunks -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
