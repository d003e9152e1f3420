"""lamina serve: an OpenAI-compatible HTTP server on the batched engine.

    lamina serve MODEL [--host 127.0.0.1] [--port 8080] [-np 4] [-c N] [-t N] [-ngl N]
                 [--api-key KEY | --api-key-file F] [--alias NAME] [--cache-type f16|q8_0]
                 [--chat-template-file F] [--kv-unified] [--queue N] [--timeout S] [--max-body BYTES]
                 [--cors-origin URL ...] [--slot-save-path DIR]
                 [--replicas N] [--ray-address ADDR] [--min-replicas N --max-replicas N
                  --target-ongoing-requests X --upscale-delay-s S --downscale-delay-s S
                  --metrics-interval-s S --look-back-period-s S ...]

llama-server's flag names and meanings where it has them. Binds to
127.0.0.1 unless told otherwise; prints the URL and the plan (slots, context
per slot, KV bytes) when the model is loaded. Needs the server extra:
pip install "lamina[server]". With --replicas, N copies of the server on
Ray Serve behind one endpoint (lamina.server.ray_app; pip install
"lamina[ray]"; docs/scale-out.md); with --max-replicas, as many as Ray's
autoscaler decides (Ray's autoscaling_config names as flags:
lamina.server.ray_autoscaling)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from lamina import options
from lamina.cli.errors import one_line_errors
from lamina.cli.model_flags import add_lora_flags, add_model_flags, lora_files
from lamina.cli.spec_flags import add_spec_flags, speculative
from lamina.server.ray_autoscaling import KNOBS, autoscaling_config, cli_flag


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("-np", "--parallel", type=int, default=4, help="requests decoded together (slots)")
    add_model_flags(ap, "KV cells for all slots (default: the model's); each slot gets c / np unless --kv-unified")
    add_lora_flags(ap)
    ap.add_argument("-kvu", "--kv-unified", action="store_true", help="every slot may use all of -c (one shared pool)")
    add_spec_flags(ap)  # --lookup / --model-draft: every request speculates (its speculative.n_max/n_min bound it)
    keys = ap.add_mutually_exclusive_group()
    keys.add_argument("--api-key", action="append", default=[], help="required on every endpoint but /health")
    keys.add_argument("--api-key-file", type=Path, help="file with one API key per line")
    ap.add_argument("--alias", default=None, help="model name in /v1/models and responses (default: the file name)")
    ap.add_argument("--chat-template-file", type=Path, default=None)
    ap.add_argument("--queue", type=int, default=64, help="requests waiting for a slot before 503 (default 64)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take (default 600)")
    ap.add_argument("--max-body", type=int, default=8 << 20, help="largest request body in bytes (default 8 MiB)")
    ap.add_argument(
        "--slot-save-path",
        type=Path,
        default=None,
        metavar="DIR",
        help="enable POST /slots/{id}?action=save|restore|erase, with files in DIR (created if missing)",
    )
    ap.add_argument("--cors-origin", action="append", default=[], help="allow browsers from this origin (repeatable)")
    ray = ap.add_argument_group("replicas on Ray Serve (pip install 'lamina[ray]')")
    ray.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="serve N replicas, each with -t threads and -np slots (with --max-replicas: how many to start with)",
    )
    ray.add_argument("--ray-address", default=None, help="a running Ray cluster (default: start a local one)")
    for knob in KNOBS:  # Ray's autoscaling_config fields, under their own names; checked in _serve_replicas
        ray.add_argument(cli_flag(knob.name), default=None, metavar=knob.name.upper(), help=f"autoscaling: {knob.help}")
    return ap


def main(argv: list[str] | None = None) -> int:
    return _serve(parser().parse_args(argv))


@one_line_errors("lamina serve")
def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lamina.server.app import create_app
        from lamina.server.drain import DrainingServer
        from lamina.server.service import ServerConfig, Service
    except ImportError as e:
        raise ValueError(
            f"lamina serve needs the server extra ({e.name} is missing): pip install 'lamina[server]'"
        ) from None
    if not 1 <= args.parallel <= 256:
        raise ValueError(f"-np must be in [1, 256], got {args.parallel}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.queue < 0 or args.timeout <= 0 or args.max_body < 1024:
        raise ValueError("--queue must be >= 0, --timeout > 0 and --max-body >= 1024")
    keys = list(args.api_key)
    if args.api_key_file is not None:
        keys = [line.strip() for line in args.api_key_file.read_text().splitlines() if line.strip()]
        if not keys:
            raise ValueError(f"{args.api_key_file}: no API key in it")
    if args.slot_save_path is not None:
        args.slot_save_path.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(
        model=options.model_file(args.model_opt or args.model),
        alias=args.alias,
        host=args.host,
        port=args.port,
        n_parallel=args.parallel,
        n_ctx=args.ctx_size,
        kv_unified=args.kv_unified,
        n_threads=args.threads,
        n_batch=args.batch_size,
        gpu_layers=args.gpu_layers,
        cache_type=args.cache_type,
        chat_template=args.chat_template_file.read_text() if args.chat_template_file else None,
        api_keys=keys,
        cors_origins=list(args.cors_origin),
        max_queue=args.queue,
        timeout=args.timeout,
        max_body=args.max_body,
        slot_save_path=args.slot_save_path,
        loras=lora_files(args),
        speculative=speculative(args, args.threads),
    )
    scaling = {k.name: getattr(args, k.name) for k in KNOBS if getattr(args, k.name) is not None}
    if args.replicas is not None or scaling:
        return _serve_replicas(args, config, scaling)
    if args.ray_address:
        raise ValueError("--ray-address needs --replicas N or --max-replicas N")
    service = Service(config)
    app = create_app(service)
    server = DrainingServer(
        uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=30),
        app.state.drain,
        grace=config.timeout,
    )

    def announce() -> None:
        service.wait_ready()
        if service.load_error is not None:
            print(f"lamina serve: error: {service.load_error}", file=sys.stderr, flush=True)
            server.should_exit = True
            return
        port = config.port
        for s in getattr(server, "servers", []) or []:
            for sock in s.sockets:
                port = sock.getsockname()[1]
        print(
            f"lamina serve: http://{config.host}:{port}/v1 · {config.model_name} · {service.plan()}"
            f"{' · API key required' if keys else ''}",
            file=sys.stderr,
            flush=True,
        )

    threading.Thread(target=announce, daemon=True).start()
    server.run()
    return 1 if service.load_error is not None else 0


def _serve_replicas(args: argparse.Namespace, config, scaling: dict[str, str]) -> int:
    if args.replicas is not None and args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    # checked before Ray starts, naming the flag; the strings become Ray's types here
    autoscaling = autoscaling_config(scaling, args.replicas, cli_flag) if scaling else None
    if autoscaling is not None:
        autoscaling.pop("initial_replicas", None)  # build_app takes it as `replicas`
    try:
        from lamina.server.ray_app import serve_forever
    except ImportError as e:
        flag = "--replicas" if args.replicas is not None else "--max-replicas"
        raise ValueError(f"{flag} needs the ray extra ({e.name} is missing): pip install 'lamina[ray]'") from None
    return serve_forever(config, args.replicas, autoscaling, args.ray_address)


if __name__ == "__main__":
    sys.exit(main())
