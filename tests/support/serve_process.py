"""A real `lamina serve` for the server tests: started as this interpreter's
`python -m lamina serve MODEL` on 127.0.0.1 at a free port, waited for until
/health answers (bounded), and stopped (terminate, then kill).

    with serving(model_path, "-np", "2") as base: ...      # a block's server
    server = server_fixture("smollm2-135m-instruct", ...)  # a test module's, by cached model name
    client = client_fixture()                              # the openai client of that `server`
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

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


@contextlib.contextmanager
def serving(model: str, *flags: str, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """the base URL of a server on model (a path) for the block; stopped after it, whatever happens"""
    proc, base = start_server(model, *flags, timeout=timeout)
    try:
        yield base
    finally:
        stop_server(proc)


def server_fixture(model: str, *flags: str) -> Callable[..., Any]:
    """a module-scoped fixture `server`: the base URL of a server on the cached
    model of that name (lamina.model_cache) with flags. Assign it to `server`."""

    @pytest.fixture(scope="module")
    def server() -> Iterator[str]:
        from lamina.model_cache import fetch_model

        with serving(str(fetch_model(model)), *flags) as base:
            yield base

    return server


def openai_client(base: str, api_key: str = "none", timeout: float = 120) -> Any:
    """the official openai client of the server at base (no retries: a failure shows)"""
    import openai

    return openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=timeout)


def client_fixture(api_key: str = "none", timeout: float = 120) -> Callable[..., Any]:
    """a module-scoped fixture `client`: openai_client of the module's `server` fixture"""

    @pytest.fixture(scope="module")
    def client(server: str) -> Any:
        return openai_client(server, api_key, timeout)

    return client
