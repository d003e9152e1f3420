"""llama-server's own endpoints: /health (no key needed; 503 while the model
loads), /metrics, /tokenize, /detokenize."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from lamina.server.errors import APIError, error_body
from lamina.server.schemas import DetokenizeRequest, TokenizeRequest
from lamina.server.service import Service


def public_router(service: Service) -> APIRouter:
    r = APIRouter()

    @r.get("/health")
    @r.get("/v1/health")
    async def health():
        if service.ready:
            return {"status": "ok"}
        if service.load_error is not None:
            return JSONResponse(error_body(503, f"the model failed to load: {service.load_error}"), status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})

    return r


def router(service: Service) -> APIRouter:
    r = APIRouter()

    @r.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @r.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        session = service.require()
        service.check_text_length(body.content, "content")
        tok = session.tokenizer
        ids = tok.encode(body.content, add_bos=None if body.add_special else False, special=True)
        if body.with_pieces:
            pieces = [{"id": i, "piece": tok.token_to_piece(i, special=True).decode("utf-8", "replace")} for i in ids]
            return {"tokens": pieces}
        return {"tokens": ids}

    @r.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        session = service.require()
        n_vocab = session.model.n_vocab
        bad = next((t for t in body.tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise APIError(400, f"token {bad} is outside the vocabulary [0, {n_vocab})", param="tokens")
        return {"content": session.tokenizer.decode(body.tokens).decode("utf-8", "replace")}

    return r
