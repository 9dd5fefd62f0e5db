"""The committed HTML reports render offline: no page loads anything from a network, and in a headless Chromium
with every connection refused each plotly figure of the notebook is drawn.

The browser part runs where a Chromium is found (see conftest.py); without one it is skipped, and under ``CI=true``
it fails. ``MOTOR_REPORTS=<folder>`` checks the pages under another folder (e.g. freshly exported ones) instead of
reports/.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("MOTOR_REPORTS") or Path(__file__).parents[2] / "reports")
PAGES = sorted(ROOT.glob("*/*.html"))


def expected_figures(page: Path) -> int | None:
    """Plotly figures in the executed notebook next to ``page`` (None when there is none)."""
    nb = page.with_suffix(".ipynb")
    if not nb.exists():
        return None
    cells = json.loads(nb.read_text())["cells"]
    return sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def rendered_dom(page: Path, browser: str) -> str:
    """The page's DOM after its scripts ran, in headless Chromium whose every connection goes to a closed port."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=20000",
           "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def test_there_are_reports_to_check():
    assert PAGES, f"no HTML pages under {ROOT}/<dataset>/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_page_loads_nothing_from_a_network(page):
    text = page.read_text()
    remote = [s for s in re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']([^\"']+)", text)
              if "://" in s or s.startswith("//")]
    assert not remote, f"{page}: loads {remote}; regenerate it with `python -m motor.report html`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_figure_renders_offline(page, chromium_path):
    from bs4 import BeautifulSoup

    dom = BeautifulSoup(rendered_dom(page, chromium_path), "html.parser")
    figures = dom.select("div.plotly-graph-div")
    drawn = [f for f in figures if "js-plotly-plot" in f.get("class", []) and f.select_one("svg.main-svg")]
    expected = expected_figures(page)
    if expected is not None:
        assert len(figures) == expected, f"{page}: {len(figures)} figure divs, the notebook has {expected} figures"
    assert len(drawn) == len(figures), f"{page}: {len(drawn)} of {len(figures)} figures drawn offline"
