"""The dashboard page for people is served by the worker and calls the analyst API."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from pipeline.settings import Settings
from testbed import services


def test_worker_serves_the_dashboard_page(stack_settings: Settings, tmp_path: Path) -> None:
    settings = stack_settings.with_(worker_port=services.free_port(), data_dir=tmp_path / "data")
    with services.running(services.worker(settings, tmp_path)):
        url = f"http://{settings.worker_host}:{settings.worker_port}/dashboard"
        with urllib.request.urlopen(url, timeout=5) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/companies/" in page and "Authorization" in page
