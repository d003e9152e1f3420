"""llama-server's rerank endpoint (/rerank, /reranking, /v1/rerank,
/v1/reranking; Jina's and Cohere's shape): a query and documents in, one
relevance score per document out, best first.

    POST /v1/rerank {"query": "what is a panda?", "documents": ["...", "..."], "top_n": 1}
    -> {"object": "list", "model": ..., "results": [{"index": 0, "relevance_score": 3.2}],
        "usage": {"prompt_tokens": 41, "total_tokens": 41}}

Scores are the cross-encoder's raw classifier output (llama.cpp's rank
pooling), not normalized. A model without a classifier head (an embedding
model, a decoder) is a 400, as llama-server answers without --reranking.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from lamina.engine.encoder_session import EncoderSession
from lamina.server.errors import APIError
from lamina.server.schemas import _Body
from lamina.server.service import Service

MAX_DOCUMENTS = 1024


class RerankRequest(_Body):
    query: str
    documents: list[str] = Field(..., max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False  # Jina/Cohere: each result carries {"document": {"text": ...}}
    model: str | None = Field(None, max_length=512)


def router(service: Service) -> APIRouter:
    r = APIRouter()

    async def rerank(body: RerankRequest) -> dict[str, Any]:
        session = service.require()
        service.check_model(body.model)
        if not isinstance(session, EncoderSession) or not session.is_reranker:
            raise APIError(
                400,
                f"{service.config.model_name} is not a reranking model: rerank needs a cross-encoder "
                "(a bert file with a classifier head, cls.output)",
                code="not_a_reranker",
            )
        if not body.documents:
            raise APIError(400, "documents is empty", param="documents")
        service.check_text_length(body.query, "query")
        for i, doc in enumerate(body.documents):
            service.check_text_length(doc, f"documents.{i}")
        scores, n = await asyncio.to_thread(session.rerank, body.query, body.documents)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n]
        results: list[dict[str, Any]] = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if body.return_documents:
                item["document"] = {"text": body.documents[i]}
            results.append(item)
        return {
            "object": "list",
            "model": service.config.model_name,
            "results": results,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }

    for path in ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking"):
        r.add_api_route(path, rerank, methods=["POST"])
    return r
