"""Every code block of README.md runs, on the built-in synthetic data with tiny epoch counts.

How (generic: nothing here names what the README says, so it keeps working when the README is rewritten):

* ``python`` blocks are executed in README order in one namespace (a later block sees the names of earlier ones),
  each compiled with its README line number, so a failure points at the README line.
* Datasets: every dataset name the README uses (``motor.load("x")``, ``dataset="x"``, ``--dataset x``,
  ``--datasets x y``, ``-p dataset x``, ``DATASET=x``) is written as an MMRec folder holding the synthetic dataset
  under a temporary ``$MOTOR_DATA``. The README's code then runs verbatim through the real loading code; a name
  it uses but this test did not recognise fails loudly (the error lists the datasets found).
* Epochs: ``motor.experiment.run`` (which ``motor.run`` and ``motor.run_grid`` call) is wrapped to train at most
  2 epochs.
* ``bash`` blocks: each ``python -m motor ...`` line runs in a subprocess with ``--epochs 2`` appended to
  ``train`` (``compare`` also gets ``--seeds 0 --backbones bpr``: one cheap grid); it must exit 0. Each
  ``papermill NB OUT -p name value`` line is checked without running it: the notebook exists and declares every
  parameter passed. ``make`` lines are not run here (``make test`` is what runs this file; ``make run`` trains for
  minutes).
"""
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import motor
from motor import experiment

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
DATASET_NAMES = [re.compile(p) for p in (
    r"motor\.load\(\s*[\"']([\w.-]+)[\"']", r"\bdataset\s*=\s*[\"']([\w.-]+)[\"']", r"--dataset[= ]([\w.-]+)",
    r"-p dataset ([\w.-]+)", r"\bDATASET=([\w.-]+)", r"\bget_dataset\(\s*[\"']([\w.-]+)[\"']")]
DATASETS_FLAG = re.compile(r"--datasets((?: +[\w.-]+)+)")
MAX_EPOCHS = 2


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number of the code, code) for every fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if lang is None and m:
            lang, start, body = m.group(1).lower(), number + 1, []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, start, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def dataset_names(text: str) -> set[str]:
    names = {m for pattern in DATASET_NAMES for m in pattern.findall(text)}
    for group in DATASETS_FLAG.findall(text):
        names.update(group.split())
    return names - {"synthetic"}


def write_mmrec(ds, folder: Path) -> None:
    """``ds`` as an MMRec folder: <name>.inter (x_label 0/1/2), <modality>_feat.npy, item_text.json."""
    folder.mkdir(parents=True)
    frames = []
    for label, split in enumerate(("train", "valid", "test")):
        coo = ds.split(split).tocoo()
        frames.append(pd.DataFrame({"userID": coo.row, "itemID": coo.col, "rating": 1.0, "timestamp": 0,
                                    "x_label": label}))
    pd.concat(frames).to_csv(folder / f"{folder.name}.inter", sep="\t", index=False)
    for m, x in ds.features.items():
        np.save(folder / f"{m}_feat.npy", x)
    if ds.item_text is not None:
        (folder / "item_text.json").write_text(json.dumps(ds.item_text))


@pytest.fixture
def readme_env(tmp_path, monkeypatch):
    """A data root holding the synthetic set under every dataset name the README uses; runs capped in epochs."""
    text = README.read_text()
    root = tmp_path / "data"
    ds = motor.synthetic()
    for name in sorted(dataset_names(text)):
        write_mmrec(ds, root / name)
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("MOTOR_DATA", str(root))
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))  # runs of these stand-in datasets stay here
    experiment.get_dataset.cache_clear()  # names now mean other data than in earlier tests
    real_run = experiment.run

    def capped(config=None, **kwargs):
        if config is not None:
            config = replace(config, epochs=min(config.epochs, MAX_EPOCHS))
        else:
            kwargs["epochs"] = min(kwargs.get("epochs", MAX_EPOCHS), MAX_EPOCHS)
        return real_run(config, **kwargs)

    monkeypatch.setattr(experiment, "run", capped)
    yield text
    experiment.get_dataset.cache_clear()


def test_readme_has_code_to_test():
    langs = [lang for lang, _, _ in code_blocks(README.read_text())]
    assert "python" in langs and "bash" in langs


def test_readme_python_blocks_run_in_order(readme_env):
    namespace = {"__name__": "readme"}
    for lang, line, code in code_blocks(readme_env):
        if lang not in ("python", "py"):
            continue
        # blank lines up front keep the README's line numbers in a traceback
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)


def _cli_args(args: list[str]) -> list[str]:
    if args[:1] == ["train"]:
        return args + ["--epochs", str(MAX_EPOCHS)]
    if args[:1] == ["compare"]:
        return args + ["--epochs", "1", "--seeds", "0", "--backbones", "bpr"]
    return args


def test_readme_shell_commands(readme_env):
    checked = 0
    for lang, line, code in code_blocks(readme_env):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for offset, raw in enumerate(code.splitlines()):
            words = shlex.split(raw, comments=True)
            where = f"README.md line {line + offset}: {raw.strip()}"
            if words[:3] == ["python", "-m", "motor"]:
                out = subprocess.run([sys.executable, "-m", "motor", *_cli_args(words[3:])], capture_output=True,
                                     text=True, cwd=REPO, env=dict(os.environ))
                assert out.returncode == 0, f"{where}\n{out.stdout}\n{out.stderr}"
                checked += 1
            elif words[:1] == ["papermill"]:
                _check_papermill_line(words, where)
                checked += 1
    assert checked, "no python -m motor or papermill line found in the README's shell blocks"


def _check_papermill_line(words: list[str], where: str) -> None:
    import papermill

    paths = [w for w in words[1:] if w.endswith(".ipynb")]
    assert paths, f"{where}: no notebook path"
    notebook = REPO / paths[0]
    assert notebook.is_file(), f"{where}: {paths[0]} does not exist"
    declared = set(papermill.inspect_notebook(str(notebook)))
    passed = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-p", "--parameters", "-r", "--parameters_raw")]
    unknown = [p for p in passed if p not in declared]
    assert not unknown, f"{where}: {paths[0]} has no parameter(s) {unknown}; it declares {sorted(declared)}"
