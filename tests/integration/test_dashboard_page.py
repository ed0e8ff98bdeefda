"""The dashboard page for people is served by the worker, self-contained, and calls the
analyst API; the worker reports its readiness without being asked by an API request."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from pipeline.settings import Settings
from testbed import services
from testbed.processes import http_get


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_worker_serves_the_dashboard_page(stack_settings: Settings, tmp_path: Path) -> None:
    settings = stack_settings.with_(worker_port=services.free_port(), data_dir=tmp_path / "data")
    base = f"http://{settings.worker_host}:{settings.worker_port}"
    with services.running(services.worker(settings, tmp_path)):
        # No API request and no /readyz: the timer alone must turn the gauge to 1.
        deadline = time.monotonic() + 90
        while "switchboard_worker_tables_recovered 1.0" not in _text(base + "/metrics"):
            assert time.monotonic() < deadline, "tables_recovered never became 1"
            time.sleep(0.5)
        assert http_get(base + "/readyz").body == {"status": "ready"}
        with urllib.request.urlopen(base + "/dashboard", timeout=5) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/companies" in page and "Authorization" in page
    assert "sessionStorage" in page
    # Self-contained: nothing loaded from anywhere else (no CDN, no web font).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
