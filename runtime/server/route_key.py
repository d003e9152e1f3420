"""Which conversation a request continues, as a short key for prefix-aware
routing: requests with one key go to one replica, whose slots still hold
that conversation's KV cache. The key is the start of the prompt (a chat's
messages up to its first user turn; a completion's first characters or
tokens), so every later turn of a chat, which repeats that start, shares it.

Pure and cheap: it runs on the ingress for every request, before any
validation (a body it cannot read has no key; the replica answers the 400)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

PROMPT_CHARS = 64  # a completion's prefix block: shorter prompts cost little to recompute anyway
PROMPT_TOKENS = 16


def route_key(path: str, body: bytes) -> str | None:
    """The routing key of a request to `path` with this JSON body, or None
    where the request continues nothing (GET routes, embeddings, bad JSON)."""
    if path.rstrip("/") not in ("/v1/chat/completions", "/v1/completions", "/completion", "/completions"):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    start = _chat_start(data.get("messages"))
    if start is None:
        start = _prompt_start(data.get("prompt"))
    if start is None:
        return None
    return hashlib.blake2b(json.dumps(start, sort_keys=True).encode(), digest_size=8).hexdigest()


def _chat_start(messages: Any) -> list[Any] | None:
    if not isinstance(messages, list) or not messages:
        return None
    for i, m in enumerate(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return messages[: i + 1]
    return messages[:1]


def _prompt_start(prompt: Any) -> Any:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt[:PROMPT_CHARS] if prompt else None
    if isinstance(prompt, list) and prompt:
        return prompt[:PROMPT_TOKENS]
    return None
