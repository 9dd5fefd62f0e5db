"""Drive notebook 07's TokenExplorer in JupyterLab like a person: run all, type a query, pick an item.

A manual check (not collected by pytest; needs playwright (``pip install playwright``) and a Chromium, e.g. Debian's
``apt-get install chromium``; neither is a project dependency). It searches "microscope", so 07 must run on the
real ``scientific`` data (MOTOR_DATA points at the folder that holds it):

    MOTOR_DATA=../shared/data MOTOR_FAST=1 MOTOR_RUNS=$(mktemp -d) \
        jupyter lab --no-browser --port 8899 --IdentityProvider.token=abc &
    python tests/browser/drive_widget.py [URL] [screenshot-folder]

The browser is $CHROMIUM, else the first of chromium / chromium-browser / google-chrome on PATH. It asserts that
typing a query refills the item picker and that picking an item re-renders its tokens and neighbours
(reports/figures/widget_07_explore.png is its screenshot).
"""
import os
import re
import shutil
import sys
import time

from playwright.sync_api import sync_playwright

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8899/lab/tree/notebooks/07_explore.ipynb?token=abc"
shots = sys.argv[2] if len(sys.argv) > 2 else "."
browser = os.environ.get("CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")) if p), None)
if browser is None:
    sys.exit("no Chromium found: install one (Debian: apt-get install chromium) or set $CHROMIUM")
with sync_playwright() as p:
    b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
    page = b.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(URL)
    page.wait_for_selector(".jp-NotebookPanel", timeout=180_000)
    page.get_by_text('Kernel status: Idle').first.wait_for(state='attached', timeout=180_000)
    time.sleep(3)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type("Run All Cells")
    time.sleep(1)
    page.keyboard.press("Enter")
    box = page.locator("input[placeholder='search item text or type an item id']")
    box.wait_for(timeout=600_000)
    box.scroll_into_view_if_needed()
    out = page.locator(".widget-html-content").first
    page.wait_for_function("() => document.querySelector('.widget-html-content') && document.querySelector('.widget-html-content').innerText.includes('item ')", timeout=120_000)
    first = out.inner_text()
    print("initial:", first.splitlines()[0])
    page.screenshot(path=f"{shots}/1_initial.png")
    box.fill("")
    box.type("microscope", delay=60)
    sel = page.locator(".widget-dropdown select").first
    page.wait_for_function("() => { const s = document.querySelector('.widget-dropdown select'); return s && s.options.length > 0 && s.options[0].text.toLowerCase().includes('microscope'); }", timeout=60_000)
    options = sel.locator("option").all_inner_texts()
    print("options after typing 'microscope':", len(options), options[:3])
    sel.select_option(index=2)
    page.wait_for_function("(t) => document.querySelector('.widget-html-content').innerText.split('\\n')[0] !== t", arg=first.splitlines()[0], timeout=60_000)
    now = out.inner_text()
    print("after picking option 3:", now.splitlines()[0], "|", now.splitlines()[1][:90])
    m = re.match(r"item (\d+)", now.splitlines()[0])
    assert m and options[2].startswith(m.group(1) + ":"), (options[2], now.splitlines()[0])
    assert "shared tokens" in now and "nearest by MOTOR vector" in now
    out.scroll_into_view_if_needed()
    page.screenshot(path=f"{shots}/2_picked.png")
    print("OK")
    b.close()
