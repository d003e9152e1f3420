"""/metrics in Prometheus' text format (prometheus-client, one registry per
server): requests by endpoint and status, tokens in and out, generation
speed, queue depth and busy slots, time to first token and inter-token
latency as histograms."""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SPEED_WINDOW = 10.0  # seconds over which lamina_generation_tokens_per_second is averaged


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "lamina_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("lamina_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.completion_tokens = Counter("lamina_completion_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "lamina_time_to_first_token_seconds", "from arrival to the first token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.itl = Histogram(
            "lamina_inter_token_latency_seconds",
            "between two tokens of one stream",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("lamina_queue_depth", "requests waiting for a slot", registry=r)
        self.busy_slots = Gauge("lamina_busy_slots", "slots generating", registry=r)
        self.slots = Gauge("lamina_slots", "slots in all", registry=r)
        self.speed = Gauge(
            "lamina_generation_tokens_per_second", f"tokens generated per second, last {SPEED_WINDOW:.0f} s", registry=r
        )
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()
        self.speed.set_function(self._tokens_per_second)

    def token(self) -> None:
        self.completion_tokens.inc()
        now = time.monotonic()
        with self._lock:
            self._recent.append(now)

    def _tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0] < now - SPEED_WINDOW:
                self._recent.popleft()
            return len(self._recent) / SPEED_WINDOW

    def render(self) -> bytes:
        return generate_latest(self.registry)
