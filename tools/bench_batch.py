#!/usr/bin/env python
"""Aggregate decode speed of B sequences in one forward pass (Context.decode).

For each B: B sequences each get a short prompt (one decode call for all of
them), then `--steps` decode calls of one token per sequence (greedy, all B
logits rows returned, as a scheduler would). Reports tokens/s over all
sequences, and the ratio to B = 1. A measurement, not a test.

    python tools/bench_batch.py                       # SmolLM2-135M Q4_1 and Qwen2.5-0.5B Q4_K_M
    python tools/bench_batch.py -m PATH.gguf -B 1 4 --steps 64 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lamina.engine.context import Context, Model
from lamina.model_cache import fetch_model

DEFAULT_MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b"]


def bench(model: Model, B: int, prompt: int, steps: int, threads: int) -> float:
    """tokens/s of `steps` decode calls of B tokens, after a prompt per sequence"""
    n_ctx_seq = prompt + steps + 8
    ctx = Context(model, n_ctx=B * n_ctx_seq, n_batch=max(B * prompt, B), n_seq_max=B, n_threads=threads)
    rng = np.random.default_rng(B)
    toks = rng.integers(100, min(model.n_vocab, 20000), (B, prompt))
    seqs = np.repeat(np.arange(B), prompt)
    pos = np.tile(np.arange(prompt), B)
    logits = ctx.decode(toks.reshape(-1), pos, seqs)  # the last token of each sequence
    nxt = logits.argmax(axis=1)
    ids, mask = np.arange(B), np.ones(B, dtype=bool)
    for _ in range(2):  # warm-up: caches, pages of the weights
        nxt = ctx.decode(nxt, [ctx.seq_len(s) for s in ids], ids, mask).argmax(axis=1)
    t0 = time.perf_counter()
    for _ in range(steps):
        nxt = ctx.decode(nxt, [ctx.seq_len(s) for s in ids], ids, mask).argmax(axis=1)
    dt = time.perf_counter() - t0
    ctx.close()
    return B * steps / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", help="a GGUF path or a model_cache name (repeatable)")
    ap.add_argument("-B", "--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="sequences per decode call")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens per sequence")
    ap.add_argument("--steps", type=int, default=48, help="timed decode calls")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per B; the fastest counts (a shared machine)")
    args = ap.parse_args()
    for name in args.model or DEFAULT_MODELS:
        path = name if name.endswith(".gguf") else fetch_model(name)
        model = Model.load(path, n_threads=args.threads)
        print(f"{model!r}, {args.threads} threads, prompt {args.prompt}, {args.steps} steps")
        print(f"{'B':>3} {'tok/s':>9} {'vs B=1':>7}")
        base = None
        for B in args.batch:
            tps = max(bench(model, B, args.prompt, args.steps, args.threads) for _ in range(args.repeat))
            base = base or tps
            print(f"{B:>3} {tps:>9.1f} {tps / base:>6.2f}x", flush=True)
        model.close()


if __name__ == "__main__":
    main()
