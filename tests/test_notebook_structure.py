"""Every notebook reads: parameters cell, one ``mnb.setup(globals(), ...)`` naming exactly those parameters, calls
into motor, figures, and a closing markdown cell; motor.notebook.setup validates and applies fast mode."""
import ast
import json
from pathlib import Path

import pytest

import motor.notebook as mnb
from motor.params import ParameterError

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_parameters_setup_calls_and_a_closing_note(path):
    nb = json.loads(path.read_text())
    assert all(c.get("id") for c in nb["cells"]), f"{path.name}: every cell needs an id (nbformat >= 4.5)"
    cells = code_cells(nb)
    params, setup = cells[0], cells[1]
    assert "parameters" in params["metadata"].get("tags", []), f"{path.name}: first code cell is not tagged"
    tree = ast.parse(source(params))
    assert all(isinstance(n, ast.Assign) for n in tree.body), f"{path.name}: parameters cell holds only assignments"
    declared = [t.id for n in tree.body for t in n.targets]
    for line in source(params).splitlines():  # papermill cannot parse a parameter line whose comment has "="
        assert "=" not in line.partition("#")[2], f"{path.name}: '=' in the comment of {line!r}"
    calls = [n for n in ast.walk(ast.parse(source(setup))) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "setup"]
    assert len(calls) == 1, f"{path.name}: the second code cell makes one setup call"
    assert [k.arg for k in calls[0].keywords] == declared, f"{path.name}: setup names the parameters in order"
    assert "dataset" in declared and "fast" in declared and ({"seed", "seeds"} & set(declared)), path.name
    for cell in cells:
        for node in ast.walk(ast.parse(source(cell))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{path.name}: a function or class defined in a notebook cell belongs in motor")
    assert nb["cells"][-1]["cell_type"] == "markdown", f"{path.name}: ends with a markdown cell that interprets it"


def test_setup_coerces_applies_fast_mode_and_rejects_unknown_names(monkeypatch):
    import plotly.io as pio

    monkeypatch.delenv("MOTOR_FAST", raising=False)
    ns = {"dataset": "synthetic", "seeds": "0,1,2", "epochs": "300", "budgets": [2, 4, 8], "fast": "true",
          "projection": "umap"}
    shown = mnb.setup(ns, dataset=mnb.DATASET, seeds=list[int], epochs=int, budgets=list[int], fast=bool | None,
                      projection=mnb.one_of("umap", "pca"))
    assert ns["seeds"] == [0] and ns["epochs"] == mnb.FAST_EPOCHS and ns["budgets"] == [2, 4]
    assert ns["fast"] is True and ns["projection"] == "pca" and shown["epochs"] == mnb.FAST_EPOCHS
    assert pio.renderers.default == "plotly_mimetype"
    assert "`seeds` = `[0]`" in shown._repr_markdown_()

    ns = {"dataset": "synthetic", "seed": "1", "fast": "false"}
    mnb.setup(ns, dataset=mnb.DATASET, seed=int, fast=bool | None)
    assert ns["seed"] == 1 and ns["fast"] is False
    ns["ds"] = object()  # a later cell's variable: re-running the setup cell must not call it a parameter
    mnb.setup(ns, dataset=mnb.DATASET, seed=int, fast=bool | None)

    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['seeds'\]"):
        mnb.setup({"dataset": None, "seed": 0, "seeds": [1], "fast": None}, dataset=mnb.DATASET, seed=int,
                  fast=bool | None)
    with pytest.raises(ParameterError, match="'backbone' must be one of"):
        mnb.setup({"backbone": "lightgnc", "fast": None}, backbone=mnb.BACKBONE, fast=bool | None)
