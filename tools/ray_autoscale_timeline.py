#!/usr/bin/env python3
"""The timeline of Ray Serve autoscaling lamina replicas under a burst of
load, never a test: `lamina serve --min-replicas 1 --max-replicas 2` on a
local Ray cluster, C streaming chat clients for --load-s seconds, then none.

    tools/ray_autoscale_timeline.py [-m MODEL] [--clients 3] [--load-s 15] [-np 4] [-c 2048]
        [--target-ongoing-requests 1] [--upscale-delay-s 1] [--downscale-delay-s 3]
        [--metrics-interval-s 0.5] [--look-back-period-s 2]

Prints, in seconds from the start of the load, every change in Ray's count
of the replicas by state (`lamina_ray_replicas` in the aggregated /metrics,
which is serve.status()) and in the replicas reporting metrics (a replica
reports once its model is loaded, and stops when it is stopped), the first
request each replica answered, and when the load stopped: load start ->
second replica starting -> running -> serving -> load end -> scale-down."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time

import httpx
from load_bench import free_port, start

PROMPTS = ["Write a poem about rain.", "List some fruits.", "Explain what a river is.", "Describe a mountain.",
           "Tell me about cats.", "What is a prime number?", "Describe a forest.", "Name a planet."]  # fmt: skip


def observe(base: str) -> tuple[dict[str, int], frozenset[str]]:
    """(Ray's replicas by state, the replicas reporting metrics)"""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    states = re.findall(r'^lamina_ray_replicas\{state="([^"]+)"\} (\S+)$', text, re.M)
    reporting = frozenset(re.findall(r'^lamina_slots\{replica="([^"]+)"', text, re.M))
    return {s: int(float(n)) for s, n in states if float(n)}, reporting


def stream(base: str, model: str, prompt: str, max_tokens: int) -> str:
    """one streaming chat to its end; the replica that answered"""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and "error" in json.loads(line[6:]):
                raise RuntimeError(line)
        return r.headers["x-lamina-replica"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="smollm2-135m-instruct")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--load-s", type=float, default=15.0, help="seconds of load")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("-np", "--parallel", type=int, default=4)
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads per replica")
    knobs = {"target_ongoing_requests": "1", "upscale_delay_s": "1", "downscale_delay_s": "3",
             "metrics_interval_s": "0.5", "look_back_period_s": "2"}  # fmt: skip
    for name, default in knobs.items():
        ap.add_argument("--" + name.replace("_", "-"), default=default, help=f"Ray's {name} (default {default})")
    args = ap.parse_args()
    from lamina.model_cache import fetch_model

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "lamina", "serve", str(fetch_model(args.model)), "--port", str(port),
           "-np", str(args.parallel), "-c", str(args.ctx_size), "-t", str(args.threads),
           "--min-replicas", "1", "--max-replicas", "2"]  # fmt: skip
    for name in knobs:
        cmd += ["--" + name.replace("_", "-"), getattr(args, name)]
    print("$", " ".join(cmd[1:]), flush=True)
    proc = start(cmd, port)
    events: list[tuple[float, str]] = []
    try:
        while observe(base)[0].get("RUNNING") != 1 or len(observe(base)[1]) != 1:
            time.sleep(0.2)
        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        t0 = time.monotonic()
        stop_load, stop_watch = threading.Event(), threading.Event()
        answered: dict[str, int] = {}
        errors: list[str] = []

        def client(i: int) -> None:
            n = i
            while not stop_load.is_set():
                try:
                    replica = stream(base, model, PROMPTS[n % len(PROMPTS)], args.max_tokens)
                except Exception as e:  # noted and shown; the load goes on
                    errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.2)
                    continue
                finally:
                    n += args.clients
                if replica not in answered:
                    events.append((time.monotonic() - t0, f"first answer from replica {replica}"))
                answered[replica] = answered.get(replica, 0) + 1

        def watch() -> None:
            last = None
            while not stop_watch.is_set():
                now = observe(base)
                if now != last:
                    states = ", ".join(f"{n} {s}" for s, n in sorted(now[0].items())) or "none"
                    events.append((time.monotonic() - t0, f"Ray: {states}; reporting: {len(now[1])}"))
                    last = now
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
        events.append((0.0, f"load start: {args.clients} streaming clients"))
        for c in clients:
            c.start()
        time.sleep(args.load_s)
        stop_load.set()
        for c in clients:
            c.join(timeout=300)
        events.append((time.monotonic() - t0, f"load end ({sum(answered.values())} streams, {len(errors)} errors)"))
        deadline = time.monotonic() + float(args.downscale_delay_s) + 120
        while time.monotonic() < deadline:
            states, reporting = observe(base)
            if states == {"RUNNING": 1} and len(reporting) == 1:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        stop_watch.set()
        watcher.join(timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for t, what in sorted(events):
        print(f"{t:7.1f} s  {what}")
    for e in errors[:5]:
        print("error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
