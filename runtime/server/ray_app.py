"""`lamina serve` as replicas on Ray Serve, behind one OpenAI-compatible
endpoint (`lamina serve MODEL --replicas N`, or your own Ray app):

    from pathlib import Path
    from ray import serve
    from lamina.server.ray_app import build_app
    from lamina.server.service import ServerConfig

    config = ServerConfig(model=Path("/models/smollm2.gguf"), n_threads=4, n_parallel=4)
    serve.run(build_app(config, replicas=2), name="lamina", route_prefix="/")

or `serve run lamina.server.ray_app:app_builder model=/models/smollm2.gguf replicas=2 threads=4`.

Two deployments. LaminaReplica: one model, engine and slots, serving the
very FastAPI app of the single server (lamina.server.app: routes, API keys,
body cap, validation) through an in-process ASGI call, so a request is
handled by one code path whether it came over a socket or from Ray.
LaminaIngress: what Ray's HTTP proxy calls; it reads the body (capped),
takes its routing key (the conversation's start) and forwards the request
to a replica through a handle whose router (lamina.server.ray_router) keeps
a conversation on the replica holding its KV cache; responses, SSE
included, stream back chunk by chunk. It answers /metrics itself: every
replica's metrics, pushed each second to a small board actor, merged under
a `replica` label.

Autoscaling: given Ray's autoscaling_config fields (build_app's
`autoscaling`, checked by lamina.server.ray_autoscaling), Ray's autoscaler
sets the replica count from the requests the ingress's handle reports; the
router's hash ring follows the live replicas, and /metrics adds Ray's own
count by state (serve.status()).

Faults: a replica that dies is restarted by Ray (its health check fails);
its in-flight requests end with a 503 `replica_died` (mid-stream: an SSE
error event), and the router sends new requests to the live ones.
Shutdown (serve.delete / SIGTERM to `lamina serve`) drains: the replicas
finish what they hold, for up to SHUTDOWN_DRAIN_S.

This is the only module that imports ray (with lamina.server.ray_router);
install it with pip install "lamina[ray]"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, cast

import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RequestCancelledError,
)
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.server import asgi_call, metrics_merge
from lamina.server.auth import check_key
from lamina.server.errors import APIError, error_body, error_response
from lamina.server.ray_autoscaling import KNOBS, autoscaling_config
from lamina.server.ray_router import ROUTE_KEY
from lamina.server.route_key import route_key
from lamina.server.service import ServerConfig

APP_NAME = "lamina"
REPLICA_DEPLOYMENT = "LaminaReplica"
REPLICA_HEADER = b"x-lamina-replica"  # which replica answered: where a conversation's KV lives
METRICS_PUSH_S = 1.0
METRICS_STALE_S = 10.0  # a replica silent this long (dead, gone) leaves /metrics
SHUTDOWN_DRAIN_S = 30.0  # as the single server's uvicorn graceful shutdown
_DIED = (ActorDiedError, ActorUnavailableError, RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


def _died_error() -> APIError:
    return APIError(
        503,
        "the replica serving this request died; its output is lost. Retry: new requests go to the live replicas",
        code="replica_died",
        headers={"Retry-After": "1"},
    )


# --------------------------------------------------------------- metrics
@ray.remote(num_cpus=0)
class MetricsBoard:
    """The latest /metrics text of each replica, with when it came."""

    def __init__(self) -> None:
        self.texts: dict[str, tuple[float, str]] = {}
        self.gone: set[str] = set()

    def push(self, replica: str, text: str) -> None:
        if replica not in self.gone:  # a push that crossed the replica's goodbye
            self.texts[replica] = (time.time(), text)

    def drop(self, replica: str) -> None:
        """a replica that stops (scaled down, deleted) leaves /metrics at once"""
        self.gone.add(replica)
        self.texts.pop(replica, None)

    def snapshot(self, max_age: float) -> dict[str, str]:
        now = time.time()
        return {r: t for r, (at, t) in self.texts.items() if now - at <= max_age}


def _board(app_name: str):
    return MetricsBoard.options(  # type: ignore[attr-defined]
        name=f"lamina-metrics-{app_name}", namespace="lamina", get_if_exists=True, lifetime="detached"
    ).remote()


# --------------------------------------------------------------- replica
@serve.deployment(
    # by its import path: the router runs in the ingress's process, wherever that is
    # (its stubs want a dict there, though the field takes a class or its path)
    request_router_config=cast(Any, RequestRouterConfig)(
        request_router_class="lamina.server.ray_router:PrefixHashRouter"
    ),
    graceful_shutdown_timeout_s=SHUTDOWN_DRAIN_S,
    graceful_shutdown_wait_loop_s=1.0,
    health_check_period_s=2.0,
    health_check_timeout_s=10.0,
    max_constructor_retry_count=3,
    logging_config={"log_level": "WARNING", "enable_access_log": False},
)
class LaminaReplica:
    def __init__(self, config: ServerConfig) -> None:
        from lamina.server.app import create_app
        from lamina.server.service import Service

        self.service = Service(config)
        self.service.load()
        if self.service.load_error is not None:
            raise RuntimeError(f"lamina replica: the model failed to load: {self.service.load_error}")
        self.app = create_app(self.service, load_in_background=False)
        ctx = serve.get_replica_context()
        self.name = ctx.replica_id.unique_id
        self.header = [(REPLICA_HEADER, self.name.encode())]
        self.board = _board(ctx.app_name)
        # where this replica runs, for operators (and the fault test): which process on which node
        node = ray.util.get_node_ip_address()
        self.whereabouts = (
            "# HELP lamina_replica_process the node and process of this replica\n"
            "# TYPE lamina_replica_process gauge\n"
            f'lamina_replica_process{{node="{node}",pid="{os.getpid()}"}} 1.0\n'
        )
        self._stop = threading.Event()
        threading.Thread(target=self._push_metrics, name="lamina-metrics-push", daemon=True).start()

    def _push_metrics(self) -> None:
        while not self._stop.wait(METRICS_PUSH_S):
            with contextlib.suppress(Exception):  # the board restarting is no reason to stop
                self.board.push.remote(self.name, self.service.metrics.render().decode() + self.whereabouts)

    async def http(self, request: asgi_call.ForwardedRequest, route_key: str | None = None) -> AsyncIterator[Any]:
        async for item in asgi_call.call(self.app, request, self.header):
            yield item

    def check_health(self) -> None:
        if self.service.session is None:
            raise RuntimeError("the model is not loaded")

    def __del__(self) -> None:
        # Ray calls this once the replica has drained (scaled down, deleted)
        self._stop.set()
        with contextlib.suppress(Exception):
            self.board.drop.remote(self.name)
        self.service.close()


# --------------------------------------------------------------- ingress
@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=1024,
    logging_config={"log_level": "WARNING", "enable_access_log": False},
)
class LaminaIngress:
    def __init__(self, replicas, config: ServerConfig) -> None:
        self.replicas = replicas.options(method_name="http", stream=True)
        self.config = config
        self.app_name = serve.get_replica_context().app_name
        self.board = _board(self.app_name)

    async def __call__(self, request: Request) -> Response:
        try:
            path = request.scope["path"]
            if request.method == "GET" and path.rstrip("/") == "/metrics":
                return await self._metrics(request)
            body = await self._body(request)
        except APIError as e:
            return error_response(e)
        forwarded = asgi_call.ForwardedRequest(
            method=request.method,
            path=path,
            query=request.scope.get("query_string", b""),
            headers=list(request.headers.raw),
            body=body,
            client=tuple(request.client) if request.client else None,  # type: ignore[arg-type]
        )
        stream = self.replicas.remote(forwarded, **{ROUTE_KEY: route_key(path, body)})
        patience = self.config.timeout + 30.0  # the replica times a request out itself; this only bounds a lost one
        try:
            start = await asyncio.wait_for(stream.__anext__(), patience)
        except BaseException as e:
            stream.cancel()
            return error_response(_as_api_error(e))
        _, status, headers = start
        sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)

        async def rest() -> AsyncIterator[bytes]:
            try:
                while True:
                    try:
                        chunk = await asyncio.wait_for(stream.__anext__(), patience)
                    except StopAsyncIteration:
                        return
                    except Exception as e:
                        if sse:  # the status is sent: say it the way the single server says a stream's error
                            err = _as_api_error(e)
                            body = error_body(err.status, err.message, err.param, err.code)
                            yield f"data: {json.dumps(body)}\n\n".encode()
                        return
                    yield chunk
            finally:
                stream.cancel()

        response = StreamingResponse(rest(), status_code=status)
        response.raw_headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
        return response

    async def _body(self, request: Request) -> bytes:
        cap = self.config.max_body
        length = request.headers.get("content-length")
        too_large = APIError(413, f"the request body is larger than {cap} bytes")
        if length is not None and (not length.isdigit() or int(length) > cap):
            raise too_large
        parts, seen = [], 0
        async for part in request.stream():
            seen += len(part)
            if seen > cap:
                raise too_large
            parts.append(part)
        return b"".join(parts)

    async def _metrics(self, request: Request) -> Response:
        check_key(request, self.config.api_keys)
        texts = await self.board.snapshot.remote(METRICS_STALE_S)
        try:
            ray_view = await asyncio.wait_for(asyncio.to_thread(_ray_replica_states, self.app_name), 5.0)
        except asyncio.TimeoutError:  # the controller busy: /metrics answers without Ray's count
            ray_view = ""
        text = metrics_merge.merge(texts) + ray_view
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self.board)


def _ray_replica_states(app_name: str) -> str:
    """Ray Serve's own count of the replicas by state (serve.status): what
    the autoscaler has started, is starting or is stopping, whether or not
    they report metrics yet. Blocking: run it in a thread."""
    try:
        states = serve.status().applications[app_name].deployments[REPLICA_DEPLOYMENT].replica_states
    except Exception:  # the controller busy or restarting: leave the family out rather than fail /metrics
        return ""
    counts = {"RUNNING": 0, **{str(getattr(k, "value", k)): n for k, n in states.items()}}
    lines = [
        "# HELP lamina_ray_replicas replicas of the deployment by Ray Serve state (serve.status())",
        "# TYPE lamina_ray_replicas gauge",
        *(f'lamina_ray_replicas{{state="{k}"}} {float(n)!r}' for k, n in sorted(counts.items())),
    ]
    return "\n".join(lines) + "\n"


def _as_api_error(e: BaseException) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, BackPressureError):
        return APIError(
            503,
            "every replica is busy and the queue is full (--queue)",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    if isinstance(e, _DIED):
        return _died_error()
    if isinstance(e, asyncio.TimeoutError):
        return APIError(504, "the request ran out of time (--timeout)", code="timeout")
    if isinstance(e, (RequestCancelledError, asyncio.CancelledError)):
        return APIError(499, "the request was cancelled")
    return APIError(500, f"internal error: {type(e).__name__}: {e}")


# --------------------------------------------------------------- building
def build_app(
    config: ServerConfig,
    replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
):
    """The Ray Serve application: `replicas` LaminaReplicas (default 1)
    behind one LaminaIngress; or, given autoscaling (Ray's autoscaling_config
    names: min_replicas, max_replicas, target_ongoing_requests,
    upscale_delay_s, downscale_delay_s, metrics_interval_s,
    look_back_period_s, upscaling_factor, downscaling_factor,
    aggregation_function; lamina.server.ray_autoscaling), as many as Ray's
    autoscaler decides, starting from `replicas` (default min_replicas).
    Each replica reserves n_threads CPUs and takes n_parallel requests at
    once; up to max_queue more wait in the router. A bad setting raises
    ValueError (AutoscalingConfigError) naming it."""
    if config.slot_save_path is not None:
        raise ValueError("--slot-save-path is not supported with Ray replicas: a slot lives on one replica")
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.n_threads or 1},
        "max_ongoing_requests": config.n_parallel,
        "max_queued_requests": config.max_queue,
    }
    options.update(_scaling(replicas, autoscaling))
    with warnings.catch_warnings():
        # Ray 2.60 marks metrics_interval_s deprecated for environment variables it does not read yet
        warnings.filterwarnings("ignore", message=".*metrics_interval_s.*deprecated", category=DeprecationWarning)
        # (serve.deployment turns the classes into Deployments; mypy still sees the classes)
        replica = cast(Any, LaminaReplica).options(**options).bind(config)
    return cast(Any, LaminaIngress).bind(replica, config)


def _scaling(replicas: int | None, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """the deployment options that set the replica count: num_replicas, or a checked autoscaling_config"""
    if autoscaling:
        return {"autoscaling_config": autoscaling_config(autoscaling, replicas)}
    if replicas is None:
        return {"num_replicas": 1}
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    return {"num_replicas": replicas}


def most_replicas(replicas: int | None, autoscaling: dict[str, Any] | None) -> int:
    """the most replicas the application may run"""
    options = _scaling(replicas, autoscaling)
    return options["autoscaling_config"]["max_replicas"] if "autoscaling_config" in options else options["num_replicas"]


def app_builder(args: dict[str, str]):
    """For `serve run lamina.server.ray_app:app_builder model=PATH key=value ...`:
    ServerConfig's fields by name (threads = n_threads, parallel = n_parallel),
    replicas, and Ray's autoscaling names (see build_app)."""
    args = dict(args)
    aliases = {"threads": "n_threads", "parallel": "n_parallel", "ctx_size": "n_ctx"}
    replicas = None
    if "replicas" in args:
        text = str(args.pop("replicas")).strip()
        if not text.isdigit():
            raise ValueError(f"replicas must be an integer >= 1, got {text!r}")
        replicas = int(text)
    knobs = [k.name for k in KNOBS]
    autoscaling = {k: args.pop(k) for k in knobs if k in args}
    types = {f.name: f.type for f in fields(ServerConfig)}
    values: dict[str, Any] = {}
    for k, v in args.items():
        name = aliases.get(k, k)
        if name not in types:
            raise ValueError(
                f"unknown argument {k!r}: expected model, replicas, {', '.join(knobs)} "
                f"or a ServerConfig field ({', '.join(types)})"
            )
        values[name] = _convert(name, v)
    if "model" not in values:
        raise ValueError("model=PATH is required")
    return build_app(ServerConfig(**values), replicas, autoscaling or None)


def _convert(name: str, value: Any) -> Any:
    default = asdict(ServerConfig(model=Path(".")))[name]
    if name in ("model", "slot_save_path"):
        return Path(value)
    if name in ("api_keys", "cors_origins"):
        return value if isinstance(value, list) else [s for s in str(value).split(",") if s]
    if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes")
    if isinstance(default, int) or name == "n_threads":
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


# --------------------------------------------------------------- the CLI
def serve_forever(
    config: ServerConfig,
    replicas: int | None,
    autoscaling: dict[str, Any] | None = None,
    ray_address: str | None = None,
) -> int:
    """`lamina serve MODEL --replicas N`: on the Ray cluster at ray_address,
    or a local one started here (and stopped at the end); serves until
    SIGINT/SIGTERM, then drains and deletes the application."""
    app = build_app(config, replicas, autoscaling)
    logging.getLogger("ray").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    local = ray_address is None
    if local:
        most = most_replicas(replicas, autoscaling)
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, most * (config.n_threads or 1)),
            include_dashboard=False,
            object_store_memory=128 << 20,  # requests and chunks are small; the models never enter it
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=ray_address, logging_level=logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as e:  # a replica that cannot start: Ray's report holds the replica's own error
            text = str(e)
            with contextlib.suppress(Exception):
                status = serve.status().applications[APP_NAME].deployments[REPLICA_DEPLOYMENT]
                text += "\n" + status.message
            marker = "RuntimeError: lamina replica: "
            ours = next((ln.split(marker, 1)[1] for ln in reversed(text.splitlines()) if marker in ln), None)
            raise ValueError(f"the replicas did not start: {ours or text}") from None
        scale = (
            f"{replicas or 1} replicas"
            if not autoscaling
            else f"{autoscaling.get('min_replicas', 1)}..{autoscaling['max_replicas']} replicas (autoscaling)"
        )
        print(
            f"lamina serve: http://{config.host}:{config.port}/v1 · {config.model_name} · {scale} on Ray"
            f" ({'local' if local else ray_address}), each {config.n_parallel} slots, "
            f"{config.n_threads or 'all'} threads{' · API key required' if config.api_keys else ''}",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):
            pass
        print("lamina serve: draining the replicas", file=sys.stderr, flush=True)
        serve.delete(APP_NAME)
        return 0
    finally:
        if local:
            with contextlib.suppress(Exception):
                serve.shutdown()
        ray.shutdown()
