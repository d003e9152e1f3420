#!/usr/bin/env python
"""Soak runs, not part of the default test run (tests/runtime/test_soak.py runs
a short one of each): resident memory, open file descriptors and latencies
sampled over a long run, to show they stay flat after warm-up.

  python tools/soak.py llama  [--chats 1000] [--max-tokens 100] [--n-ctx 512]
      One Llama generating across many multi-turn chats; each chat's history
      is cut from the front (its oldest turns dropped: a context shift at the
      conversation level) whenever the next prompt would not fit n_ctx.
  python tools/soak.py server [--requests 10000] [--clients 8]
      `lamina serve` taking mixed requests from a bounded pool of loopback
      clients: streamed chats, plain completions, streams the client cancels
      after the first chunk, bad requests (must be 4xx), tokenize calls; at the
      end no slot is busy and /health answers.

Both print one JSON report (samples of RSS MiB and open fds over time, the
growth after warm-up, latency percentiles, errors) and, with --json FILE,
write it there; each sample (20 per run) is printed to stderr as it is
taken and, with --json, the report so far goes to FILE.partial. Exit status 1 if any request failed unexpectedly."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "river",
    "mountain",
    "code",
    "python",
    "sky",
    "blue",
    "green",
    "red",
    "run",
    "jump",
    "think",
    "write",
    "read",
]


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """RSS and fds of a process every `every` units of work, each sample also
    printed to stderr and, with a partial path, the report so far written
    there (a run killed or cut short still leaves its curve)."""

    def __init__(self, pid: int | str, every: int, total: int, partial: Path | None = None) -> None:
        self.pid, self.every, self.samples = pid, every, []  # (done, seconds, rss MiB, fds)
        self.total, self.partial = total, partial
        self.t0 = time.monotonic()

    def maybe(self, done: int, force: bool = False) -> None:
        if force or done % self.every == 0:
            sample = (done, round(time.monotonic() - self.t0, 2), round(rss_mb(self.pid), 1), open_fds(self.pid))
            self.samples.append(sample)
            print(f"soak {done}/{self.total} at {sample[1]} s: rss {sample[2]} MiB, {sample[3]} fds", file=sys.stderr)
            if self.partial is not None:
                write_atomic(self.partial, json.dumps({"partial": True, **self.summary()}, indent=1))

    def summary(self) -> dict[str, Any]:
        s = self.samples
        warm = s[len(s) // 4] if len(s) > 4 else s[0]  # after a quarter of the run
        return {
            "samples": s,
            "rss_mb_after_warmup": [warm[2], s[-1][2]],
            "rss_growth_mb_after_warmup": round(s[-1][2] - warm[2], 1),
            "fds_after_warmup": [warm[3], s[-1][3]],
            "fd_growth_after_warmup": s[-1][3] - warm[3],
        }


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)
    pick = lambda q: round(xs[min(len(xs) - 1, int(q * len(xs)))], 4)
    return {"n": len(xs), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(xs[-1], 4)}


def soak_llama(args: argparse.Namespace) -> dict[str, Any]:
    from lamina import Llama
    from lamina.model_cache import fetch_model

    rng = random.Random(0)
    llm = Llama(str(fetch_model(args.model)), n_ctx=args.n_ctx, n_threads=args.threads, verbose=False, seed=1)
    sampler = Sampler("self", max(1, args.chats // 20), args.chats, _partial(args))
    tokens = shifts = empty = 0
    finishes: dict[str, int] = {}
    first_half: list[float] = []
    second_half: list[float] = []
    for chat in range(args.chats):
        history: list[dict[str, str]] = []
        for _ in range(args.turns):
            user = "Tell me a story about " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
            history.append({"role": "user", "content": user})
            # shift: drop the oldest turns until prompt + reply fit the context
            while len(history) > 1 and _chat_tokens(llm, history) + args.max_tokens > args.n_ctx:
                del history[:2]
                shifts += 1
            t0 = time.perf_counter()
            out = llm.create_chat_completion(history, max_tokens=args.max_tokens, temperature=0.8, seed=chat)
            dt = time.perf_counter() - t0
            n = out["usage"]["completion_tokens"]
            reason = out["choices"][0]["finish_reason"]
            finishes[reason] = finishes.get(reason, 0) + 1
            tokens += n
            empty += n == 0
            (first_half if chat < args.chats // 2 else second_half).append(dt / max(n, 1))
            history.append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})
        sampler.maybe(chat + 1)
    sampler.maybe(args.chats, force=True)
    llm.close()
    return {
        "mode": "llama",
        "chats": args.chats,
        "turns_per_chat": args.turns,
        "tokens_generated": tokens,
        "context_shifts": shifts,
        "finish_reasons": finishes,
        "empty_replies": empty,
        "seconds_per_token_first_half": percentiles(first_half),
        "seconds_per_token_second_half": percentiles(second_half),
        "errors": 0,
        **sampler.summary(),
    }


def _partial(args: argparse.Namespace) -> Path | None:
    return None if args.json is None else args.json.with_name(args.json.name + ".partial")


def _chat_tokens(llm: Any, history: list[dict[str, str]]) -> int:
    return len(llm._session.chat_tokens(history))


def soak_server(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from lamina.model_cache import fetch_model
    from support.serve_process import start_server, stop_server

    flags = ["-np", str(args.slots), "-c", str(args.n_ctx), "--threads", str(args.threads)]
    proc, base = start_server(str(fetch_model(args.model)), *flags)
    sampler = Sampler(proc.pid, max(1, args.requests // 20), args.requests, _partial(args))
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {}
    unexpected: list[str] = []
    done = 0
    next_job = iter(range(args.requests))

    def one(client: httpx.Client, kind: str, rng: random.Random) -> None:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 20)))
        chat = {"messages": [{"role": "user", "content": words}], "max_tokens": rng.randint(1, args.max_tokens)}
        if kind == "chat_stream":
            with client.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
                lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                if r.status_code != 200 or lines[-1] != "data: [DONE]":
                    raise AssertionError(f"{kind}: {r.status_code} {lines[-1:]}")
        elif kind == "cancelled":
            with client.stream("POST", "/v1/chat/completions", json={**chat, "max_tokens": 64, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        break  # leaving the block closes the connection mid-stream
        elif kind == "completion":
            r = client.post("/v1/completions", json={"prompt": words, "max_tokens": chat["max_tokens"]})
            if r.status_code != 200:
                raise AssertionError(f"{kind}: {r.status_code} {r.text[:200]}")
        elif kind == "bad":
            bad = rng.choice(
                [b"{", b'{"messages": []}', b'{"messages": [{"role": "user", "content": "x"}], "n": 99}', b"[1, 2]"]
            )
            r = client.post("/v1/chat/completions", content=bad, headers={"content-type": "application/json"})
            if not 400 <= r.status_code < 500:
                raise AssertionError(f"{kind}: {r.status_code} {r.text[:200]}")
        else:
            r = client.post("/tokenize", json={"content": words})
            if r.status_code != 200:
                raise AssertionError(f"{kind}: {r.status_code}")

    def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        kinds = ["chat_stream", "chat_stream", "completion", "cancelled", "bad", "tokenize"]
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                with lock:
                    job = next(next_job, None)
                if job is None:
                    return
                kind = kinds[rng.randrange(len(kinds))]
                t0 = time.perf_counter()
                try:
                    one(client, kind, rng)
                except Exception as e:
                    with lock:
                        unexpected.append(f"{kind}: {type(e).__name__}: {e}"[:300])
                with lock:
                    latencies.setdefault(kind, []).append(time.perf_counter() - t0)
                    done += 1
                    sampler.maybe(done)

    try:
        sampler.maybe(0, force=True)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.5)  # cancelled streams' slots are freed on the engine's next step
        sampler.maybe(done, force=True)
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        busy = next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("lamina_busy_slots "))
        health = httpx.get(f"{base}/health", timeout=30).status_code
    finally:
        stop_server(proc)
    return {
        "mode": "server",
        "requests": args.requests,
        "clients": args.clients,
        "busy_slots_at_end": busy,
        "health_at_end": health,
        "latency_seconds": {k: percentiles(v) for k, v in sorted(latencies.items())},
        "errors": len(unexpected),
        "first_errors": unexpected[:10],
        **sampler.summary(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["llama", "server"])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--chats", type=int, default=1000)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=25)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the report here (and the report so far to FILE.partial)")
    args = ap.parse_args()
    report = soak_llama(args) if args.mode == "llama" else soak_server(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        write_atomic(args.json, text)
    ok = report["errors"] == 0 and report.get("busy_slots_at_end", 0) == 0 and report.get("health_at_end", 200) == 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
