"""Random request bodies to every POST endpoint of `lamina serve` (the
FastAPI app in-process through Starlette's TestClient, SmolLM2 loaded with a
small context so any generation ends quickly): each answer is a 2xx or a 4xx
with an OpenAI-shaped error, never a 5xx.

Input: endpoint pick, then either raw bytes as the body, or a JSON object
built from the fields the endpoint's schema knows, with values of any JSON
type (numbers at and past every range boundary)."""

from __future__ import annotations

import json
import math
import threading

import atheris

from lamina.model_cache import fetch_model
from lamina.server.app import create_app
from lamina.server.service import ServerConfig, Service

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize", "/completion")
SAMPLING = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "repeat_last_n",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
    "response_format",
    "grammar",
    "json_schema",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "typical_p",
    "mirostat",
    "tfs_z",
    "n_probs",
    "best_of",
    "lora",
]
FIELDS = {
    "/v1/chat/completions": [*SAMPLING, "messages", "max_completion_tokens", "tools", "tool_choice"],
    "/v1/completions": [*SAMPLING, "prompt", "echo", "suffix"],
    "/completion": [*SAMPLING, "prompt", "n_predict"],
    "/v1/embeddings": ["input", "model", "encoding_format", "dimensions", "user"],
    "/tokenize": ["content", "add_special", "with_pieces"],
    "/detokenize": ["tokens"],
}
INTS = (0, 1, 2, 3, 8, 9, 16, -1, -2, 255, 256, 2**31 - 1, 2**31, 2**32, 2**63, -(2**63), 10**30)
FLOATS = (0.0, 0.5, 1.0, -0.5, 2.0, 100.0, 1e300, -1e300, 1e-300, math.inf, math.nan)
WORDS = ("user", "assistant", "system", "tool", "text", "json_object", "json_schema", "hello", "<|im_end|>", "")
MAX_TOKENS = 2
_client = None
_lock = threading.Lock()


def setup() -> None:
    global _client
    from starlette.testclient import TestClient

    config = ServerConfig(model=fetch_model("smollm2-135m-instruct"), n_ctx=256, n_parallel=2, n_threads=1)
    service = Service(config)
    service.load()
    if service.load_error is not None:
        raise service.load_error
    _client = TestClient(create_app(service, load_in_background=False), raise_server_exceptions=False)


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)]
    if kind == 3:
        return FLOATS[fdp.ConsumeIntInRange(0, len(FLOATS) - 1)]
    if kind == 4:
        return WORDS[fdp.ConsumeIntInRange(0, len(WORDS) - 1)]
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 6:
        return fdp.ConsumeIntInRange(-(2**16), 2**16)
    if kind in (7, 8):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    keys = ("role", "content", "type", "text", "json_schema", "schema", "name", "include_usage", "0", "15")
    return {
        keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]: _value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 3))
    }


def _body(fdp: atheris.FuzzedDataProvider, path: str) -> bytes:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    fields = FIELDS[path]
    body: dict[str, object] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        body[fields[fdp.ConsumeIntInRange(0, len(fields) - 1)]] = _value(fdp)
    if fdp.ConsumeBool():  # mostly well-formed requests, so the checks past the schema run too
        if path == "/v1/chat/completions":
            body.setdefault("messages", [{"role": "user", "content": fdp.ConsumeUnicodeNoSurrogates(16)}])
        elif path in ("/v1/completions", "/completion"):
            body.setdefault("prompt", fdp.ConsumeUnicodeNoSurrogates(16))
    if path in ("/v1/chat/completions", "/v1/completions", "/completion"):
        # generation stays short, whatever the fuzzer asked: the cap is not what is under test
        for key in ("max_tokens", "max_completion_tokens", "n_predict"):
            if isinstance(body.get(key), int) and body[key] > MAX_TOKENS:
                body[key] = MAX_TOKENS
        body.setdefault("max_tokens", MAX_TOKENS)
    return json.dumps(body, allow_nan=True).encode()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    path = ENDPOINTS[fdp.ConsumeIntInRange(0, len(ENDPOINTS) - 1)]
    body = _body(fdp, path)
    with _lock:
        r = _client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, body[:300], r.status_code, r.text[:500])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"], r.text
