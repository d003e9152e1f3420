"""Ray Serve's request router for lamina replicas: prefix-aware, falling
back to least-loaded.

A request with a routing key (lamina.server.route_key: the start of its
conversation) goes first to the replica that rendezvous hashing picks for
that key among the live ones, so a chat's every turn meets the slot that
still holds its KV cache; a replica that dies or is added moves only the
keys it wins or held. When that replica is full (max_ongoing_requests),
or the request has no key, the rest are tried and Ray's queue-length probe
takes the least loaded of them."""

from __future__ import annotations

import hashlib

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

ROUTE_KEY = "route_key"  # the keyword argument of the replica's call that carries the key


def _weight(key: str, replica: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{replica}".encode(), digest_size=8).digest(), "big")


def rendezvous(key: str, replicas: list[str]) -> str:
    """The replica that owns `key`: the highest hash of (key, replica)."""
    return max(replicas, key=lambda r: _weight(key, r))


class PrefixHashRouter(RequestRouter):
    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = pending_request.kwargs.get(ROUTE_KEY) if pending_request is not None else None
        if pending_request is not None:
            # when every replica is full, wait between tries instead of spinning
            pending_request.routing_context.should_backoff = True
        if not key:
            return [list(candidate_replicas)]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        owner = by_id[rendezvous(key, sorted(by_id))]
        rest = [r for r in candidate_replicas if r is not owner]
        return [[owner], rest] if rest else [[owner]]
