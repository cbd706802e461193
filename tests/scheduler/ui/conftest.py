"""Fixtures for the dashboard tests: a real server on SQLite and Debian's chromium.

Playwright drives the system's ``/usr/bin/chromium`` and never downloads a browser.
Outside CI a missing browser (or Playwright) skips the browser tests; under
``CI=true`` it fails them, so a CI run cannot pass without having run them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from grafos_scheduler import (
    BackgroundServer,
    Scheduler,
    SchedulerClient,
    SqliteStore,
    TokenConfig,
    create_app,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

# Debian's chromium. The variable exists so that a test can point it at nothing and see
# the browser tests fail under CI=true.
CHROMIUM = Path(os.environ.get("GRAFOS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "dashboard-admin-token-0001"
WORKER_TOKENS = {
    "alice": "dashboard-alice-token-0001",
    "bob": "dashboard-bob-token-000001",
}


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard tests need a browser under CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile of its own, in this test's temporary directory."""
    context = playwright.chromium.launch_persistent_context(
        user_data_dir=str(tmp_path / "chromium-profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
    )
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Page:
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.set_default_timeout(10_000)  # a loaded CI machine; latency is asserted apart
    return page


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    with Scheduler(4, SqliteStore(tmp_path / "scheduler.db"), max_defer=30.0) as s:
        yield s


@pytest.fixture
def server(scheduler: Scheduler) -> Iterator[BackgroundServer]:
    app = create_app(scheduler, TokenConfig(ADMIN_TOKEN, WORKER_TOKENS))
    with BackgroundServer(app) as s:
        yield s


@pytest.fixture
def alice(server: BackgroundServer) -> Iterator[SchedulerClient]:
    with SchedulerClient(server.url, WORKER_TOKENS["alice"]) as c:
        yield c


@pytest.fixture
def bob(server: BackgroundServer) -> Iterator[SchedulerClient]:
    with SchedulerClient(server.url, WORKER_TOKENS["bob"]) as c:
        yield c


class Shots:
    """Numbered screenshots of each step, under the test's temporary directory."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def shots(page: Page, tmp_path: Path) -> Shots:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return Shots(page, folder)
