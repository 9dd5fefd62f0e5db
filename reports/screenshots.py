"""Screenshot every report page with the network off and check that its figures were drawn.

    python reports/screenshots.py [--reports reports] [--out reports/figures]

Each ``<reports>/<dataset>/<page>.html`` becomes ``<out>/<dataset>_<page>.png`` (the whole page, 1100 px wide).
Exits non-zero when a page has a plotly figure that did not render. Needs a Chromium ($CHROMIUM, or chromium /
chromium-browser / google-chrome on PATH; Debian: ``apt-get install chromium``); with playwright installed
(``pip install playwright``) the shots are full pages, without it they are chromium's fixed 1100 x 6000 window.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH = 1100


def find_chromium() -> str:
    found = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)
    if not found:
        sys.exit("no Chromium found: install one (Debian: apt-get install chromium) or set $CHROMIUM")
    return found


def with_playwright(browser: str, pages: list[Path], out: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = b.new_context(viewport={"width": WIDTH, "height": 900}, offline=True).new_page()
        for html in pages:
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            page.wait_for_timeout(500)
            figures = page.locator("div.plotly-graph-div").count()
            drawn = page.locator("div.plotly-graph-div.js-plotly-plot:has(svg.main-svg)").count()
            shot = out / f"{html.parent.name}_{html.stem}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"{shot}: {drawn} of {figures} figures drawn")
            if drawn < figures:
                problems.append(f"{html}: {drawn} of {figures} figures drawn")
        b.close()
    return problems


def with_cli(browser: str, pages: list[Path], out: Path) -> list[str]:
    for html in pages:
        shot = out / f"{html.parent.name}_{html.stem}.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                        "--virtual-time-budget=20000", f"--window-size={WIDTH},6000", f"--screenshot={shot}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        print(f"{shot} (figures checked by tests/browser/test_reports.py)")
    return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", default=str(Path(__file__).parent))
    ap.add_argument("--out", default=str(Path(__file__).parent / "figures"))
    args = ap.parse_args()
    pages = sorted(Path(args.reports).glob("*/*.html"))
    if not pages:
        sys.exit(f"no pages under {args.reports}/<dataset>/")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        problems = with_cli(browser, pages, out)
    else:
        problems = with_playwright(browser, pages, out)
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
