"""Runbook, "A secret rotation", performed on a real ingress process: old and new secrets
both accepted during the rotation, only the new one after it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.providers import calcom, retell
from pipeline.settings import Secret, Settings
from testbed import services
from tests.support.fixtures import fixture_bytes


def post(settings: Settings, provider: str, body: bytes, headers: dict[str, str]) -> int:
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/{provider}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def signed_statuses(settings: Settings, secret: str) -> tuple[int, int]:
    now = time.time_ns() // 1_000_000
    call = fixture_bytes("retell", "call_started.json")
    booking = fixture_bytes("calcom", "BOOKING_CREATED.json")
    return (
        post(settings, "retell", call, retell.sign(call, secret, now)),
        post(settings, "calcom", booking, calcom.sign(booking, secret, now)),
    )


def test_rotation_accepts_both_then_only_the_new_secret(
    stack_settings: Settings, tmp_path: Path
) -> None:
    during = stack_settings.with_(
        ingress_port=services.free_port(),
        retell_api_keys=(Secret("old-secret"), Secret("new-secret")),
        calcom_webhook_secrets=(Secret("old-secret"), Secret("new-secret")),
    )
    with services.running(services.ingress(during, tmp_path, "ingress-during")):
        assert signed_statuses(during, "old-secret") == (202, 202)
        assert signed_statuses(during, "new-secret") == (202, 202)
    after = during.with_(
        retell_api_keys=(Secret("new-secret"),), calcom_webhook_secrets=(Secret("new-secret"),)
    )
    with services.running(services.ingress(after, tmp_path, "ingress-after")):
        assert signed_statuses(after, "new-secret") == (202, 202)
        assert signed_statuses(after, "old-secret") == (401, 401)
