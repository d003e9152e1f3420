#!/usr/bin/env python3
"""The Ray hop's cost per token: `lamina serve -t T` and `lamina serve
--replicas 1 -t T` (same model, -np, -c) up at once, one client sending the
same streaming chat to each in turn (A, B, A, B, ...: a busy machine's drift
hits both alike), never a test.

    tools/ray_hop_bench.py [-m MODEL] [-t 1] [--rounds 12] [--max-tokens 64]

Prints the median time per streamed token after the first (the decode
interval as a client sees it) and the median time to the first token for
each, and their differences: what the proxy -> ingress -> replica hop adds."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import httpx
from load_bench import free_port, start


def one(base: str, model: str, max_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds per token after it)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Write a story about a lighthouse."}],
            "temperature": 0, "max_tokens": max_tokens, "stream": True}  # fmt: skip
    t0 = time.perf_counter()
    times = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
    return times[0] - t0, (times[-1] - times[0]) / max(1, len(times) - 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="smollm2-135m-instruct")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    from lamina.model_cache import fetch_model

    model = str(fetch_model(args.model))
    flags = ["-np", "1", "-c", "1024", "-t", str(args.threads)]
    procs, bases = {}, {}
    try:
        for name, extra in (("direct", []), ("ray", ["--replicas", "1"])):
            port = free_port()
            cmd = [sys.executable, "-m", "lamina", "serve", model, "--port", str(port), *flags, *extra]
            procs[name] = start(cmd, port)
            bases[name] = f"http://127.0.0.1:{port}"
        ids = {n: httpx.get(f"{b}/v1/models", timeout=10).json()["data"][0]["id"] for n, b in bases.items()}
        samples: dict[str, list[tuple[float, float]]] = {n: [] for n in bases}
        for n in bases:  # warm up
            one(bases[n], ids[n], 8)
        for _ in range(args.rounds):
            for n in bases:
                samples[n].append(one(bases[n], ids[n], args.max_tokens))
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(timeout=60)
    med = {n: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) for n, v in samples.items()}
    print(f"{args.rounds} rounds, max_tokens {args.max_tokens}, -t {args.threads}, one client, alternating")
    print("| server | TTFT p50 ms | per token p50 ms |")
    print("|---|---|---|")
    for n, (ttft, per) in med.items():
        print(f"| {n} | {1e3 * ttft:.1f} | {1e3 * per:.2f} |")
    d_ttft, d_tok = med["ray"][0] - med["direct"][0], med["ray"][1] - med["direct"][1]
    print(f"the Ray hop adds {1e3 * d_ttft:+.1f} ms to the first token and {1e3 * d_tok:+.2f} ms per token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
