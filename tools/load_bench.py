#!/usr/bin/env python3
"""Load benchmark of `lamina serve` side by side with llama.cpp's llama-server
on the same model, context, slots and threads, in the same run (never a test).

    tools/load_bench.py [-m MODEL] [-c 2048] [-np 4] [-t 2] [--clients 1,4,8,16] [--requests 16] [--max-tokens 64]
                        [--replicas N --replica-threads T] [--only lamina,lamina-ray,llama.cpp]

Each server is started on a free 127.0.0.1 port; for each concurrency C, C
streaming clients (httpx, asyncio) send --requests chat completions in all
(temperature 0, stream_options.include_usage) and the table shows aggregate
output tokens/s, and p50/p95 of time to first token and of inter-token
latency (between streamed chunks). Bounded: every request has a timeout and
every server a start deadline. With --replicas N, `lamina-ray` is a third
server: `lamina serve --replicas N -t T` on a local Ray cluster (the same
-c and -np per replica), for one server against N replicas on one machine,
and the Ray hop's cost per token (its ITL against lamina's at one client)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works to a child.",
    "List ten facts about the moon, one per line.",
    "Describe a walk through a forest in autumn.",
]


@dataclass
class Sample:
    ttft: float
    gaps: list[float]
    tokens: int
    total: float = 0.0  # the whole request, first byte sent to [DONE]


@dataclass
class Result:
    engine: str
    clients: int
    wall: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, deadline_s: float = 300) -> subprocess.Popen:
    # the server's log goes to a file: an unread pipe fills up and blocks the server
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (open as long as the server runs)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"{cmd[0]} did not become healthy in {deadline_s} s")


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> Sample:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    first, last, gaps, tokens = None, None, [], 0
    async with client.stream("POST", url, json=body, timeout=600) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)
                last = now
    return Sample((first or time.perf_counter()) - t0, gaps, tokens, time.perf_counter() - t0)


async def run_level(engine: str, port: int, clients: int, n_requests: int, max_tokens: int) -> Result:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    # the name the server gives its model (lamina answers 404 for another, as OpenAI does)
    model = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"][0]["id"]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(n_requests):
        queue.put_nowait(PROMPTS[i % len(PROMPTS)])
    result = Result(engine, clients, 0.0)
    # a fresh connection per request: llama-server may close a streamed one just as the next request reuses it
    fresh = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=fresh) as client:

        async def worker() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                result.samples.append(await one(client, url, model, prompt, max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        result.wall = time.perf_counter() - t0
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="smollm2-135m-instruct")
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("-np", "--parallel", type=int, default=4)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--only", default=None, help="comma-separated engines of lamina, lamina-ray, llama.cpp")
    ap.add_argument("--replicas", type=int, default=0, help="add lamina-ray: this many replicas on a local Ray")
    ap.add_argument("--replica-threads", type=int, default=1, help="-t of each lamina-ray replica")
    args = ap.parse_args()
    from lamina.model_cache import fetch_model

    model = str(fetch_model(args.model))
    levels = [int(c) for c in args.clients.split(",")]
    cache = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina"))
    llama_server = cache / "llama.cpp" / "build" / "bin" / "llama-server"
    servers = {
        "lamina": lambda port: [sys.executable, "-m", "lamina", "serve", model, "--port", str(port),
                                "-np", str(args.parallel), "-c", str(args.ctx_size), "-t", str(args.threads)],
        "llama.cpp": lambda port: [str(llama_server), "-m", model, "--port", str(port), "--host", "127.0.0.1",
                                   "-np", str(args.parallel), "-c", str(args.ctx_size), "-t", str(args.threads),
                                   "-tb", str(args.threads), "-ngl", "0", "--no-webui"],
    }  # fmt: skip
    if args.replicas:
        servers["lamina-ray"] = lambda port: [*servers["lamina"](port)[:-2], "-t", str(args.replica_threads),
                                              "--replicas", str(args.replicas)]  # fmt: skip
    results: list[Result] = []
    for engine, cmd in servers.items():
        if args.only and engine not in args.only.split(","):
            continue
        port = free_port()
        proc = start(cmd(port), port)
        try:
            asyncio.run(run_level(engine, port, 1, 2, 8))  # warm up
            for c in levels:
                results.append(asyncio.run(run_level(engine, port, c, max(args.requests, c), args.max_tokens)))
                r = results[-1]
                print(f"{engine} C={c}: {r.tokens_per_second:.1f} tok/s", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"model {Path(model).name}, -c {args.ctx_size}, -np {args.parallel}, -t {args.threads}, "
          f"{args.requests} requests per level, max_tokens {args.max_tokens}, temperature 0")  # fmt: skip
    print("| engine | clients | output tok/s | request p95 s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ttft = [s.ttft for s in r.samples]
        gaps = [g for s in r.samples for g in s.gaps]
        cells = [
            f"{r.tokens_per_second:.1f}",
            f"{r.pct([s.total for s in r.samples], 0.95):.2f}",
            f"{1e3 * statistics.median(ttft):.0f}",
            f"{1e3 * r.pct(ttft, 0.95):.0f}",
            f"{1e3 * statistics.median(gaps):.0f}",
            f"{1e3 * r.pct(gaps, 0.95):.0f}",
        ]
        print(f"| {r.engine} | {r.clients} | " + " | ".join(cells) + " |")
    by = {(r.engine, r.clients): r for r in results}
    ratios = []
    for c in levels:
        if ("lamina", c) in by and ("llama.cpp", c) in by:
            ratios.append(f"C={c}: {by['lamina', c].tokens_per_second / by['llama.cpp', c].tokens_per_second:.2f}x")
    if ratios:
        print("aggregate tok/s lamina / llama-server: " + ", ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
