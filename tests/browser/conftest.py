"""Headless Chromium for the browser tests, launched once for all of them.

Playwright's sync API keeps an event loop running in the test thread while a browser is open, so
the ORM calls of the tests need DJANGO_ALLOW_ASYNC_UNSAFE (Django's documented case for it), and
`asyncio.run` would refuse to start in any test after them: the browser is closed after the last
browser test, before whatever the session runs next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER_TESTS = Path(__file__).resolve().parent


class SharedChromium:
    """One Chromium, launched on first use and closed by `close` (after the last browser test)."""

    def __init__(self) -> None:
        self._playwright = None
        self._browser = None
        self._async_unsafe: str | None = None

    def get(self):
        if self._browser is None:
            if not CHROMIUM.exists():
                pytest.fail("Chromium is missing: run scripts/install_system.sh (apt-get install chromium)")
            from playwright.sync_api import sync_playwright

            self._async_unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        if self._browser is None:
            return
        self._browser.close()
        self._playwright.stop()
        self._browser = self._playwright = None
        if self._async_unsafe is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = self._async_unsafe


_CHROMIUM = SharedChromium()


@pytest.hookimpl(trylast=True)  # after the test's fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Close the shared browser once the next test is not a browser test (or there is none)."""
    if nextitem is None or BROWSER_TESTS not in Path(nextitem.path).parents:
        _CHROMIUM.close()


@pytest.fixture
def browser() -> Iterator:
    """The session's Chromium; every context a test opens is closed when it ends."""
    chromium = _CHROMIUM.get()
    yield chromium
    for context in list(chromium.contexts):
        context.close()
    from django.db import connections

    connections.close_all()  # the test's ORM connection, made beside Playwright's loop: the database can be dropped


@pytest.fixture
def page(browser):
    """A page in a fresh context (no cookies) of the shared browser."""
    return browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (test-artifacts/, kept by CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _log_in(page, url: str, username: str) -> None:
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-password")
    page.click("button[type=submit]")


@pytest.fixture
def log_in():
    """log_in(page, url, username): the login form, with the password the test users are given
    (tests/conftest.py: "<name>-password")."""
    return _log_in
