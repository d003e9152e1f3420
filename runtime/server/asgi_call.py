"""One HTTP request through an ASGI app in this process, its response as a
stream of items: first ("start", status, headers), then the body's chunks as
they are sent. This is how a Ray replica serves a request the ingress
forwarded: the same FastAPI app as `lamina serve` (routes, auth, body cap,
validation), without a socket. Closing the stream early is the client going
away: the app sees http.disconnect and its task is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass(frozen=True)
class ForwardedRequest:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None = None


_END = object()


async def call(
    app: ASGIApp,
    request: ForwardedRequest,
    extra_headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> AsyncIterator[Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query,
        "headers": list(request.headers),
        "client": request.client,
        "server": None,
    }
    out: asyncio.Queue[Any] = asyncio.Queue()
    body_sent = False
    gone = asyncio.Event()

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])] + list(extra_headers)
            await out.put(("start", message["status"], headers))
        elif message["type"] == "http.response.body" and message.get("body"):
            await out.put(bytes(message["body"]))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await out.put(_END)

    task = asyncio.create_task(run())
    try:
        while True:
            item = await out.get()
            if item is _END:
                break
            yield item
        await task  # an exception the app let out is the caller's
    finally:
        gone.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
