"""Notebook 07's TokenExplorer in JupyterLab, driven like a person: run all cells, type a query, pick an item, and
see its tokens and neighbours re-render.

``jupyter lab`` starts on 127.0.0.1 with a fresh token, over a copy of 07_explore (nothing under notebooks/ is
saved), on the synthetic dataset in fast mode; playwright drives the system Chromium (nothing downloads a browser).
The server and its kernels are always shut down.
"""
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUERY = "cluster 3"  # synthetic item text ends with "(cluster c)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server shuts its kernels down), then SIGKILL after 20 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def test_token_explorer_rerenders_in_jupyterlab(chromium_path, playwright_api, tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(REPO / "notebooks" / "07_explore.ipynb", work / "07_explore.ipynb")
    (tmp_path / "no-data").mkdir()
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "MOTOR_DATA": str(tmp_path / "no-data"),  # no dataset named and none there: the synthetic set
           "MOTOR_FAST": "1", "MOTOR_RUNS": str(tmp_path / "runs"), "MOTOR_CACHE": str(tmp_path / "cache"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "OMP_WAIT_POLICY": "PASSIVE"}
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/api/status?token={token}", server)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            try:
                _drive(page, f"{base}/lab/tree/07_explore.ipynb?token={token}")
            except Exception:
                page.screenshot(path=tmp_path / "failure.png", full_page=True)
                print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
                raise
            finally:
                browser.close()
    except Exception:
        log.flush()
        print((tmp_path / "jupyter.log").read_text()[-3000:])
        raise
    finally:
        _stop(server)
        log.close()
    assert server.returncode is not None


def _drive(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel", timeout=90_000)
    page.wait_for_function("() => document.body.innerText.includes('(ipykernel) | Idle')", timeout=120_000)  # started
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()  # menu Run > Run All Cells
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    box = page.locator("input[placeholder='search item text or type an item id']")
    box.wait_for(timeout=300_000)
    # Run All marks every queued cell "[*]": none left means every cell ran, and the widget's updates are answered
    page.wait_for_function("() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]; return p.some(e => /\\d/.test(e.innerText)) && !p.some(e => e.innerText.includes('*')); }", timeout=300_000)
    page.wait_for_function("() => document.body.innerText.includes('(ipykernel) | Idle')", timeout=60_000)
    box.scroll_into_view_if_needed()
    out = page.locator(".widget-html-content").first
    box.fill("")
    box.type(QUERY, delay=30)
    sel = page.locator(".widget-dropdown select").first
    page.wait_for_function("(q) => { const s = document.querySelector('.widget-dropdown select'); return s && s.options.length > 2 && [...s.options].every(o => o.text.replace(/\\s/g, ' ').toLowerCase().includes(q)); }", arg=QUERY, timeout=90_000)
    page.wait_for_function("() => { const o = document.querySelector('.widget-html-content'); return o && /^item \\d+/.test(o.innerText); }", timeout=30_000)
    shown = out.inner_text().splitlines()[0]  # the picker's first match, rendered when the options changed
    options = [o.replace("\xa0", " ") for o in sel.locator("option").all_inner_texts()]  # the picker pads with NBSP
    pick = next(i for i, o in enumerate(options) if not shown.startswith(f"item {o.split(':')[0]} "))
    sel.select_option(index=pick)
    page.wait_for_function("(t) => document.querySelector('.widget-html-content').innerText.split('\\n')[0] !== t", arg=shown, timeout=30_000)
    now = out.inner_text().replace("\xa0", " ")
    m = re.match(r"item (\d+)", now.splitlines()[0])
    assert m and options[pick].startswith(m.group(1) + ":"), (options[pick], now.splitlines()[0])
    assert options[pick].split(": ", 1)[1] in now  # the picked item's own text
    assert "tokens" in now and "shared tokens" in now and "nearest by MOTOR vector" in now
