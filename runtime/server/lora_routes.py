"""llama-server's LoRA endpoints and the per-request `lora` field.

GET /lora-adapters lists the adapters loaded with --lora / --lora-scaled
([{id, path, scale, task_name, prompt_prefix}]); POST /lora-adapters with
[{id, scale}, ...] sets the scales later requests get, and a request's own
`lora: [{id, scale}]` sets its scales alone. In both, an adapter not listed
gets scale 0 (llama-server's construct_lora_list). A running request keeps
the scales it started with; a slot's cache is reused only by a request of
the same scales."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from lamina.engine.lora import LoraScaleError, LoraSet, check_scale
from lamina.generation import Session
from lamina.server.errors import APIError
from lamina.server.service import Service


def scales_from(entries: object, loras: LoraSet | None, field: str) -> tuple[float, ...]:
    """[{id, scale}] -> a scale per adapter (the unlisted: 0), or a 400 naming field"""
    if not isinstance(entries, list):
        raise APIError(400, f"{field} must be an array of {{id, scale}} objects", param=field)
    if loras is None:
        if entries:
            raise APIError(400, f"{field}: no LoRA adapter is loaded (start the server with --lora)", param=field)
        return ()
    scales = [0.0] * len(loras.adapters)
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - {"id", "scale"} or "id" not in entry:
            raise APIError(400, f"{field}: each entry must be an object {{id, scale}}, got {entry!r}", param=field)
        i, scale = entry["id"], entry.get("scale", 0.0)
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(scales):
            raise APIError(400, f"{field}: adapter id {i!r} outside [0, {len(scales)})", param=field)
        try:
            scales[i] = check_scale(scale)
        except LoraScaleError as e:
            raise APIError(400, f"{field}: {e}", param=field) from None
    return tuple(scales)


def request_scales(service: Service, lora: object) -> tuple[float, ...] | None:
    """a generation request's `lora` field: None (the current defaults) or its scales"""
    if lora is None or lora == []:  # llama-server: an empty list is no list
        return None
    return scales_from(lora, _loras(service), "lora")


def router(service: Service) -> APIRouter:
    r = APIRouter()

    @r.get("/lora-adapters")
    def list_adapters() -> list[dict[str, Any]]:
        loras = _loras(service)
        if loras is None:
            return []
        return [
            {"id": i, "path": a.path, "scale": loras.defaults[i], "task_name": a.task_name, "prompt_prefix": a.prefix}
            for i, a in enumerate(loras.adapters)
        ]

    @r.post("/lora-adapters")
    async def set_adapters(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise APIError(400, "body: expected a JSON array of {id, scale} objects", param="body") from None
        session = service.require()
        loras = _loras(service)
        scales = scales_from(body, loras, "body")

        def apply() -> None:
            if loras is not None and isinstance(session, Session):
                with session.engine.exclusive():  # between two steps
                    for i, s in enumerate(scales):
                        loras.set_default(i, s)

        await asyncio.to_thread(apply)
        return {"success": True}

    return r


def _loras(service: Service):
    """The loaded adapters (None: none; an encoder model has none)."""
    session = service.require()
    return session.loras if isinstance(session, Session) else None
