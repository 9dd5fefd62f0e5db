"""``python -m motor``: exit codes, progress in logs, JSON fields, registry table, compare, summary."""
import json
import os
import subprocess
import sys

import nbformat
import pytest

from motor import cli, experiment, runs
from motor.experiment import RunConfig, run

from .conftest import write_folder


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))  # each test starts from an empty registry


def motor_cli(*args, env=None):
    """Run ``python -m motor`` in a subprocess (stdout and stderr are pipes, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "motor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_train_on_a_missing_dataset_fails_listing_those_found(tmp_path):
    write_folder(tmp_path / "tiny")
    out = motor_cli("train", "--dataset", "nosuchset", "--epochs", "1", env={"MOTOR_DATA": str(tmp_path)})
    assert out.returncode == 2
    assert "'nosuchset' not found" in out.stderr and "tiny" in out.stderr and "Traceback" not in out.stderr
    assert not runs.runs_dir().exists() or not list(runs.runs_dir().iterdir())


def test_train_logs_one_line_per_epoch_and_reports_epochs_and_time(tmp_path):
    out = motor_cli("train", "--dataset", "synthetic", "--backbone", "lightgcn", "--item-repr", "id",
                    "--epochs", "3", "--patience", "5", "--lr", "0.002", "--batch-size", "1024", "--dim", "16",
                    "--split-seed", "1", "--hparams", '{"n_layers": 1}')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epochs] == ["0/2", "1/2", "2/2"] and all("valid recall@20" in ln for ln in epochs)
    assert any(ln.startswith("trained  3 epochs") and "s training" in ln and "s in all" in ln for ln in lines)
    rid = next(ln.split()[1] for ln in lines if ln.startswith("run "))
    cfg = runs.read(rid)["config"]
    assert (cfg["lr"], cfg["batch_size"], cfg["dim"], cfg["split_seed"], cfg["hparams"]) == \
        (0.002, 1024, 16, 1, {"n_layers": 1})
    assert (runs.run_path(rid) / "model_state.npz").is_file()  # motor.recommend(run_id) works on CLI runs


def test_train_json_has_best_epoch_stop_reason_epochs_and_time():
    out = motor_cli("train", "--dataset", "synthetic", "--backbone", "bpr", "--item-repr", "ms", "--n-tokens", "2",
                    "--epochs", "2", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)  # progress lines went to stderr
    assert res["stopped"] == "max_epochs" and res["epochs_trained"] == 2 and 0 <= res["best_epoch"] <= 1
    assert res["wall_seconds"] >= res["train_seconds"] > 0 and res["dataset"] == "synthetic"
    assert 0 <= res["test"]["recall@20"] <= 1 and res["test_recall@20"] == res["test"]["recall@20"]
    assert out.stderr.count("epoch ") >= 2


def test_bad_hparams_json_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--hparams", "{n_layers: 2"])
    assert e.value.code == 2 and "not JSON" in capsys.readouterr().err


def test_dataset_command_prints_the_dataset_a_run_would_use(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    assert cli.main(["dataset"]) == 0
    out = capsys.readouterr()
    assert out.out == "synthetic\n" and "synthetic" in out.err
    assert cli.main(["dataset", "scientific"]) == 2
    assert "not found" in capsys.readouterr().err


def test_runs_table_keeps_split_seeds_apart(capsys):
    for split_seed in (0, 1):
        run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, split_seed=split_seed, progress=False)
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if "synthetic" in ln and "bpr" in ln)
    assert row.split()[6] == "1"  # count: one run in the cell, not the two splits averaged
    assert "split_seed=1" in out
    assert cli.main(["runs", "--variant", "split_seed=1"]) == 0
    assert "bpr" in capsys.readouterr().out


def test_runs_on_an_empty_registry_points_at_the_committed_results(capsys):
    assert cli.main(["runs"]) == 0
    assert "--registry reports/runs" in capsys.readouterr().out


def test_compare_goes_through_run_grid(capsys, monkeypatch):
    calls = []
    real = experiment.run_grid

    def spy(configs, *args, **kwargs):
        calls.append([c.run_id() for c in configs])
        return real(configs, *args, **kwargs)

    monkeypatch.setattr(cli, "run_grid", spy)  # the name the CLI calls
    assert cli.main(["compare", "--datasets", "synthetic", "--backbones", "bpr", "--item-reprs", "id", "ms",
                     "--seeds", "0", "--epochs", "1"]) == 0
    expected = [RunConfig(dataset="synthetic", backbone="bpr", item_repr=k, seed=0, epochs=1).run_id()
                for k in ("id", "ms")]
    assert calls == [expected]
    out = capsys.readouterr().out
    assert all(f"{rid}: test recall@20" in out for rid in expected)
    assert "== test recall@20" in out and not (runs.run_path(expected[0]) / "model_state.npz").exists()


def test_summary_finds_the_runs_an_executed_notebook_made(capsys, tmp_path):
    res = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("res = run(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"run {res.run_id}: best epoch 0\n")]
    nb.cells = [cell, nbformat.v4.new_code_cell("x")]
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, str(path))
    assert cli.main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"run      {res.run_id}" in out and "dataset  synthetic" in out and "trained  1 epoch (" in out
    assert cli.main(["summary", res.run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["run_id"] == res.run_id
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(empty))
    assert cli.main(["summary", str(empty)]) == 2
    assert "no run saved" in capsys.readouterr().err


def test_runs_metric_is_checked_and_other_splits_are_named(capsys):
    assert cli.main(["runs"]) == 0
    assert "no runs saved under" in capsys.readouterr().out
    run(dataset="synthetic", split="given", backbone="bpr", item_repr="id", epochs=1, progress=False)
    assert cli.main(["runs"]) == 0  # only a given-split run: said so, with the fix, and nothing contradicting it
    out = capsys.readouterr().out
    assert "none of the 1 runs saved under" in out and "their splits: given (1)" in out and "--split NAME" in out
    assert "more runs are not in this table" not in out and "no runs saved" not in out
    assert cli.main(["runs", "--split", "given"]) == 0
    assert "recall@20" in capsys.readouterr().out
    assert cli.main(["runs", "--split", "given", "--metric", "nope@20"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'nope@20': the saved runs under" in err and "recall@20" in err
    assert cli.main(["runs", "--metric", "recall"]) == 2
    assert "--metric 'recall': a metric and a cutoff, e.g. recall@20" in capsys.readouterr().err


def test_summary_of_something_that_is_not_a_notebook_names_it(capsys, tmp_path):
    (tmp_path / "x.ipynb").mkdir()
    (tmp_path / "notes.ipynb").write_text("plain text, not JSON")
    for name, says in (("x.ipynb", "a folder, not notebook file"), ("notes.ipynb", "not a readable Jupyter "
                                                                                   "notebook"),
                       ("missing.ipynb", "no such notebook file")):
        assert cli.main(["summary", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / name}: {says}" in err and "Fix:" in err and "Traceback" not in err
