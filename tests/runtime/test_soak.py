"""A short run of tools/soak.py in each mode (the long ones are by hand):
Llama chats whose history is shifted when it outgrows the context, and a
server under mixed loopback load (streams, cancelled streams, bad requests);
no failures, no empty replies, no busy slot left, open files flat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "tools" / "soak.py"


def _soak(*args: str, timeout: float = 300) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout), r.stderr


def test_llama_soak_short(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ("--chats", "3", "--turns", "4", "--max-tokens", "8", "--n-ctx", "128", "--threads", "1", "--json", str(out))
    report, progress = _soak("llama", *args)
    assert json.loads(out.read_text()) == report
    # every sample is reported as it is taken, and the report so far is on disk (a killed long run keeps it)
    assert progress.count("soak ") == len(report["samples"]) and "soak 3/3 at" in progress
    partial = json.loads((tmp_path / "soak.json.partial").read_text())
    assert partial["partial"] is True and partial["samples"] == report["samples"]
    assert report["context_shifts"] > 0
    assert report["empty_replies"] == 0, report["finish_reasons"]
    assert report["fd_growth_after_warmup"] == 0
    assert report["rss_growth_mb_after_warmup"] < 32


def test_server_soak_short() -> None:
    report, _ = _soak(
        "server", "--requests", "24", "--clients", "3", "--slots", "2", "--max-tokens", "4", "--n-ctx", "512",
        "--threads", "1",
    )  # fmt: skip
    assert report["errors"] == 0, report["first_errors"]
    assert report["busy_slots_at_end"] == 0 and report["health_at_end"] == 200
    assert set(report["latency_seconds"]) >= {"bad", "cancelled", "chat_stream", "completion"}
    assert report["fd_growth_after_warmup"] <= 2  # a keep-alive connection may still be closing
