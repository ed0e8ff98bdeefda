"""The dashboard page in a real browser: Debian's headless Chromium driven by Selenium
(scripts/browser.sh installs both; ``make test`` runs it first), against two real
``switchboard worker`` processes, the real broker and MariaDB.

After a simulated month of traffic (tests/support/dashboard_story.py, plus a second branch
for Los Angeles), the page: refuses a wrong token with a clear message; signs in with a
token scoped to companies 1 and 3 and lists exactly those; shows the API's numbers for the
company and for each branch; updates when new traffic arrives; downloads the API's CSV;
and, when the worker that owns the company is killed, keeps showing numbers with the MySQL
fallback's notice. Screenshots at desktop and phone widths go to var/test-artifacts/.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from sqlalchemy import Engine, insert

from pipeline import database, topics
from pipeline.apply.batch import apply_batch
from pipeline.models import branches
from pipeline.settings import Secret, Settings
from testbed.processes import WorkerProcess, http_get, running_worker
from tests.integration.conftest import (
    TEST_PARTITIONS,
    base_settings,
    create_test_database,
    delete_topics,
    drop_test_database,
)
from tests.support.dashboard_story import (
    LA,
    TENANTS,
    Call,
    Story,
    Tenant,
    build_story,
    publish_snapshots,
    seed_tenants,
    story_record,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts"
ADMIN = "browser-admin-token"
SCOPED = "browser-scoped-token"
SCOPED_ENTRY = f"scoped=sha256:{hashlib.sha256(SCOPED.encode()).hexdigest()}@1+3"
EAST = Tenant(1, LA.name, LA.timezone, 12, "+14155550112", "agent_la_east", 9102)
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# The launch flags: no sandbox (root in CI), no GPU, and nothing that talks to the network
# on its own (QUIC, background networking, component updates, sync), fresh profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

if not (CHROMIUM and CHROMEDRIVER):
    pytest.fail(
        "chromium and chromedriver are needed: run scripts/browser.sh install", pytrace=False
    )


@dataclass
class World:
    settings: Settings
    engine: Engine
    story: Story
    tmp: Path
    extra: int = 0

    def publish(self, records: list[Any]) -> None:
        result = apply_batch(self.engine, records)
        assert {o.status for o in result.outcomes} == {"applied"}, result.outcomes
        asyncio.run(
            publish_snapshots(
                self.settings.kafka_bootstrap,
                self.settings.topic(topics.SNAPSHOTS),
                result.snapshots,
            )
        )

    def east_calls(self, n: int, at: datetime) -> list[Any]:
        """``n`` connected inbound calls to the second Los Angeles branch, at ``at``."""
        records = []
        for _ in range(n):
            self.extra += 1
            call = Call(
                call_id=f"call_east_{self.extra:04d}",
                tenant=EAST,
                direction="inbound",
                customer=f"+1415666{self.extra:04d}",
                start=at,
                end=at + timedelta(minutes=4),
                reason="user_hangup",
                transfer_destination=None,
                cost=Decimal("12.5"),
            )
            for body, when in call.bodies():
                records.append(story_record("retell", body, when, 90_000 + len(records)))
        return records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    settings = create_test_database(base_settings()).with_(
        topic_prefix=f"b{suffix}.",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"switchboard-browser-{suffix}",
        analyst_tokens=(Secret(ADMIN), Secret(SCOPED_ENTRY)),
    )
    engine = database.create_db_engine(settings, pool_size=2)
    try:
        asyncio.run(topics.ensure_topics(settings))
        seed_tenants(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(branches).values(
                    id=EAST.branch_id,
                    company_id=EAST.company_id,
                    name="Harbor Dental east",
                    phone_number=EAST.phone,
                    retell_agent_id=EAST.agent_id,
                    calcom_event_type_id=EAST.event_type_id,
                )
            )
        now = datetime.now(UTC).replace(tzinfo=None)
        story = build_story(now)
        built = World(settings, engine, story, tmp_path_factory.mktemp("browser"))
        for batch in story.batches():
            built.publish(batch)
        built.publish(built.east_calls(3, now - timedelta(days=2)))
        yield built
    finally:
        engine.dispose()
        asyncio.run(delete_topics(settings))
        drop_test_database(settings)


@pytest.fixture(scope="module")
def workers(world: World) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    with (
        running_worker(world.settings, world.tmp, name="w1") as first,
        running_worker(world.settings, world.tmp, name="w2") as second,
    ):
        for worker in (first, second):
            worker.wait_ready()
        yield first, second


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    downloads = world.tmp / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={world.tmp / 'profile'}")
    options.add_argument("--window-size=1280,1000")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def owner_of(company: int, workers: tuple[WorkerProcess, ...]) -> WorkerProcess:
    """The worker that answers ``company`` from its own table (a routed request is never
    forwarded again: a non-owner answers it from MySQL)."""
    for worker in workers:
        answer = http_get(
            f"{worker.url}/api/v1/companies/{company}/summary",
            ADMIN,
            headers={"X-Switchboard-Routed": "1"},
        )
        if answer.status == 200 and answer.body["source"] == "table":
            return worker
    raise AssertionError(f"no worker owns company {company}")


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def wait_for(driver: Any, check: Any, what: str, timeout: float = 60) -> Any:
    """Poll ``check(driver)`` until it returns something truthy (no time thresholds)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check(driver)
            if value:
                return value
        except (WebDriverException, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.3)
    shot(driver, f"timeout-{what.replace(' ', '-')}")
    raise AssertionError(f"page never showed {what}: {last!r}")


def shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    driver.save_screenshot(str(path))
    return path


def sign_in(driver: Any, base: str, token: str) -> None:
    driver.get(f"{base}/dashboard")
    field = wait_for(driver, lambda d: d.find_element(By.ID, "token"), "the sign-in form")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button").click()


def card_today(driver: Any, metric: str) -> str:
    """Read in one script: the page re-renders its cards on every refresh, so an element
    found in one WebDriver call may be gone by the next."""
    return str(
        driver.execute_script(
            "const c = document.querySelector(`.card[data-metric='${arguments[0]}']`);"
            "return c ? c.dataset.today : null;",
            metric,
        )
    )


def branch_values(driver: Any) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = driver.execute_script(
        """
        const out = {};
        for (const row of document.querySelectorAll('#breakdown tbody tr')) {
          const cells = {};
          for (const td of row.querySelectorAll('td[data-metric]')) cells[td.dataset.metric] = td.dataset.value;
          out[row.dataset.group] = cells;
        }
        return out;
        """
    )
    return found


def api_branches(worker: WorkerProcess, driver: Any) -> dict[str, dict[str, Any]]:
    """The API's per-branch totals over the page's date range (the same query it sends)."""
    query = driver.execute_script("return rangeQuery()")
    body = http_get(f"{worker.url}/api/v1/companies/{LA.company_id}/series?{query}", ADMIN).body
    out = {}
    for group in body["groups"]:
        total = {
            name: sum(b[name] for b in group["buckets"])
            for name in ("calls_total", "calls_connected", "appointments_booked")
        }
        out[group["id"]] = total
    return out


def test_the_page_end_to_end(
    world: World, workers: tuple[WorkerProcess, ...], browser: Any
) -> None:
    driver = browser
    page_worker = workers[0]
    owner = owner_of(LA.company_id, workers)
    if owner is page_worker:  # the page must stay up when the owner is killed below
        page_worker = workers[1]
    base = page_worker.url

    # 1. A wrong token: a clear message, nothing else shown.
    sign_in(driver, base, "not-a-token")
    wait_for(driver, lambda d: "not accepted" in text_of(d, "notice"), "the wrong-token message")
    assert not driver.find_element(By.ID, "board").is_displayed()
    assert "not-a-token" not in driver.current_url

    # 2. A token scoped to companies 1 and 3 sees exactly those.
    sign_in(driver, base, SCOPED)
    wait_for(driver, lambda d: d.find_element(By.ID, "board").is_displayed(), "the dashboard")
    names = [o.text for o in Select(driver.find_element(By.ID, "company")).options]
    assert names == [TENANTS[0].name, TENANTS[2].name]
    assert SCOPED not in driver.current_url and "token" not in driver.current_url
    assert driver.execute_script("return sessionStorage.length") == 1

    # 3. The numbers are the API's: the company's today, and every branch over the range.
    summary = http_get(f"{base}/api/v1/companies/{LA.company_id}/summary", ADMIN).body
    today = summary["windows"]["today"]
    for metric in ("calls_total", "calls_connected", "appointments_booked", "cost_cents_total"):
        wait_for(
            driver,
            lambda d, m=metric: float(card_today(d, m)) == float(today[m]),
            f"today's {metric}",
        )
    expected = api_branches(page_worker, driver)
    assert set(expected) >= {str(LA.branch_id), str(EAST.branch_id)}
    wait_for(
        driver,
        lambda d: all(
            int(branch_values(d)[group][name]) == value
            for group, totals in expected.items()
            for name, value in totals.items()
        ),
        "the API's per-branch numbers",
    )
    assert expected[str(EAST.branch_id)]["calls_total"] == 3
    shot(driver, "desktop")
    driver.set_window_size(390, 1400)
    wait_for(driver, lambda d: d.find_element(By.ID, "cards").is_displayed(), "the phone layout")
    shot(driver, "phone")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways on a phone ({width}px)"
    driver.set_window_size(1280, 1000)

    # 4. New traffic arrives: the page follows without a reload.
    before = int(card_today(driver, "calls_total"))
    world.publish(world.east_calls(2, datetime.now(UTC).replace(tzinfo=None)))
    wait_for(
        driver,
        lambda d: int(card_today(d, "calls_total")) == before + 2,
        "the two new calls",
    )

    # 5. The CSV download is the API's CSV for the same range.
    driver.find_element(By.ID, "csv").click()
    downloaded = wait_for(
        driver,
        lambda d: [p for p in d.downloads.glob("*.csv")],
        "the downloaded CSV",
    )
    query = driver.execute_script("return rangeQuery()")
    request = urllib.request.Request(
        f"{base}/api/v1/companies/{LA.company_id}/series?{query}&format=csv",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert downloaded[0].read_bytes() == response.read()

    # 6. The owner dies: the page keeps its numbers, read from MySQL, and says so.
    owner.kill()
    wait_for(driver, lambda d: "database" in text_of(d, "notice"), "the MySQL fallback notice")
    assert int(card_today(driver, "calls_total")) == before + 2
    driver.execute_script("window.scrollTo(0, 0)")
    shot(driver, "fallback")
