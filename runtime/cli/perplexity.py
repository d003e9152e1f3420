"""`bin/perplexity`: perplexity and KL-divergence the way llama-perplexity computes them.

    bin/perplexity -m MODEL -f TEXT [-c 512] [-b N] [--chunks N] [-t N]
    bin/perplexity -m BASE  -f TEXT --kl-divergence-base base.kld      # also save base log-probs
    bin/perplexity -m QUANT --kl-divergence-base base.kld --kl-divergence

The perplexity run ends with llama-perplexity's `Final estimate: PPL = X +/- Y`
line on stdout (scripts parse it); the progress bar and notes go to stderr.
--llama-cpp runs the same computation over llama.cpp's logits
(llama-cpp-python), for a like-for-like comparison. See runtime/eval/perplexity.py
for what is computed and the base-file format (llama.cpp's own `_logits_`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lamina import options
from lamina.cli.errors import checked, one_line_errors

if TYPE_CHECKING:  # the eval modules load only when a run starts
    from lamina.eval.scoring import LogitsProvider


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina perplexity", description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True, help="GGUF path or known model name")
    ap.add_argument("-f", "--file", help="text file to evaluate (not needed with --kl-divergence)")
    ap.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        help="tokens per chunk (default 512; --kl-divergence uses the base file's)",
    )
    ap.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=2048,
        help="tokens per native eval call, capped at the context (default 2048)",
    )
    ap.add_argument("--chunks", type=int, default=None, help="evaluate only the first N chunks")
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=None, help="threads (default: all)")
    ap.add_argument(
        "--kl-divergence-base",
        metavar="FILE",
        help="perplexity run: save the log-probs here; with --kl-divergence: read them",
    )
    ap.add_argument(
        "--kl-divergence", action="store_true", help="compare MODEL against the log-probs in --kl-divergence-base"
    )
    ap.add_argument(
        "--llama-cpp",
        action="store_true",
        help="compute over llama.cpp's logits (llama-cpp-python) instead of lamina's",
    )
    ap.add_argument("--json", action="store_true", help="also print one JSON object with the results")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_line_errors("lamina perplexity")(_run)(args, Console(stderr=True))


def _progress(err: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


class _Backend:
    """Tokenizer + logits provider for lamina or llama.cpp."""

    provider: LogitsProvider
    encode: Callable[[bytes], list[int]]  # the text file's bytes -> ids, BOS as the model adds it
    bos_id: int | None  # each chunk starts with it when the vocabulary adds BOS
    name: str

    def __init__(self, path: str, args: argparse.Namespace, n_ctx: int) -> None:
        from lamina.eval.scoring import PerplexityError

        if args.batch_size < 1 or (args.threads is not None and args.threads < 1):
            raise PerplexityError("-b and -t must be >= 1")
        n_batch = min(args.batch_size, n_ctx)
        if args.llama_cpp:
            from lamina.eval.providers import LlamaCppLogits

            llama_cpp = LlamaCppLogits(path, n_ctx, n_batch, args.threads)
            self.provider = llama_cpp
            self.encode = llama_cpp.tokenize
            self.bos_id = llama_cpp.bos_id
            self.name = "llama.cpp"
        else:
            from lamina.engine.context import Model
            from lamina.eval.providers import EngineLogits
            from lamina.tokenizer import Tokenizer

            model = Model.load(path, n_threads=args.threads)
            tok = Tokenizer.from_metadata(model.native.gguf.metadata)
            self.provider = EngineLogits(model, n_ctx, n_batch, args.threads)
            self.encode = lambda text: tok.encode(text, add_bos=None, special=False)
            self.bos_id = tok.bos_id if tok.add_bos else None
            self.name = "lamina"


def _run(args: argparse.Namespace, err: Console) -> int:
    from lamina.eval.scoring import PerplexityError
    from lamina.model_cache import fetch_model

    if args.kl_divergence and not args.kl_divergence_base:
        raise PerplexityError("--kl-divergence needs --kl-divergence-base FILE (the base model's saved log-probs)")
    path = str(fetch_model(args.model))
    if args.kl_divergence:
        return _run_kl_divergence(args, err, path)
    return _run_perplexity(args, err, path)


def _run_kl_divergence(args: argparse.Namespace, err: Console, path: str) -> int:
    """MODEL against the base log-probs: llama-perplexity's KLD table and report."""
    from lamina.eval.kld import KLD_TABLE_HEADER, KLDStats, compute_kl_divergence
    from lamina.eval.logits_file import LogitsFile

    base = LogitsFile(args.kl_divergence_base)
    n_ctx = base.header.n_ctx
    if args.ctx_size is not None and args.ctx_size != n_ctx:
        err.print(
            f"note: {args.kl_divergence_base} was computed with n_ctx={n_ctx}; using that, not -c {args.ctx_size}"
        )
    backend = _Backend(path, args, n_ctx)
    n_chunk = base.header.n_chunk if args.chunks is None else min(args.chunks, base.header.n_chunk)
    err.print(
        f"kl-divergence: {backend.name}, {os.path.basename(path)} against {args.kl_divergence_base} "
        f"({n_chunk} chunks of {n_ctx} tokens)"
    )
    t0 = time.perf_counter()
    with _progress(err) as prog:
        task = prog.add_task("kl-divergence", total=n_chunk, info="")

        def tick(done: int, total: int, stats: KLDStats) -> None:
            k, _ = stats.kld()
            prog.update(task, completed=done, info=f"KLD {k:.5f}  PPL {stats.ppl()[0]:.4f}")

        res = compute_kl_divergence(backend.provider, base, backend.bos_id, args.chunks, on_chunk=tick)
    out = sys.stdout
    print(KLD_TABLE_HEADER, file=out)
    for row in res.chunk_rows:
        print(row, file=out)
    print(file=out)
    for line in res.stats.report_lines():
        print(line, file=out)
    if args.json:
        summary: dict[str, float | str] = {
            **res.stats.summary(),
            "n_ctx": n_ctx,
            "n_chunks": res.n_chunks,
            "seconds": time.perf_counter() - t0,
            "backend": backend.name,
            "model": path,
        }
        print(json.dumps(summary))
    return 0


def _run_perplexity(args: argparse.Namespace, err: Console, path: str) -> int:
    """Perplexity of MODEL over the text file (saving base log-probs with --kl-divergence-base)."""
    from lamina.eval.perplexity import compute_perplexity
    from lamina.eval.scoring import PerplexityError, plan_chunks

    if not args.file:
        raise PerplexityError("-f TEXT is required (the text to evaluate)")
    with open(args.file, "rb") as f:
        text = f.read()
    n_ctx = 512 if args.ctx_size is None else args.ctx_size
    if n_ctx < 4:
        raise PerplexityError(f"-c must be >= 4, got {n_ctx}")
    backend = _Backend(path, args, n_ctx)
    t0 = time.perf_counter()
    tokens = backend.encode(text)
    err.print(
        f"perplexity: {backend.name}, {os.path.basename(path)}: {args.file} tokenizes to {len(tokens)} "
        f"tokens ({time.perf_counter() - t0:.2f} s)"
    )
    n_chunk = plan_chunks(len(tokens), n_ctx, args.chunks)
    err.print(
        f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, "
        f"batch_size={min(args.batch_size, n_ctx)}"
    )
    t0 = time.perf_counter()
    running: list[str] = []
    with _progress(err) as prog:
        task = prog.add_task("perplexity", total=n_chunk, info="")

        def tick(done: int, total: int, ppl: float) -> None:
            running.append(f"[{done}]{ppl:.4f},")
            prog.update(task, completed=done, info=f"PPL {ppl:.4f}")

        res = compute_perplexity(
            backend.provider,
            tokens,
            n_ctx,
            args.chunks,
            backend.bos_id,
            kl_base_path=args.kl_divergence_base,
            on_chunk=tick,
        )
    seconds = time.perf_counter() - t0
    print("".join(running))
    if args.kl_divergence_base:
        err.print(f"saved base log-probs of {res.n_chunks} chunks to {args.kl_divergence_base}")
    err.print(f"{res.count} tokens scored in {seconds:.1f} s ({n_chunk * n_ctx / seconds:.1f} tokens/s evaluated)")
    print(res.final_line)
    if args.json:
        print(
            json.dumps(
                {
                    "ppl": res.ppl,
                    "ppl_err": res.ppl_err,
                    "n_ctx": n_ctx,
                    "n_chunks": res.n_chunks,
                    "n_tokens": len(tokens),
                    "count": res.count,
                    "running_ppl": res.running_ppl,
                    "chunk_ppl": res.chunk_ppl,
                    "seconds": seconds,
                    "backend": backend.name,
                    "model": path,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
