"""The batched engine: one model, one KV cache of many sequences, and a
thread that runs the scheduler's steps, so any number of callers (the
`Llama` API from several threads, the REPL, the server's requests) share one
forward pass per step.

    engine = Engine(model, context, tokenizer)      # context with n_seq_max slots
    request = engine.submit(prompt_tokens, Sampler(params, seed), max_tokens=64, stops=["\\n\\n"])
    for piece in request.pieces():                  # blocks until each piece is ready
        print(piece.text, end="")

Each step: cancelled requests leave (their slot is free at once), waiting
ones enter free slots (reusing cached prefixes), the scheduler picks the
tokens, one `Context.decode` call evaluates them all, and every request whose
logits came back samples with its own sampler and streams its text."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from lamina.engine.context import Context, ContextError, ContextFullError, Model
from lamina.engine.request import Piece, Request, RequestState
from lamina.engine.scheduler import Scheduler, StepPlan
from lamina.engine.slots import Slot, SlotTable
from lamina.engine.text_stream import TextStream
from lamina.errors import LaminaError
from lamina.grammar import Grammar
from lamina.logprobs import token_logprob
from lamina.sampling import Sampler
from lamina.speculative.draft import Draft
from lamina.speculative.step import DraftRequest, Speculative, check_draft, make_drafts, verify_step
from lamina.speculative.verify import SpeculativeError, check_sampler
from lamina.tokenizer import Tokenizer

DEFAULT_MAX_QUEUE = 64
DEFAULT_PREFILL_CHUNK = 512  # llama.cpp's n_ubatch: the most prompt tokens of one request per step


class QueueFullError(LaminaError, RuntimeError):
    """More requests are waiting than the engine's queue holds."""


class Engine:
    def __init__(
        self,
        model: Model,
        context: Context,
        tokenizer: Tokenizer,
        n_slots: int | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        """n_slots: sequences requests may use (default: all of the
        context's); the context's other sequences stay free for the caller
        (Llama's low-level eval). max_queue: requests waiting for a slot
        beyond which submit() raises QueueFullError."""
        self.model, self.context, self.tokenizer = model, context, tokenizer
        n_slots = context.n_seq_max if n_slots is None else n_slots
        if not 1 <= n_slots <= context.n_seq_max:
            raise ContextError(f"n_slots must be in [1, {context.n_seq_max}], got {n_slots}")
        if max_queue < 0:
            raise ContextError(f"max_queue must be >= 0, got {max_queue}")
        self.slots = SlotTable(n_slots)
        self.scheduler = Scheduler(context.n_batch, prefill_chunk)
        self.max_queue = max_queue
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []
        self._cond = threading.Condition()
        self._step_lock = threading.Lock()  # one forward pass at a time; exclusive() takes it too
        self._closed = False
        self.steps = 0
        self.loras: Any = None  # the context's LoraSet (lamina.engine.lora) when adapters are loaded
        self._thread = threading.Thread(target=self._loop, name="lamina-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- callers
    def submit(
        self,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int | None = None,
        stops: Sequence[str] = (),
        stop_at_eog: bool = True,
        listener: Callable[[Piece], None] | None = None,
        grammar: Grammar | None = None,
        lora: Sequence[float] | None = None,
        logprobs: int | None = None,
        speculative: Speculative | None = None,
    ) -> Request:
        """Queue a generation; its Pieces arrive on request.pieces(), or are
        handed to listener (called from the engine's thread) when given.
        grammar: the output must match it (a matcher of its own masks each
        step's logits); the request stops once the grammar is complete.
        lora: a scale per loaded adapter for this request (None: the current defaults).
        logprobs: every Piece carries its token's logprob (lamina.logprobs)
        and this many most likely alternatives.
        speculative: draft tokens and verify them in the same forward pass
        (lamina.speculative; the same tokens at temperature 0, the same
        distribution when sampling)."""
        tokens = [int(t) for t in prompt]
        if not tokens:
            raise ContextError("empty prompt: nothing to evaluate")
        bad = [t for t in tokens if not 0 <= t < self.model.n_vocab]
        if bad:
            raise ContextError(f"token {bad[0]} is outside the vocabulary [0, {self.model.n_vocab})")
        limit = self.context.n_ctx_seq
        if len(tokens) >= limit:
            raise ContextFullError(f"Requested tokens ({len(tokens)}) exceed context window of {limit}")
        if max_tokens is not None and max_tokens < 1:
            raise ContextError(f"max_tokens must be None or >= 1, got {max_tokens}")
        eog = self.tokenizer.eot_ids if stop_at_eog else frozenset()
        matcher = grammar.matcher(self.tokenizer) if grammar is not None else None  # GrammarError here, not later
        spec = self._speculation(speculative, sampler, grammar, logprobs)
        request = Request(
            tokens, sampler, TextStream(self.tokenizer, stops), max_tokens, eog, listener, matcher, logprobs
        )
        request.lora = None if lora is None and self.loras is None else self._lora_scales(lora)
        request.spec = spec
        with self._cond:
            if self._closed:
                raise ContextError("the engine is closed")
            if len(self._waiting) >= self.max_queue + len(self.slots.free()):
                raise QueueFullError(
                    f"{len(self._waiting)} requests are already waiting for one of {len(self.slots.slots)} "
                    f"slots (max_queue={self.max_queue}); retry later"
                )
            self._waiting.append(request)
            self._cond.notify()
        return request

    def _speculation(
        self, speculative: Speculative | None, sampler: Sampler, grammar: Grammar | None, logprobs: int | None
    ):
        if speculative is None:
            return None
        if not isinstance(speculative, Speculative):
            raise SpeculativeError(
                f"speculative must be a lamina.speculative.Speculative, got {type(speculative).__name__}"
            )
        if grammar is not None:
            raise SpeculativeError("speculative decoding cannot be combined with a grammar (or a JSON schema)")
        if logprobs is not None:  # verified tokens are emitted without their distribution's logprobs
            raise SpeculativeError("speculative decoding cannot be combined with logprobs")
        check_sampler(sampler)  # before a draft model opens its cache
        drafter = speculative.drafter
        if hasattr(drafter, "bind"):  # a draft model: its cache, one sequence per slot, and its cost
            ctx = self.context
            drafter.bind(self.model, len(self.slots.slots), ctx.n_ctx, ctx.n_ctx_seq, ctx.n_batch)
        return speculative.start(sampler)

    def generate(self, prompt: Sequence[int], sampler: Sampler, **kwargs) -> Iterator[Piece]:
        """submit() and stream: closing the iterator early cancels the request."""
        return self.submit(prompt, sampler, **kwargs).pieces()

    @contextmanager
    def exclusive(self) -> Iterator[Context]:
        """The context between two steps, for direct use of sequences the
        engine does not schedule (n_slots < n_seq_max)."""
        with self._step_lock:
            yield self.context

    def close(self) -> None:
        """Finish every request (cancelled), stop the thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        for r in list(self._waiting) + self._running:
            r.finish("cancelled")

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def n_busy(self) -> int:
        return sum(s.busy for s in self.slots.slots)

    # ---------------------------------------------------------- the thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._running:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self._step()
            except BaseException as e:  # a bug must not hang every caller: fail them, keep serving
                for r in self._running:
                    self._end(r, "error", e)
                self._running = []

    def _step(self) -> None:
        with self._step_lock:
            self._drop_cancelled()
            self._admit()
            plan = self.scheduler.plan(self._running)
            if not plan:
                return
            self._run(plan)
            self.steps += 1

    def _drop_cancelled(self) -> None:
        with self._cond:
            for r in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(r)
                r.finish("cancelled")
        for r in [r for r in self._running if r.cancelled]:
            self._end(r, "cancelled")

    def _admit(self) -> None:
        with self._cond:
            placed = self.scheduler.admit(list(self._waiting), self.slots)
            for _ in placed:
                self._waiting.popleft()
        for request, placement in placed:
            if self.loras is not None:  # a cache computed under other adapter scales is not reused
                placement = self.loras.admit(request.lora, placement)
            slot = placement.slot
            ctx = self.context
            if placement.copy_from is not None:
                ctx.seq_cp(placement.copy_from.seq, slot.seq, placement.keep)
            else:
                ctx.seq_rm(slot.seq, placement.keep)
            request.slot = slot.seq
            request.n_cached = placement.keep
            request.state = RequestState.PREFILL
            self._running.append(request)

    def _lora_scales(self, lora: Sequence[float] | None) -> tuple[float, ...]:
        if self.loras is None:
            raise ContextError("lora scales given, but no LoRA adapter is loaded")
        return self.loras.resolve(lora)

    def _slot(self, request: Request) -> Slot:
        return self.slots.slots[request.slot]  # type: ignore[index]

    def _drafts(self, plan: StepPlan) -> list[Draft | None]:
        """This step's draft of each decoding request that speculates (None: one token)."""
        asks, where = [], []
        for k, r in enumerate(plan.decode):
            if r.spec is not None:
                held = len(self._slot(r).tokens)
                # room: the draft, its one token and the token sampled after it fit the sequence;
                # no guesses past max_tokens
                room = self.context.n_ctx_seq - held - 2
                if r.max_tokens is not None:
                    room = min(room, r.max_tokens - len(r.output) - 1)
                asks.append(DraftRequest(r.spec, self._slot(r).seq, r.history, room, r.sampler))
                where.append(k)
        drafts: list[Draft | None] = [None] * len(plan.decode)
        if asks:
            for k, d in zip(where, make_drafts(asks, self.context.n_batch - plan.n_tokens)):
                if d is not None and (d.tokens or d.error is not None):
                    drafts[k] = d
        return drafts

    def _run(self, plan: StepPlan, speculate: bool = True) -> None:
        """One forward pass over the plan's tokens (and the drafts of the
        requests that speculate), then sampling for every request whose
        logits came back."""
        drafts = self._drafts(plan) if speculate else [None] * len(plan.decode)
        failed = []
        for r, d in zip(plan.decode, drafts):
            if d is not None:
                try:
                    if d.error is not None:
                        raise d.error
                    check_draft(d, self.model.n_vocab)
                except SpeculativeError as e:  # this request's drafter failed: it ends, the others go on
                    self._end(r, "error", e)
                    failed.append(r)
        if failed:
            kept = [(r, d) for r, d in zip(plan.decode, drafts) if r not in failed]
            plan = StepPlan(decode=[r for r, _ in kept], prefill=plan.prefill)
            drafts = [d for _, d in kept]
            if not plan:
                return
        n = plan.n_tokens + sum(len(d.tokens) for d in drafts if d is not None)
        tokens = np.empty(n, np.int32)
        pos = np.empty(n, np.int32)
        seq = np.empty(n, np.int32)
        want = np.zeros(n, np.bool_)
        owners: list[Request] = []  # whose logits row each wanted token gives (a drafting request's first)
        i = 0
        for r, d in zip(plan.decode, drafts):
            slot = self._slot(r)
            run = [r.output[-1]] + (d.tokens if d is not None else [])
            k = len(run)
            tokens[i : i + k], pos[i : i + k], seq[i : i + k], want[i : i + k] = (
                run,
                np.arange(len(slot.tokens), len(slot.tokens) + k),
                slot.seq,
                True,
            )
            owners.append(r)
            i += k
        for r, k in plan.prefill:
            slot = self._slot(r)
            chunk = r.prompt[r.n_cached : r.n_cached + k]
            tokens[i : i + k] = chunk
            pos[i : i + k] = np.arange(len(slot.tokens), len(slot.tokens) + k)
            seq[i : i + k] = slot.seq
            if r.n_cached + k == len(r.prompt):
                want[i + k - 1] = True
                owners.append(r)
            i += k
        t0 = time.perf_counter()
        try:
            logits = self.context.decode(tokens, pos, seq, want)
        except ContextFullError as e:
            if any(d is not None for d in drafts):
                self._run(plan, speculate=False)  # a shared pool too full for the guesses: plain steps
            elif self._evict_idle():
                self._run(plan)  # the same step again, in the cells the idle slot gave back
            else:
                self._shed(plan, e)
            return
        seconds = time.perf_counter() - t0
        # the cache now holds the tokens: mirror them
        for r, d in zip(plan.decode, drafts):
            self._slot(r).tokens.append(r.output[-1])
            if d is not None:
                self._slot(r).tokens.extend(d.tokens)
        for r, k in plan.prefill:
            self._slot(r).tokens.extend(r.prompt[r.n_cached : r.n_cached + k])
            r.n_cached += k
            r.timings.prompt_tokens += k
            r.timings.prompt_seconds += seconds
            if r.n_cached == len(r.prompt):
                r.state = RequestState.DECODE
        row = 0
        spec = dict(zip(map(id, plan.decode), drafts))
        for r in owners:
            d = spec.get(id(r))
            if d is None:
                self._sample(r, logits[row])
                row += 1
            else:
                self._verify(r, logits[row : row + len(d.tokens) + 1], d)
                row += len(d.tokens) + 1

    def _verify(self, r: Request, rows: np.ndarray, draft: Draft) -> None:
        """Keep the draft's accepted prefix in the cache, remove the rest, and
        emit the accepted tokens and the one sampled after them."""
        if r.cancelled:
            self._end(r, "cancelled")
            return
        assert r.spec is not None
        history = r.history
        try:
            verdict = verify_step(r.spec, r.sampler, rows, draft, history)
        except LaminaError as e:
            self._end(r, "error", e)
            return
        slot = self._slot(r)
        keep = len(slot.tokens) - len(draft.tokens) + len(verdict.accepted)
        if keep < len(slot.tokens):
            self.context.seq_rm(slot.seq, keep)  # the rejected guesses
            del slot.tokens[keep:]
        for j, token in enumerate(verdict.accepted + [verdict.next_token]):
            if not self._emit(r, token, rows[j]):  # row j: the target's logits that predicted token j
                return

    def _sample(self, r: Request, logits: np.ndarray) -> None:
        if r.cancelled:
            self._end(r, "cancelled")
            return
        if r.grammar is not None:
            try:  # the mask comes first: penalties, top-k/p and temperature see only allowed tokens
                token = r.sampler(r.grammar.mask(logits), r.history)
                r.grammar.accept(token)
            except LaminaError as e:
                self._end(r, "error", e)
                return
        else:
            token = r.sampler(logits, r.history)
        self._emit(r, token, logits)

    def _emit(self, r: Request, token: int, logits: np.ndarray) -> bool:
        """Stream one sampled token (logits: the raw row it was sampled from);
        False once the request has ended."""
        now = time.perf_counter()
        if token in r.eog:
            self._end(r, "stop")
            return False
        r.output.append(token)
        t = r.timings
        t.sampled += 1
        t.first_token = t.first_token or now
        t.last_token = now
        text, stopped = r.text.feed(token)
        # from the raw row: the model's distribution, before bias, penalties and mask (lamina.logprobs)
        logprob = None if r.logprobs is None else token_logprob(logits, token, r.logprobs)
        r.emit(Piece(token, text, logprob=logprob))
        if stopped or (r.grammar is not None and r.grammar.done):
            self._end(r, "stop")
        elif r.max_tokens is not None and len(r.output) >= r.max_tokens:
            self._end(r, "length")
        elif len(self._slot(r).tokens) + 1 > self.context.n_ctx_seq:
            self._end(r, "context")  # no room to evaluate the token just sampled
        else:
            return True
        return False

    def _evict_idle(self) -> bool:
        """Free the cells of the least recently used idle slot that holds any.
        An idle slot's cache is only kept for reuse: a unified pool full of
        finished chats must not end a new request with "context" (it did,
        with 0 tokens, once a few chats had filled the pool)."""
        idle = [s for s in self.slots.slots if not s.busy and s.tokens]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        self.context.seq_rm(victim.seq, 0)
        victim.tokens = []
        return True

    def _shed(self, plan: StepPlan, error: ContextFullError) -> None:
        """The shared cache cannot take this step's tokens (a unified pool
        overcommitted by long sequences): prompts wait, and if decoding alone
        does not fit either, the newest decoding request ends with "context"."""
        if plan.prefill and plan.decode:
            self._run(StepPlan(decode=plan.decode))
            return
        victims = plan.decode or [r for r, _ in plan.prefill]
        self._end(victims[-1], "context", error)

    def _end(self, r: Request, reason: str, error: BaseException | None = None) -> None:
        r.finish(reason, error)
        if r in self._running:
            self._running.remove(r)
        if r.slot is not None:
            self.slots.release(self._slot(r))
