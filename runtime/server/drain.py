"""Graceful shutdown for `lamina serve`: on the first SIGTERM/SIGINT the
server drains — requests already in flight (streams included) run to their
end, every new request gets a 503 with Retry-After and Connection: close
(/health too, so a load balancer stops sending) — and once none is left, or
after the grace period, uvicorn stops and the process exits 0. A second signal
stops at once."""

from __future__ import annotations

import json
import threading

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.server.errors import error_body


class DrainState:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.active = 0
        self.draining = False

    def enter(self) -> bool:
        """Count a request in; False once draining (it must be refused)."""
        with self._cond:
            if self.draining:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def start(self) -> None:
        with self._cond:
            self.draining = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is in flight, False if `timeout` seconds pass first."""
        with self._cond:
            return self._cond.wait_for(lambda: self.active == 0, timeout)


class Drain:
    """ASGI middleware: counts requests in flight, refuses new ones while draining."""

    def __init__(self, app: ASGIApp, state: DrainState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.state.enter():
            await _refuse(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.leave()


async def _refuse(send: Send) -> None:
    body = json.dumps(error_body(503, "the server is shutting down", code="shutting_down")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"5"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM/SIGINT drains, and the process
    exits 0 afterwards (uvicorn would re-raise the signal and die of it)."""

    def __init__(self, config: uvicorn.Config, drain: DrainState, grace: float) -> None:
        super().__init__(config)
        self.drain, self.grace = drain, grace

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.drain.draining:  # a second signal: stop now
            self.force_exit = self.should_exit = True
            return
        self.drain.start()
        threading.Thread(target=self._stop_when_idle, name="lamina-drain", daemon=True).start()

    def _stop_when_idle(self) -> None:
        self.drain.wait_idle(self.grace)
        self.should_exit = True
