"""A generation request as the engine tracks it: a plain state object the
scheduler reads to decide and the engine updates as it runs (vLLM's split).
Its consumer reads Pieces from `events` in another thread."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from lamina.engine.text_stream import TextStream
from lamina.grammar import Matcher
from lamina.logprobs import TokenLogprob
from lamina.sampling import Sampler

if TYPE_CHECKING:
    from lamina.speculative.step import SpecState

_ids = itertools.count()


class RequestState(Enum):
    WAITING = "waiting"  # queued, no slot yet
    PREFILL = "prefill"  # in a slot, prompt tokens still to evaluate
    DECODE = "decode"  # generating: one token per step
    FINISHED = "finished"


@dataclass
class Piece:
    """One step of a streamed generation."""

    token: int | None  # None for the final event
    text: str  # text released by this step (may be "")
    finish_reason: str | None = None  # "stop" | "length" | "context" | "cancelled" | "error" on the final event
    error: BaseException | None = None  # what went wrong, with finish_reason "error"
    logprob: TokenLogprob | None = None  # the token's, when the request asked for logprobs


@dataclass
class RequestTimings:
    submitted: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0  # prompt tokens evaluated (those reused from a slot's cache excluded)
    prompt_seconds: float = 0.0  # time of the steps that evaluated them
    first_token: float | None = None
    last_token: float | None = None
    sampled: int = 0  # tokens generated

    @property
    def gen_seconds(self) -> float:
        return (self.last_token - self.first_token) if self.first_token and self.last_token else 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        # tokens after the first, over the time between the first and the last
        return (self.sampled - 1) / self.gen_seconds if self.gen_seconds > 0 else 0.0


class Request:
    def __init__(
        self,
        prompt: list[int],
        sampler: Sampler,
        stream: TextStream,
        max_tokens: int | None,
        eog: frozenset[int],
        listener: Callable[[Piece], None] | None = None,
        grammar: Matcher | None = None,
        logprobs: int | None = None,
    ) -> None:
        """listener: called with each Piece from the engine's thread instead of
        queueing it on `events` (the server hands pieces to its event loop).
        grammar: this sequence's own matcher of a constraint on the output.
        logprobs: each Piece carries its token's logprob and this many alternatives."""
        self.id = next(_ids)
        self.prompt = prompt
        self.sampler = sampler
        self.text = stream
        self.max_tokens = max_tokens
        self.eog = eog
        self.grammar = grammar
        self.logprobs = logprobs
        self.spec: SpecState | None = None  # speculative decoding's state (lamina.speculative), when it drafts
        self.state = RequestState.WAITING
        self.slot: int | None = None
        self.n_cached = 0  # prompt tokens whose KV is in the slot (reused or evaluated)
        self.lora: tuple[float, ...] | None = None  # a scale per LoRA adapter (lamina.engine.lora)
        self.output: list[int] = []  # sampled tokens
        self.finish_reason: str | None = None
        self.timings = RequestTimings()
        self.events: queue.SimpleQueue[Piece] = queue.SimpleQueue()
        self._listener = listener
        self._cancelled = threading.Event()
        self._done = threading.Event()

    # ------------------------------------------------------------ consumer side
    def cancel(self) -> None:
        """Stop generating; the engine frees the slot at its next step."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine has finished the request (True) or timeout passed."""
        return self._done.wait(timeout)

    def pieces(self) -> Iterator[Piece]:
        """The stream, until its final Piece; closing the iterator early cancels the request."""
        try:
            while True:
                piece = self.events.get()
                yield piece
                if piece.finish_reason is not None:
                    return
        finally:
            if self.state is not RequestState.FINISHED:
                self.cancel()

    # -------------------------------------------------------------- engine side
    @property
    def history(self) -> list[int]:
        """The tokens the penalties look back on: prompt and output."""
        return self.prompt + self.output

    @property
    def prompt_left(self) -> int:
        return len(self.prompt) - self.n_cached

    def emit(self, piece: Piece) -> None:
        if self._listener is not None:
            self._listener(piece)
        else:
            self.events.put(piece)

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        if self.state is RequestState.FINISHED:
            return
        self.state = RequestState.FINISHED
        self.finish_reason = reason
        tail = self.text.finish(stopped=reason == "stop") if reason in ("stop", "length", "context") else ""
        self.emit(Piece(None, tail, reason, error))
        self._done.set()

    def __repr__(self) -> str:
        state = self.state.value
        return f"Request({self.id}, {state}, slot={self.slot}, prompt={len(self.prompt)}, out={len(self.output)})"
