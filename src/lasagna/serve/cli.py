"""`lasagna serve`: the HTTP API and web page for a model, on uvicorn."""

from __future__ import annotations

import ipaddress
import os
import sys

from ..devices import add_arguments, load_options
from .limits import Limits


def register(sub) -> None:
    d = Limits()
    p = sub.add_parser("serve", help="serve a model over HTTP: REST API at /v1 (docs at /docs), web page at /")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=os.environ.get("LASAGNA_API_KEY"), help="required on /v1 (env LASAGNA_API_KEY)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--max-batch", type=int, default=8, help="class-list requests run together (1: no batching)")
    p.add_argument("--batch-timeout", type=float, default=0.01, help="seconds a request waits for others (0.01)")
    add_arguments(p)
    g = p.add_argument_group("limits per request (past one: a 4xx JSON error naming the field)")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20, help="request body (16)")
    g.add_argument("--max-pixels", type=int, default=d.max_pixels, help=f"image width x height ({d.max_pixels})")
    g.add_argument("--max-classes", type=int, default=d.max_classes, help=f"classes per request ({d.max_classes})")
    g.add_argument("--max-name-chars", type=int, default=d.max_name_chars, help=f"class name ({d.max_name_chars})")
    g.add_argument("--max-query-chars", type=int, default=d.max_query_chars, help=f"query / text ({d.max_query_chars})")
    g.add_argument("--max-chunk-size", type=int, default=d.max_chunk_size, help=f"chunk_size ({d.max_chunk_size})")
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help=f"chat answer ({d.max_new_tokens})")
    g.add_argument("--request-timeout", type=float, default=d.request_timeout, help=f"seconds ({d.request_timeout:g})")
    g.add_argument("--max-queue", type=int, default=d.max_queue, help=f"requests waiting; more get 429 ({d.max_queue})")
    p.set_defaults(func=run)


def check_host(host: str, api_key: str | None, insecure: bool) -> None:
    """Listening beyond this machine needs an API key (or an explicit --insecure)."""
    if api_key or insecure or is_loopback(host):
        return
    raise ValueError(
        f"refusing to listen on {host!r} without an API key: anyone who can reach it could use the model. "
        "Give --api-key KEY (or env LASAGNA_API_KEY), or --insecure if the network is yours"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def limits_from(args) -> Limits:
    return Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        max_classes=args.max_classes,
        max_name_chars=args.max_name_chars,
        max_query_chars=args.max_query_chars,
        max_chunk_size=args.max_chunk_size,
        max_new_tokens=args.max_new_tokens,
        request_timeout=args.request_timeout,
        max_queue=args.max_queue,
    )


def run(args) -> int:
    check_host(args.host, args.api_key, args.insecure)
    limits = limits_from(args)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as err:
        print(
            f"lasagna serve needs the serve extra ({err.name} is missing): pip install 'lasagna[serve]'",
            file=sys.stderr,
        )
        return 2
    from ..api import Lasagna
    from .describe import model_vocabulary
    from .limits import ServeSettings

    model = Lasagna.from_pretrained(args.model, **load_options(args))
    settings = ServeSettings(
        limits=limits,
        max_batch=args.max_batch,
        batch_timeout=args.batch_timeout,
        api_key=args.api_key or None,
        model_name=args.model or "embedded:shapeworld-small",
        vocabulary=model_vocabulary(args.model),
    )
    if not is_loopback(args.host) and not settings.api_key:
        print(f"warning: listening on {args.host} with no API key (--insecure)", file=sys.stderr)
    uvicorn.run(create_app(model, settings), host=args.host, port=args.port, log_level="info")
    return 0
