"""The ceiling of the ingress benchmark: a bare aiohttp handler that only reads the body,
verifies its signature and parses it (the providers' own ``verify`` and ``parse``, as the
ingress runs them), then answers 202. No Kafka, no spool, no metrics, no logging, no
middleware: what a Python process on this machine can do for a webhook at most, so the
ingress's req/s reads as a share of it.

Run: ``python -m bench.bare_server --port N`` with ``RETELL_API_KEY`` / ``CALCOM_WEBHOOK_SECRET``
set (the benchmark does this, pinned to the same core as the ingress it is compared with).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import orjson
from aiohttp import web

from pipeline import providers
from pipeline.errors import ClientError
from pipeline.settings import load_settings


def create_app() -> web.Application:
    settings = load_settings(os.environ)
    app = web.Application(client_max_size=settings.max_body_bytes)

    def handler(name: str):  # type: ignore[no-untyped-def]
        provider = providers.get(name)
        secrets = settings.secrets_for(name)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                provider.verify(request.headers, body, secrets, time.time_ns() // 1_000_000)
                envelope = provider.parse(body)
            except ClientError as exc:
                return web.Response(status=exc.status, body=b'{"error":"%s"}' % exc.code.encode())
            answer = {"status": "accepted", "event_id": envelope.event_id}
            return web.Response(
                status=202, body=orjson.dumps(answer), content_type="application/json"
            )

        return handle

    for name in providers.PROVIDERS:
        app.router.add_post(f"/webhooks/{name}", handler(name))
    app.router.add_get("/healthz", lambda _: asyncio.sleep(0, web.Response(text="ok")))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(
        create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=1024
    )


if __name__ == "__main__":
    main()
