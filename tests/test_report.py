"""motor.report: executed notebooks -> HTML that needs no network; a papermill run without the kernel's warning."""
import re

import nbformat
import plotly.graph_objects as go
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from motor import report

STATE = "application/vnd.jupyter.widget-state+json"


def widget_output(model_id, text):
    return new_output("display_data", data={report.WIDGET_MIME: {"model_id": model_id, "version_major": 2,
                                                                  "version_minor": 0}, "text/plain": text})


def executed_notebook():
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2])).to_plotly_json()
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# title"),
                new_code_cell("train()", outputs=[widget_output("bar", "LightGCN:   0%|          | 0/300"),
                                                  new_output("stream", name="stdout", text="done\n")]),
                new_code_cell("fig.show()", outputs=[
                    new_output("display_data", data={"text/html": "<script>window.PlotlyConfig = {};</script>"}),
                    new_output("display_data", data={report.PLOTLY_MIME: fig})]),
                new_code_cell("explorer.widget()", outputs=[widget_output("box", "VBox(children=(Text(...")])]
    models = {"bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_prog"]}},
              "prog": {"model_name": "FloatProgressModel", "state": {}},
              "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_text"]}},
              "text": {"model_name": "TextModel", "state": {"layout": "IPY_MODEL_lay"}},
              "lay": {"model_name": "LayoutModel", "state": {}}}
    nb.metadata["widgets"] = {STATE: {"state": models, "version_major": 2, "version_minor": 0}}
    return nb


def test_drop_progress_bars_keeps_other_widgets_and_their_state():
    nb = report.drop_progress_bars(executed_notebook())
    assert [o.output_type for o in nb.cells[1].outputs] == ["stream"]
    assert set(nb.metadata["widgets"][STATE]["state"]) == {"box", "text", "lay"}


def test_static_outputs_turn_figures_into_divs_and_widgets_into_a_note():
    nb = report.static_outputs(executed_notebook())
    fig_outputs = nb.cells[2].outputs
    assert len(fig_outputs) == 1 and report.PLOTLY_MIME not in fig_outputs[0].data
    page = fig_outputs[0].data["text/html"]
    assert 'id="figure-2-1"' in page and "Plotly.newPlot" in page and "<script src" not in page
    assert nb.cells[3].outputs[0].data == {"text/html": report.WIDGET_NOTE}
    assert "widgets" not in nb.metadata


def script_and_link_sources(page: str) -> list[str]:
    return re.findall(r"<(?:script|link)[^>]*(?:src|href)=\"([^\"]*)\"", page)


@pytest.mark.parametrize("mode", ["embed", "assets"])
def test_to_html_loads_nothing_from_a_network(tmp_path, mode):
    nbformat.write(executed_notebook(), tmp_path / "nb.ipynb")
    assets = "embed" if mode == "embed" else tmp_path / "assets"
    page = report.to_html(tmp_path / "nb.ipynb", tmp_path / "site" / "nb.html", assets=assets)
    text = page.read_text()
    sources = script_and_link_sources(text)
    assert not [s for s in sources if "://" in s], sources
    assert report.WIDGET_NOTE in text and "Plotly.newPlot" in text
    if mode == "embed":  # plotly.js inline, nothing else
        assert sources == [] and len(text) > 3_000_000
    else:
        assert sorted(sources) == ["../assets/notebook.css", "../assets/plotly.min.js"] and len(text) < 100_000
        assert "require" not in text and "mathjax" not in text.lower()
        assert (tmp_path / "assets" / "plotly.min.js").stat().st_size > 3_000_000
        assert "jp-Cell" in (tmp_path / "assets" / "notebook.css").read_text()


def test_execute_runs_without_the_plain_tcp_warning(tmp_path, capfd):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}), new_code_cell("print(x * 2)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = report.execute(tmp_path / "in.ipynb", tmp_path / "out.ipynb", {"x": 21}, cwd=tmp_path)
    done = nbformat.read(out, as_version=4)
    assert done.cells[-1].outputs[0].text == "42\n"
    assert "without encryption" not in capfd.readouterr().err


def test_update_readme_copies_each_notebooks_computed_findings(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("update_readme", Path(__file__).parents[1] / "reports" /
                                                  "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    nb = new_notebook()
    nb.cells = [new_code_cell("studies.parameter_table(res)", outputs=[new_output(
                    "execute_result", data={"text/markdown": "not a finding", "text/plain": "x"})]),
                new_code_cell("studies.describe_run(res)", outputs=[new_output(
                    "execute_result", data={"text/markdown": "Test Recall@20 0.2688.", "text/plain": "..."})])]
    (tmp_path / "scientific").mkdir()
    nbformat.write(nb, tmp_path / "scientific" / "02_train.ipynb")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "scientific_02_train.png").write_bytes(b"png")
    block = update_readme.findings_block(tmp_path)
    assert "- **02_train** ([screenshot](figures/scientific_02_train.png)): Test Recall@20 0.2688." in block
    assert "not a finding" not in block
    text = update_readme.replace_block("a <!-- findings:start -->old<!-- findings:end --> b", update_readme.FINDINGS,
                                       block, tmp_path / "README.md")
    assert text.startswith("a <!-- findings:start -->") and text.endswith("<!-- findings:end --> b")
    assert "old" not in text


def test_execute_leaves_the_output_untouched_when_a_cell_fails(tmp_path):
    """A failing notebook never overwrites ``out``: the partial notebook is kept as ``<name>.failed.ipynb``."""
    import papermill as pm

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell("x = 1", metadata={"tags": ["parameters"]}), new_code_cell("raise ValueError('boom')")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    (tmp_path / "out.ipynb").write_text("previous report")
    with pytest.raises(pm.PapermillExecutionError, match="boom"):
        report.execute(tmp_path / "in.ipynb", tmp_path / "out.ipynb", cwd=tmp_path)
    assert (tmp_path / "out.ipynb").read_text() == "previous report"
    assert "boom" in (tmp_path / "out.failed.ipynb").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ipynb", "out.failed.ipynb", "out.ipynb"]


def _params_notebook(path, body="print(x * 2)"):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [new_code_cell("x = 1\ny: int = 2", metadata={"tags": ["parameters"]}), new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("name", ["__import__('os').system('touch PWNED');x", "z", "x y"])
def test_parameter_names_must_be_the_notebooks_own(tmp_path, name, capsys):
    nb = _params_notebook(tmp_path / "in.ipynb")
    assert report.parameter_names(nb) == ["x", "y"]
    with pytest.raises(ValueError, match=r"in.ipynb: unknown parameter .*parameters are x, y. Fix: -p NAME"):
        report.execute(nb, tmp_path / "out.ipynb", {name: 1}, cwd=tmp_path)
    with pytest.raises(SystemExit) as done:
        report.main(["execute", str(nb), str(tmp_path / "out.ipynb"), "-p", name, "1"])
    assert done.value.code == 2 and "unknown parameter" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ipynb"]  # no kernel ran, nothing written


def test_a_notebook_without_a_parameters_cell_takes_no_parameters(tmp_path):
    nb = new_notebook()
    nb.cells = [new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(ValueError, match="plain.ipynb: no cell tagged 'parameters'"):
        report.check_parameters(tmp_path / "plain.ipynb", {"x": 2})
    (tmp_path / "broken.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="broken.ipynb: not a readable Jupyter notebook"):
        report.check_parameters(tmp_path / "broken.ipynb", {"x": 2})


def test_a_failed_execution_points_at_the_failed_notebook(tmp_path):
    nb = _params_notebook(tmp_path / "in.ipynb", "raise ValueError('boom')")
    (tmp_path / "out.ipynb").write_text("previous report")
    with pytest.raises(SystemExit) as done:
        report.main(["execute", str(nb), str(tmp_path / "out.ipynb"), "--cwd", str(tmp_path)])
    assert f"traceback: {tmp_path / 'out.failed.ipynb'}" in str(done.value.code)
