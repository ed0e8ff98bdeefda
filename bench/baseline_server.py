"""The baseline server: a webhook endpoint that works the way the old system did.

Per request, inside the handler: read the body, verify the signature, parse, apply the one
event to MySQL (``apply_batch`` on a single record: its own transaction, the per-event
pattern), and only then answer. The database call blocks the event loop, as the old
synchronous handler blocked its worker: one request at a time is in the database, and
every other connection waits. It also serves the dashboard summary the old way
(:mod:`bench.old_summary`: aggregate queries over ``calls``/``appointments`` per read).

This is a reconstruction for comparison, not the old code: it uses today's verification,
parsing and apply logic, so the comparison isolates the architecture (work in the request
vs. hand-off to Kafka; scan on read vs. key lookups), not code quality.

Run: ``python -m bench.baseline_server --port N`` with Switchboard's environment variables
(database, secrets), as the benchmark does.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import uuid
from datetime import UTC, datetime

import orjson
from aiohttp import web
from sqlalchemy import Engine

from bench import old_summary
from pipeline import database, providers
from pipeline.apply.batch import apply_batch
from pipeline.errors import InvalidSignature, MalformedPayload
from pipeline.records import WebhookRecord, decode_headers, encode_headers
from pipeline.settings import Settings, load_settings

ENGINE = web.AppKey("engine", Engine)
_offsets = itertools.count()


def _json(status: int, body: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def webhook_handler(settings: Settings):  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        try:
            provider = providers.get(name)
        except KeyError:
            return _json(404, {"error": "unknown_provider"})
        received_ms = time.time_ns() // 1_000_000
        body = await request.read()
        try:
            provider.verify(request.headers, body, settings.secrets_for(name), received_ms)
            envelope = provider.parse(body)
        except InvalidSignature:
            return _json(401, {"error": "invalid_signature"})
        except MalformedPayload:
            return _json(400, {"error": "bad_request"})
        record = WebhookRecord(
            topic=settings.topic(provider.TOPIC),
            partition=0,
            offset=next(_offsets),
            key=envelope.key.encode(),
            value=body,
            headers=decode_headers(
                encode_headers(
                    name, envelope.event_id, envelope.event_type, str(uuid.uuid4()), received_ms
                )
            ),
        )
        try:
            result = apply_batch(request.app[ENGINE], [record])  # blocks the loop, on purpose
        except Exception as exc:  # noqa: BLE001 - the old system answered 500
            return _json(500, {"error": exc.__class__.__name__})
        return _json(200, {"status": result.outcomes[0].status if result.outcomes else "none"})

    return handle


async def summary(request: web.Request) -> web.Response:
    raw = request.match_info["company_id"]
    if not raw.isdigit():
        return _json(400, {"error": "bad_request"})
    now = datetime.now(UTC).replace(tzinfo=None)
    with request.app[ENGINE].connect() as conn:  # blocks the loop, on purpose
        body = old_summary.summary(conn, int(raw), now)
    if body is None:
        return _json(404, {"error": "not_found"})
    return _json(200, body)


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


def create_app(settings: Settings, engine: Engine | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[ENGINE] = engine or database.create_db_engine(settings, pool_size=2)

    async def dispose(app: web.Application) -> None:
        app[ENGINE].dispose()

    app.on_cleanup.append(dispose)
    app.router.add_post("/webhooks/{provider}", webhook_handler(settings))
    app.router.add_get("/api/v1/companies/{company_id}/summary", summary)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings(os.environ)
    web.run_app(
        create_app(settings), host=args.host, port=args.port, access_log=None, print=None,
        backlog=1024,
    )  # fmt: skip


if __name__ == "__main__":
    main()
