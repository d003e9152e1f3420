"""`--api-key`: every endpoint but /health wants `Authorization: Bearer KEY`
(also accepted: `X-API-Key: KEY`), compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from lamina.server.errors import APIError


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.headers.get("x-api-key")


def check_key(request: Request, keys: list[str]) -> None:
    if not keys:
        return
    given = (bearer_key(request) or "").encode()
    # every key is compared, whatever matched, so the time does not tell which
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    if not ok:
        raise APIError(
            401,
            "invalid or missing API key (Authorization: Bearer KEY)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
