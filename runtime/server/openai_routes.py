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

from lamina.sampling import SamplingParams
from lamina.server import bridge
from lamina.server.errors import APIError, error_body
from lamina.server.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Sampling
from lamina.server.service import Service

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
        for i, m in enumerate(body.messages):
            service.check_text_length(m.text(), f"messages.{i}.content")
        messages = [
            {"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})} for m in body.messages
        ]
        try:
            prompt = session.chat_tokens(messages)
        except ValueError as e:  # the template refused the conversation (roles out of order, ...)
            raise APIError(400, str(e), param="messages") from None
        return await _generate(service, body, request, prompt, body.limit(), chat=True, echo="")

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
            tokens = session.tokenizer.encode(prompt, special=True) if prompt else _bos(session)
        else:
            tokens = [int(t) for t in prompt]
        echo = (prompt if isinstance(prompt, str) else session.tokenizer.decode(tokens)) if body.echo else ""
        return await _generate(service, body, request, tokens, body.limit(), chat=False, echo=echo)

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


async def _generate(service: Service, body, request: Request, prompt: list[int], limit, chat: bool, echo: str):
    service.check_prompt(prompt, limit, "messages" if chat else "prompt")
    session = service.require()
    stops = body.stops()
    grammar = service.grammar(body)  # checked before anything starts: a bad one is a 400
    spec = service.speculative(body, grammar, service.sampler(body, 0, SERVER_DEFAULTS))  # likewise
    gens = [
        bridge.start(
            session.engine,
            prompt,
            service.sampler(body, i, SERVER_DEFAULTS),
            limit,
            stops,
            service.metrics,
            grammar,
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
        return EventSourceResponse(_sse(gens, meta, chat, echo, include_usage, deadline), ping=15, sep="\n")
    try:
        texts = await asyncio.gather(*(_collect(g, deadline, request) for g in gens))
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
    if chat:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": t},
                "logprobs": None,
                "finish_reason": _finish(g.finish_reason),
            }
            for i, (g, t) in enumerate(zip(gens, texts))
        ]
        return {**meta, "object": "chat.completion", "choices": choices, "usage": usage}
    choices = [
        {"index": i, "text": echo + t, "logprobs": None, "finish_reason": _finish(g.finish_reason)}
        for i, (g, t) in enumerate(zip(gens, texts))
    ]
    return {**meta, "object": "text_completion", "choices": choices, "usage": usage}


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


async def _collect(gen: bridge.Generation, deadline: float, request: Request) -> str:
    out = []
    async for piece in gen.pieces(deadline, request.is_disconnected):
        out.append(piece.text)
    return "".join(out)


async def _sse(gens, meta, chat: bool, echo: str, include_usage: bool, deadline: float) -> AsyncIterator[str]:
    """OpenAI's chunk stream for n choices at once, then usage (if asked) and [DONE].
    Cancelled by sse-starlette when the client disconnects: every choice is cancelled."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(i: int, text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
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
            yield chunk(i, "" if chat else echo, None, role=chat)
            if chat and echo:
                yield chunk(i, echo, None)
        done = 0
        while done < len(gens):
            i, piece, error = await merged.get()
            if error is not None:
                yield json.dumps(error_body(error.status, error.message, error.param, error.code))
                return
            if piece.finish_reason is not None:
                done += 1
                if piece.text:
                    yield chunk(i, piece.text, None)
                yield chunk(i, None if chat else "", _finish(piece.finish_reason))
            elif piece.text:
                yield chunk(i, piece.text, None)
        if include_usage:
            yield json.dumps({**meta, "object": obj, "choices": [], "usage": _usage(gens)})
        yield "[DONE]"
    finally:
        for t in tasks:
            t.cancel()
        for g in gens:
            if g.finish_reason is None:
                g.request.cancel()
