"""The ASGI app of `lamina serve`: FastAPI routers per API family, the body
cap first, the API key on every route but /health, CORS only for the origins
given, and the model loaded in the background at startup."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from lamina import __version__
from lamina.server import errors, llama_routes, lora_routes, openai_routes, rerank_routes, slot_routes
from lamina.server.auth import check_key
from lamina.server.drain import Drain, DrainState
from lamina.server.errors import error_body
from lamina.server.limits import BodyLimit
from lamina.server.service import Service


def create_app(service: Service, load_in_background: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=service.load, name="lamina-load", daemon=True)
        if load_in_background:
            loader.start()
        yield
        service.close()

    app = FastAPI(title="lamina", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    errors.install(app)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:  # a bug, never the client's doing: say so, keep serving
        return JSONResponse(error_body(500, f"internal error: {type(e).__name__}: {e}"), status_code=500)

    def authorized(request: Request) -> None:
        check_key(request, service.config.api_keys)

    app.include_router(llama_routes.public_router(service))
    app.include_router(llama_routes.router(service), dependencies=[Depends(authorized)])
    app.include_router(openai_routes.router(service), dependencies=[Depends(authorized)])
    app.include_router(slot_routes.router(service), dependencies=[Depends(authorized)])
    app.include_router(lora_routes.router(service), dependencies=[Depends(authorized)])
    app.include_router(rerank_routes.router(service), dependencies=[Depends(authorized)])
    if service.config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=service.config.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimit, max_bytes=service.config.max_body)
    app.state.drain = DrainState()  # outermost: a request refused while draining is never read
    app.add_middleware(Drain, state=app.state.drain)
    return app
