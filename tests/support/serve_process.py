"""A real `lamina serve` for the server tests: started as this interpreter's
`python -m lamina serve MODEL` on 127.0.0.1 at a free port, waited for until
/health answers (bounded), and stopped (terminate, then kill)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

START_TIMEOUT = 180  # seconds for the server to load and answer /health


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, *flags: str, timeout: float = START_TIMEOUT) -> tuple[subprocess.Popen, str]:
    """(the process, its base URL) once /health answers 200; the process is
    stopped again if it never does."""
    port = free_port()
    cmd = [sys.executable, "-m", "lamina", "serve", model, "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lamina serve exited {proc.returncode}: {proc.stdout.read()}")
            if time.monotonic() > deadline:
                raise TimeoutError("lamina serve did not become healthy")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
