"""`lamina serve` on SIGTERM: the stream in flight runs to its end ([DONE]),
a request arriving meanwhile gets a 503 naming the shutdown, and the process
exits 0. The model file removed (or replaced by a rename) under the running
server changes nothing: the mapping keeps the old file alive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import httpx

from lamina.model_cache import fetch_model
from support.serve_process import start_server, stop_server

PROMPT = "Count from one to one hundred: one, two, three,"


def _stream(base: str, first_chunk: threading.Event, out: dict) -> None:
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "stream": True}
    chunks = []
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as r:
        out["status"] = r.status_code
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
                first_chunk.set()
    out["chunks"] = chunks


def test_sigterm_drains_in_flight_streams_refuses_new_requests_and_exits_0(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    shutil.copyfile(fetch_model("smollm2-135m-instruct"), model)
    proc, base = start_server(str(model), "-np", "2", "-c", "512")
    try:
        # the file goes away and another takes its name: the server keeps serving from its mapping
        os.unlink(model)
        model.write_bytes(b"not a model")
        first_chunk, result = threading.Event(), {}
        client = threading.Thread(target=_stream, args=(base, first_chunk, result))
        client.start()
        assert first_chunk.wait(120), result
        proc.send_signal(signal.SIGTERM)
        late = httpx.post(f"{base}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert late.status_code == 503, late.text
        assert late.json()["error"]["code"] == "shutting_down" and late.headers["retry-after"]
        client.join(120)
        assert result["status"] == 200
        chunks = result["chunks"]
        assert chunks[-1] == "[DONE]"
        finish = [json.loads(c)["choices"][0]["finish_reason"] for c in chunks[:-1]]
        assert finish[-1] == "length" and len("".join(json.loads(c)["choices"][0]["text"] for c in chunks[:-1])) > 0
        assert proc.wait(60) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            stop_server(proc)
