"""OpenAI's API family: /v1/chat/completions, /v1/completions, /v1/models,
/v1/embeddings, in OpenAI's shapes (chunks over SSE ending in [DONE],
stream_options.include_usage, n choices). Every request becomes n sequences
on the shared engine; a client that goes away cancels them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from lamina.fim import FimError, infill_tokens, require_fim
from lamina.logprobs import LogprobsShape, TokenLogprob, prompt_logprobs
from lamina.sampling import SamplingParams
from lamina.server import bridge
from lamina.server.errors import APIError, error_body
from lamina.server.lora_routes import request_scales
from lamina.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Sampling
from lamina.server.service import Service
from lamina.tool_calls import ToolCallError, plan_tools, prompt_inputs, reply_grammar

# llama-server's sampling defaults, for fields a request leaves out
SERVER_DEFAULTS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)


def _finish(reason: str | None) -> str | None:
    return "length" if reason == "context" else reason


def router(service: Service) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": service.config.model_name, "object": "model", "created": service.created, "owned_by": "lamina"}
            ],
        }

    @r.post("/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        session = _checked(service, body)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        for i, m in enumerate(body.messages):
            service.check_text_length(m.text(), f"messages.{i}.content")
        messages = [m.template_message() for m in body.messages]
        try:
            template = session.template.source
            plan = plan_tools(template, body.tools, body.tool_choice, body.parallel_tool_calls)
            prompt = session.chat_tokens(*prompt_inputs(plan, messages, template))
        except ToolCallError as e:
            raise APIError(400, str(e), param=e.field) from None
        except ValueError as e:  # the template refused the conversation (roles out of order, ...)
            raise APIError(400, str(e), param="messages") from None
        return await _generate(service, body, request, prompt, body.limit(), chat=True, echo="", tools=plan)

    @r.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        session = _checked(service, body)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(
                    400, "prompt: a list of several prompts is not supported; send one request each", param="prompt"
                )
            prompt = prompt[0]
        if isinstance(prompt, str):
            service.check_text_length(prompt, "prompt")
        if body.suffix is not None:
            service.check_text_length(body.suffix, "suffix")
            try:
                fim = require_fim(session.model.native.gguf.metadata, session.tokenizer)
            except FimError as e:
                raise APIError(400, str(e), param="suffix", code="unsupported_parameter") from None
            prefix = prompt if isinstance(prompt, str) else [int(t) for t in prompt]
            tokens = infill_tokens(session.tokenizer, fim, prefix, body.suffix)
        elif isinstance(prompt, str):
            tokens = session.tokenizer.encode(prompt, special=True) if prompt else _bos(session)
        else:
            tokens = [int(t) for t in prompt]
        text = prompt if isinstance(prompt, str) else session.tokenizer.decode(prompt).decode("utf-8", "replace")
        shape = None
        if body.logprobs is not None:
            head = None
            if body.echo and body.suffix is None:  # the prompt's own logprobs, listed first
                service.check_prompt(tokens, None, "prompt")
                head = await _prompt_logprobs(session, tokens, body.logprobs)
            shape = lambda: LogprobsShape(
                session.tokenizer, prompt_text=text, prompt_tokens=tokens, prompt_entries=head
            )
        echo = text if body.echo else ""
        return await _generate(service, body, request, tokens, body.limit(), chat=False, echo=echo, shape=shape)

    @r.post("/embeddings")
    async def embeddings(body: EmbeddingRequest):
        session = service.require()
        service.check_model(body.model)
        if body.dimensions is not None:
            raise APIError(400, "dimensions is not supported: the vector has the model's width", param="dimensions")
        raw = body.input
        # one text, one token list, or a list of either
        inputs: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        if not inputs:
            raise APIError(400, "input is empty", param="input")
        token_lists = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                service.check_text_length(item, f"input.{i}")
                tokens = session.tokenizer.encode(item, special=True)
            else:
                tokens = [int(t) for t in item]
            service.check_prompt(tokens, None, f"input.{i}")
            token_lists.append(tokens)
        vectors = await asyncio.to_thread(session.embed_many, token_lists)
        data = []
        for i, v in enumerate(vectors):
            emb: Any = v.astype(np.float32).tolist()
            if body.encoding_format == "base64":
                emb = base64.b64encode(v.astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(t) for t in token_lists)
        return {
            "object": "list",
            "data": data,
            "model": service.config.model_name,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }

    return r


def _checked(service: Service, body: Sampling):
    session = service.require()
    service.check_model(body.model)
    service.check_unsupported(body)
    return session


def _bos(session) -> list[int]:
    bos = session.tokenizer.bos_id
    return [bos] if bos is not None else []


async def _prompt_logprobs(session, tokens: list[int], n: int):
    """The prompt tokens' logprobs (completions' echo), from one evaluation of
    the prompt in the spare sequence, between two engine steps."""
    seq = session.spare_seq
    if seq is None:
        raise APIError(400, "echo with logprobs needs a CPU context (a spare sequence)", param="echo")

    def run():
        with session.engine.exclusive() as ctx:
            return prompt_logprobs(ctx, seq, tokens, n)

    return await asyncio.to_thread(run)


async def _generate(
    service: Service,
    body,
    request: Request,
    prompt: list[int],
    limit,
    chat: bool,
    echo: str,
    tools=None,
    shape=None,
):
    """tools: the chat's tool plan (lamina.tool_calls); shape: a factory of each
    choice's LogprobsShape (completions' logprobs); chat makes its own."""
    service.check_prompt(prompt, limit, "messages" if chat else "prompt")
    session = service.require()
    stops = body.stops()
    try:  # checked before anything starts: a bad one is a 400
        grammar = reply_grammar(tools, service.grammar(body))
    except ToolCallError as e:
        raise APIError(400, str(e), param=e.field) from None
    lora = request_scales(service, body.lora)  # lora_routes.py
    n_logprobs = body.n_logprobs()
    if chat and n_logprobs is not None:
        shape = lambda: LogprobsShape(session.tokenizer, chat=True)
    shapes = [shape() if shape is not None else None for _ in range(body.n)]
    spec = service.speculative(body, grammar, service.sampler(body, 0, SERVER_DEFAULTS), n_logprobs)  # likewise
    gens = [
        bridge.start(
            session.engine,
            prompt,
            service.sampler(body, i, SERVER_DEFAULTS),
            limit,
            stops,
            service.metrics,
            grammar,
            lora,
            n_logprobs,
            spec,
        )
        for i in range(body.n)
    ]
    deadline = time.monotonic() + service.config.timeout
    meta = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": service.config.model_name,
    }
    endpoint = "chat" if chat else "completions"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        service.metrics.requests.labels(endpoint, "200").inc()
        events = _sse(gens, meta, chat, echo, include_usage, deadline, shapes, tools)
        return EventSourceResponse(events, ping=15, sep="\n")
    try:
        collected = await asyncio.gather(*(_collect(g, deadline, request) for g in gens))
    except APIError as e:
        service.metrics.requests.labels(endpoint, str(e.status)).inc()
        raise
    finally:
        for g in gens:
            g.request.cancel() if g.finish_reason is None else None
    if await request.is_disconnected():
        return JSONResponse(error_body(400, "the client went away"), status_code=400)
    service.metrics.requests.labels(endpoint, "200").inc()
    usage = _usage(gens)
    texts = [t for t, _ in collected]
    logprobs = [None if sh is None else sh.final(e) for sh, (_, e) in zip(shapes, collected)]
    if chat:
        choices = []
        for i, (g, t, lp) in enumerate(zip(gens, texts, logprobs)):
            message, finish = {"role": "assistant", "content": t}, _finish(g.finish_reason)
            if tools is not None:
                message, finish = tools.message(t, finish)
            choices.append({"index": i, "message": message, "logprobs": lp, "finish_reason": finish})
        return {**meta, "object": "chat.completion", "choices": choices, "usage": usage}
    choices = [
        {"index": i, "text": echo + t, "logprobs": lp, "finish_reason": _finish(g.finish_reason)}
        for i, (g, t, lp) in enumerate(zip(gens, texts, logprobs))
    ]
    return {**meta, "object": "text_completion", "choices": choices, "usage": usage}


def _delta(meta: dict[str, Any], i: int, delta: dict[str, Any]) -> str:
    choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
    return json.dumps({**meta, "object": "chat.completion.chunk", "choices": [choice]})


def _usage(gens) -> dict[str, Any]:
    prompt = gens[0].n_prompt * len(gens)
    completion = sum(g.n_generated for g in gens)
    # OpenAI's field: prompt tokens whose cache was reused (a slot's prefix, a restored slot)
    cached = sum(g.n_prompt - g.request.timings.prompt_tokens for g in gens)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


async def _collect(gen: bridge.Generation, deadline: float, request: Request) -> tuple[str, list[TokenLogprob]]:
    """The choice's text and its tokens' logprobs (when asked for)."""
    out, entries = [], []
    async for piece in gen.pieces(deadline, request.is_disconnected):
        out.append(piece.text)
        if piece.logprob is not None:
            entries.append(piece.logprob)
    return "".join(out), entries


async def _sse(
    gens, meta, chat: bool, echo: str, include_usage: bool, deadline: float, shapes=None, tools=None
) -> AsyncIterator[str]:
    """OpenAI's chunk stream for n choices at once, then usage (if asked) and [DONE].
    Cancelled by sse-starlette when the client disconnects: every choice is cancelled.
    shapes: each choice's LogprobsShape (None: no logprobs); a chunk carries
    the logprobs of the tokens whose text it releases. With tools, each
    choice's text goes through a ToolStream (lamina.tool_calls.stream), and
    its logprobs ride on the final chunk."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    shapes = shapes or [None] * len(gens)
    pending: list[list[TokenLogprob]] = [[] for _ in gens]
    streams = [tools.stream() for _ in gens] if tools is not None else None

    def chunk(i: int, text: str | None, finish: str | None, role: bool = False, logprobs: Any = None) -> str:
        if logprobs is None and pending[i] and shapes[i] is not None:
            logprobs = shapes[i].chunk(pending[i])
            pending[i] = []
        if chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        return json.dumps({**meta, "object": obj, "choices": [choice]})

    merged: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, g: bridge.Generation) -> None:
        try:
            async for piece in g.pieces(deadline):
                await merged.put((i, piece, None))
        except APIError as e:
            await merged.put((i, None, e))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    try:
        for i in range(len(gens)):
            # with tools, no content until there is some: a reply of only calls has content null
            head = None if chat or shapes[i] is None else shapes[i].prompt()
            yield chunk(i, None if streams is not None else "" if chat else echo, None, role=chat, logprobs=head)
            if chat and echo:
                yield chunk(i, echo, None)
        done = 0
        while done < len(gens):
            i, piece, error = await merged.get()
            if piece is not None and piece.logprob is not None:
                pending[i].append(piece.logprob)
            if error is not None:
                yield json.dumps(error_body(error.status, error.message, error.param, error.code))
                return
            finish = _finish(piece.finish_reason)
            if streams is not None:
                s = streams[i]
                for delta in s.feed(piece.text) + (s.finish() if finish else []):
                    yield _delta(meta, i, delta)
                if finish == "stop" and s.reply is not None and s.reply.tool_calls:
                    finish = "tool_calls"
            elif piece.text:
                yield chunk(i, piece.text, None)
            if finish is not None:
                done += 1
                yield chunk(i, None if chat else "", finish)
        if include_usage:
            yield json.dumps({**meta, "object": obj, "choices": [], "usage": _usage(gens)})
        yield "[DONE]"
    finally:
        for t in tasks:
            t.cancel()
        for g in gens:
            if g.finish_reason is None:
                g.request.cancel()
