"""From the engine's thread to the event loop: a request's Pieces land on an
asyncio queue (the engine calls the listener, the loop gets them through
call_soon_threadsafe), so a stream costs no thread of its own while it
waits. Leaving early (a client gone, a timeout) cancels the request, which
frees its slot at the engine's next step."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from lamina.engine.engine import Engine, QueueFullError
from lamina.engine.request import Piece, Request
from lamina.grammar import Grammar
from lamina.sampling import Sampler
from lamina.server.errors import APIError
from lamina.server.metrics import Metrics
from lamina.speculative import Speculative


class Generation:
    """One choice of a request: an engine request and its pieces on the loop."""

    def __init__(self, request: Request, queue: asyncio.Queue[Piece], metrics: Metrics) -> None:
        self.request, self._queue, self._metrics = request, queue, metrics
        self.n_prompt = len(request.prompt)
        self.n_generated = 0
        self.finish_reason: str | None = None

    async def pieces(self, deadline: float, disconnected: Callable[[], object] | None = None) -> AsyncIterator[Piece]:
        """The pieces until the final one. disconnected: an async check polled while waiting."""
        last = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise APIError(504, "the request ran out of time (--timeout)", code="timeout")
                try:
                    piece = await asyncio.wait_for(self._queue.get(), timeout=min(left, 1.0))
                except asyncio.TimeoutError:
                    if disconnected is not None and await disconnected():  # type: ignore[misc]
                        return
                    continue
                now = time.perf_counter()
                if piece.token is not None:
                    self.n_generated += 1
                    self._metrics.token()
                    if last is None:
                        self._metrics.ttft.observe(now - self.request.timings.submitted)
                    else:
                        self._metrics.itl.observe(now - last)
                    last = now
                if piece.finish_reason is not None:
                    self.finish_reason = piece.finish_reason
                    self._metrics.prompt_tokens.inc(self.n_prompt)
                    if piece.finish_reason == "error":
                        raise APIError(500, f"the generation failed: {piece.error}")
                yield piece
                if piece.finish_reason is not None:
                    return
        finally:
            if self.finish_reason is None:
                self.request.cancel()


def start(
    engine: Engine,
    prompt: Sequence[int],
    sampler: Sampler,
    max_tokens: int | None,
    stops: Sequence[str],
    metrics: Metrics,
    grammar: Grammar | None = None,
    lora: Sequence[float] | None = None,
    logprobs: int | None = None,
    speculative: Speculative | None = None,
) -> Generation:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Piece] = asyncio.Queue()

    def listener(piece: Piece) -> None:
        # a RuntimeError: the loop is gone (shutdown), nobody is listening any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, piece)

    try:
        request = engine.submit(
            prompt,
            sampler,
            max_tokens=max_tokens,
            stops=stops,
            listener=listener,
            grammar=grammar,
            lora=lora,
            logprobs=logprobs,
            speculative=speculative,
        )
    except QueueFullError as e:
        raise APIError(503, str(e), code="queue_full", headers={"Retry-After": "1"}) from None
    return Generation(request, queue, metrics)
