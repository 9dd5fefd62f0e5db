"""Executed notebooks as HTML pages that render offline, and a quiet papermill run.

Notebooks show plotly figures as plotly's JSON mimetype only (:func:`motor.notebook.setup`): JupyterLab draws it
offline with its plotly extension and the ``.ipynb`` holds one copy of each figure. :func:`to_html` turns every
such output into a ``<div>`` drawn by plotly.js. plotly.js (4.8 MB) and the notebook style sheet (0.26 MB) are
either embedded once in the page (``assets="embed"``: one self-contained file) or read from one folder shared by
all pages (``assets=<folder>``, e.g. ``reports/assets``: ``plotly.min.js`` and ``notebook.css``, written there).
The page loads nothing from a network: no require.js, MathJax, mermaid or widget manager. Progress bars are
dropped; other widgets are replaced by a note (they are live only in JupyterLab with a running kernel).

    python -m motor.report html reports/scientific/*.ipynb --assets reports/assets
    python -m motor.report execute notebooks/02_train.ipynb out.ipynb -p dataset scientific --html
"""
from __future__ import annotations

import argparse
import ast
import copy
import html
import os
import re
import sys
from pathlib import Path

import jinja2
import plotly.io as pio
import zmq
from jupyter_client.manager import KernelManager
from plotly.offline import get_plotlyjs

from .cache import atomic_write_text

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = ("<div class=\"motor-widget-note\" style=\"border-left:4px solid #d62728;padding:6px 10px;"
               "background:#fafafa\"><b>Interactive widget: live only in JupyterLab.</b> Open this notebook in "
               "JupyterLab and run it to use it; this page shows the static output of the cells below.</div>")
_PROGRESS = re.compile(r"\d+%\|")  # tqdm's text form, e.g. "LightGCN:  20%|##  | 60/300"

_CSS_START, _CSS_END = "<!-- motor:css -->", "<!-- motor:/css -->"
# lab's page without the scripts it loads from CDNs; plotly.js goes where require.js was
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{{ resources.motor_plotly_js }}{%- endblock html_head_js -%}
{%- block notebook_css -%}""" + _CSS_START + "{{ super() }}" + _CSS_END + """{%- endblock notebook_css -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _widget_models(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _is_progress_bar(output, models: dict) -> bool:
    """A tqdm bar: an HBox holding a FloatProgress/IntProgress model, or (no saved state) tqdm's text form."""
    model = models.get(output["data"][WIDGET_MIME].get("model_id"), {})
    children = model.get("state", {}).get("children", [])
    ids = [c.removeprefix("IPY_MODEL_") for c in children if isinstance(c, str)]
    if any(models.get(i, {}).get("model_name") in ("FloatProgressModel", "IntProgressModel") for i in ids):
        return True
    return bool(_PROGRESS.search(output["data"].get("text/plain", "")))


def drop_progress_bars(nb):
    """Remove progress-bar outputs from ``nb`` (in place) and keep only the widget state that the remaining
    widget outputs reference (none left: no widget state). Returns ``nb``."""
    models = _widget_models(nb)
    for cell in nb.cells:
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"]
                               if not (WIDGET_MIME in o.get("data", {}) and _is_progress_bar(o, models))]
    if not models:
        return nb
    keep, todo = set(), [o["data"][WIDGET_MIME].get("model_id") for c in nb.cells for o in c.get("outputs", [])
                         if WIDGET_MIME in o.get("data", {})]
    while todo:  # every model reachable from a shown widget (children, layouts, styles)
        mid = todo.pop()
        if mid in keep or mid not in models:
            continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_(\w+)", str(models[mid].get("state", {})))
    if keep:
        state = nb.metadata["widgets"][WIDGET_STATE]
        state["state"] = {k: v for k, v in models.items() if k in keep}
    else:
        nb.metadata.pop("widgets", None)
    return nb


def _is_renderer_setup(data: dict) -> bool:
    """plotly's notebook-renderer set-up output (a script that loads plotly.js, no figure)."""
    page = data.get("text/html", "")
    return "window.PlotlyConfig" in page and "Plotly.newPlot" not in page


def figure_html(figure: dict, div_id: str) -> str:
    """One figure's ``<div>`` and the script that draws it (plotly.js must be loaded before)."""
    return pio.to_html(figure, include_plotlyjs=False, include_mathjax=False, full_html=False, div_id=div_id,
                       default_width="100%", default_height=525, validate=False)


def static_outputs(nb):
    """A copy of ``nb`` whose outputs need no kernel and no network: plotly JSON -> HTML div, progress bars
    dropped, other widgets -> :data:`WIDGET_NOTE`, plotly renderer set-up scripts dropped; the widget state is
    removed."""
    nb = drop_progress_bars(copy.deepcopy(nb))
    n_fig = 0
    for c_index, cell in enumerate(nb.cells):
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                out["data"] = {"text/html": WIDGET_NOTE}
            elif _is_renderer_setup(data):
                continue
            elif PLOTLY_MIME in data:
                n_fig += 1
                fig = data.pop(PLOTLY_MIME)
                data.pop("text/html", None)  # a renderer's CDN-loading copy, if any
                data["text/html"] = figure_html(fig, f"figure-{c_index}-{n_fig}")
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    nb.metadata.pop("widgets", None)
    return nb


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)


def _href(target: Path, page: Path) -> str:
    return html.escape(Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix())


def to_html(notebook: str | Path, out: str | Path | None = None, assets: str | Path = "embed") -> Path:
    """Write ``notebook`` (an executed ``.ipynb``) as an HTML page next to it (or at ``out``); ``assets``:
    ``"embed"`` or a folder for the shared plotly.js and style sheet (see the module docstring). Returns the
    page's path."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    page = Path(out) if out else notebook.with_suffix(".html")
    shared = None if str(assets) == "embed" else Path(assets)
    if shared is None:
        script = f"<script type=\"text/javascript\">{get_plotlyjs()}</script>"
    else:
        _write_if_changed(shared / "plotly.min.js", get_plotlyjs())
        script = f"<script type=\"text/javascript\" src=\"{_href(shared / 'plotly.min.js', page)}\"></script>"
    nb = static_outputs(nbformat.read(notebook, as_version=4))
    exporter = HTMLExporter(template_name="lab", template_file="motor_report.html.j2",
                            extra_loaders=[jinja2.DictLoader({"motor_report.html.j2": _TEMPLATE})])
    body, _ = exporter.from_notebook_node(nb, resources={"motor_plotly_js": script,
                                                         "metadata": {"name": notebook.stem}})
    head, rest = body.split(_CSS_START, 1)
    css, tail = rest.split(_CSS_END, 1)
    if shared is not None:  # the style blocks go to one file, the page links it
        sheet = "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", css, re.S))
        _write_if_changed(shared / "notebook.css", sheet)
        css = f"<link rel=\"stylesheet\" href=\"{_href(shared / 'notebook.css', page)}\">"
    atomic_write_text(page, head + css + tail)
    return page


def execute(notebook: str | Path, out: str | Path, parameters: dict | None = None, cwd: str | Path | None = None,
            progress: bool = False) -> Path:
    """Run ``notebook`` with papermill into ``out`` (parameters as papermill's ``-p``), then drop its progress
    bars (:func:`drop_progress_bars`). The kernel's channels are CurveZMQ-encrypted where pyzmq supports it, so
    ipykernel does not warn about plain-text TCP.

    Papermill saves its output while cells run; it writes to ``.<name>.running.ipynb`` next to ``out``, and ``out``
    is replaced only by a notebook that ran to the end. When a cell fails (or the run is interrupted) ``out`` is
    left as it was and the partial notebook is kept as ``<name>.failed.ipynb``, for its traceback."""
    import nbformat
    import papermill as pm

    check_parameters(notebook, parameters or {})  # papermill writes a parameter's name into the code as it is
    out = Path(out)
    running = out.with_name(f".{out.stem}.running.ipynb")
    try:
        pm.execute_notebook(str(notebook), str(running), parameters=parameters or {},
                            cwd=str(cwd) if cwd else None, kernel_name="python3", progress_bar=progress,
                            kernel_manager_class=_kernel_manager())
        nb = drop_progress_bars(nbformat.read(running, as_version=4))
    except BaseException:
        if running.exists():
            running.replace(out.with_name(f"{out.stem}.failed.ipynb"))
        raise
    atomic_write_text(out, nbformat.writes(nb) + "\n")
    running.unlink(missing_ok=True)
    return out


def parameter_names(notebook: str | Path) -> list[str]:
    """Names the notebook's ``parameters``-tagged cell assigns (what papermill may override); a ValueError names
    the notebook when it cannot be read as one or has no such cell."""
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise ValueError(f"{path}: no such notebook file. Fix: give the path of an .ipynb file.")
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, not a notebook
        raise ValueError(f"{path}: not a readable Jupyter notebook ({type(exc).__name__}). Fix: give an .ipynb "
                         "file saved by Jupyter.") from None
    cells = [c for c in nb.cells if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    if not cells:
        raise ValueError(f"{path}: no cell tagged 'parameters', so it takes no parameters. Fix: run it without "
                         "-p, or tag the cell that sets its parameters.")
    names = []
    for node in ast.walk(ast.parse(cells[0].source)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_parameters(notebook: str | Path, parameters: dict) -> None:
    """Refuse (ValueError naming the notebook, the name and the allowed names) any parameter name that is not
    assigned in the notebook's parameters cell: papermill writes names into the injected cell as code."""
    if not parameters:
        return
    allowed = parameter_names(notebook)
    bad = [name for name in parameters if name not in allowed]
    if bad:
        raise ValueError(f"{notebook}: unknown parameter {bad[0]!r}; this notebook's parameters are "
                         f"{', '.join(allowed)}. Fix: -p NAME VALUE with one of those names.")


def _kernel_manager():
    class EncryptedKernelManager(KernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if zmq.has("curve"):
                self.transport_encryption = "auto"  # keys when the kernelspec supports them (ipykernel does)

    return EncryptedKernelManager


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m motor.report", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("html", help="executed .ipynb -> .html next to it")
    h.add_argument("notebooks", nargs="+")
    h.add_argument("--assets", default="embed", help="'embed' (default) or a folder for the shared plotly.js and CSS")
    e = sub.add_parser("execute", help="run a notebook with papermill (parameters as -p NAME VALUE)")
    e.add_argument("notebook")
    e.add_argument("out")
    e.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    e.add_argument("--cwd", default=None, help="kernel's working directory (default: the notebook's folder)")
    e.add_argument("--html", action="store_true", help="also write the HTML page next to OUT")
    e.add_argument("--assets", default="embed")
    args = ap.parse_args(argv)
    if args.cmd == "html":
        for nb in args.notebooks:
            print(to_html(nb, assets=args.assets))
        return
    cwd = args.cwd or str(Path(args.notebook).parent)
    from papermill.exceptions import PapermillExecutionError

    try:
        check_parameters(args.notebook, dict(args.parameter))  # before a kernel starts
    except ValueError as e:
        print(f"python -m motor.report execute: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        out = execute(args.notebook, args.out, dict(args.parameter), cwd=cwd)
    except PapermillExecutionError as e:  # one line, not papermill's traceback; the failed notebook keeps it
        failed = Path(args.out).with_name(f"{Path(args.out).stem}.failed.ipynb")
        raise SystemExit(f"{args.notebook} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                         f"(the executed notebook with the traceback: {failed}; {args.out} is left as it "
                         "was)") from None
    print(out)
    if args.html:
        print(to_html(out, assets=args.assets))


if __name__ == "__main__":
    main()
