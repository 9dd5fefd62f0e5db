"""What the browser tests need: a Chromium ($CHROMIUM, or chromium / chromium-browser / google-chrome on PATH;
Debian: ``apt-get install chromium``) and, for the JupyterLab test, playwright (a dev dependency). Without them the
tests are skipped, except under ``CI=true``, where a missing browser is a failure: CI must run them (``.ci/run``
installs Debian's chromium when it is missing)."""
import importlib
import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    return os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip the test for lack of ``what``; fail under CI=true."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: the browser tests must run here, not be skipped)", pytrace=False)
    pytest.skip(what)


@pytest.fixture
def chromium_path() -> str:
    path = chromium()
    if path is None:
        missing("no Chromium found (set $CHROMIUM or install chromium: apt-get install chromium)")
    return path


@pytest.fixture
def playwright_api():
    """``playwright.sync_api`` (installed with the dev dependencies; it is launched on the system Chromium)."""
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
