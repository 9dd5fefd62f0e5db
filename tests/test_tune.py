"""motor.tune: search spaces, trials through Ray Tune saved in the registry, selection on valid only."""
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import motor
from motor import analysis, runs
from motor.experiment import RunConfig, run
from motor.tune import COMPLETE, default_space, grid_points, plan, shutdown, tune, tune_seeds

from .conftest import SHARED, real

# ``motor.tune`` is the function and ``motor.tune.plan`` the plan function: the modules by their import names
tune_plan = importlib.import_module("motor.tune.plan")
tune_ray = importlib.import_module("motor.tune.ray")

ISSUE_SPACE = {"n_tokens": [2, 4], "reg_weight": [1e-2, 1e-4]}
MMREC_GRID_SIZES = {"bpr": 7, "lightgcn": 20, "layergcn": 12, "vbpr": 7, "grcn": 25, "slmrec": 80, "bm3": 8,
                    "freedom": 8, "mgcn": 3}  # SLMRec: MMRec's 320 less its unread `reg` (see slmrec.py)


# ---- search spaces and plans (no Ray) ----

def test_default_spaces_are_mmrec_grids_times_token_counts():
    for backbone, size in MMREC_GRID_SIZES.items():
        assert len(grid_points(default_space(backbone, "id"))) == size, backbone
        ms = default_space(backbone, "ms")
        assert ms["n_tokens"] == [2, 4, 8, 16]
        assert len(plan("scientific", backbone, "ms")) == 4 * size
        assert len(plan("scientific", backbone, "id")) == size  # no tokens: D is not searched
    assert default_space("bpr", "id") == {"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}
    assert default_space("grcn", "id")["lr"] == [1.0, 1e-1, 1e-2, 1e-3, 1e-4]  # MMRec's learning_rate -> lr
    # "small": the first searched hyper-parameter at its default and the next grid value
    assert default_space("bpr", "ms", small=True) == {"reg_weight": [1e-4, 1e-5]}
    assert default_space("slmrec", "ms", small=True) == {"lr": [1e-3, 1e-2]}
    assert default_space("layergcn", "id", small=True) == {"dropout": [0.1, 0.2]}


def test_plan_maps_names_and_keeps_default_runs_identical():
    trials = plan("scientific", "lightgcn", "ms", ISSUE_SPACE, epochs=3)
    assert [t.values for t in trials] == grid_points(ISSUE_SPACE)
    at_defaults = [t for t in trials if t.values == {"n_tokens": 4, "reg_weight": 1e-4}][0]
    # reg_weight 1e-4 is LightGCN's default: the point is the default run, with the default run's id
    assert at_defaults.config.hparams == {}
    assert at_defaults.run_id == RunConfig(dataset="scientific", backbone="lightgcn", item_repr="ms",
                                           n_tokens=4, epochs=3).run_id()
    other = [t for t in trials if t.values == {"n_tokens": 2, "reg_weight": 1e-2}][0]
    assert other.config.n_tokens == 2 and other.config.hparams == {"reg_weight": 1e-2}
    seeds = plan("scientific", "bpr", "id", {"reg_weight": [0.1]}, seeds=(0, 1, 2))
    assert [t.seed for t in seeds] == [0, 1, 2] and len({t.run_id for t in seeds}) == 3
    lr = plan("scientific", "grcn", "id", {"lr": [0.01]})[0]
    assert lr.config.lr == 0.01 and lr.config.hparams == {}


def test_plan_rejects_bad_spaces_and_drops_tokens_for_id():
    with pytest.raises(ValueError, match="'reg_wieght' is neither a RunConfig field .* hyper-parameter of bpr"):
        plan("scientific", "bpr", "ms", {"reg_wieght": [1e-2]})
    with pytest.raises(ValueError, match="has no values"):
        plan("scientific", "bpr", "ms", {"reg_weight": []})
    with pytest.raises(ValueError, match="budget"):
        plan("scientific", "bpr", "ms", {"reg_weight": [1]}, budget="random")
    with pytest.raises(ValueError, match="both searched"):
        plan("scientific", "bpr", "ms", {"lr": [1e-3]}, lr=1e-2)
    ids = plan("scientific", "bpr", "id", {"n_tokens": [2, 4, 8], "reg_weight": [1e-2, 1e-3]})
    assert [t.values for t in ids] == [{"reg_weight": 1e-2}, {"reg_weight": 1e-3}]


def test_random_budget_draws_the_same_points_again():
    a = plan("scientific", "slmrec", "ms", budget=12)
    b = plan("scientific", "slmrec", "ms", budget=12)
    assert len(a) == 12 and [t.run_id for t in a] == [t.run_id for t in b]
    assert len({t.run_id for t in a}) == 12
    assert len(plan("scientific", "mgcn", "id", budget=50)) == 3  # more than the grid: the whole grid


# ---- through Ray (one local Ray for the module, 2 CPUs) ----

@pytest.fixture(scope="module")
def ray_session():
    yield
    shutdown()


@pytest.fixture(scope="module")
def issue_search(ray_session, tmp_path_factory):
    """The issue's example, run once: 4 trials through Ray into a fresh registry."""
    if not (SHARED / "scientific").is_dir():
        pytest.skip("real dataset scientific not under MOTOR_DATA")
    root = tmp_path_factory.mktemp("tune-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTOR_RUNS", str(root))
        result = tune("scientific", "lightgcn", "ms", space=ISSUE_SPACE, epochs=3, num_cpus=2)
    return result, root


@real("scientific")
def test_issue_example_runs_four_trials_saved_in_the_registry(issue_search, monkeypatch):
    (trials, selected), root = issue_search
    monkeypatch.setenv("MOTOR_RUNS", str(root))
    assert len(trials) == 4 and set(trials.status) == {"trained"}
    saved = runs.load()
    assert set(saved.run_id) == set(trials.run_id)  # motor.runs.load() sees every trial
    for _, t in trials.iterrows():
        meta = json.loads((root / t.run_id / "metrics.json").read_text())
        assert meta["valid"]["recall@20"] == t["valid_recall@20"]
        assert len(pd.read_csv(root / t.run_id / "history.csv")) == 3  # every epoch of the trial ran
    best = trials.loc[trials["valid_recall@20"].idxmax()]
    assert len(selected) == 1
    sel = selected.iloc[0]
    assert sel.run_ids == (best.run_id,) and sel.hyper_parameters == best.hyper_parameters
    assert sel["valid_recall@20"] == best["valid_recall@20"]
    assert sel.config.run_id() == best.run_id
    test = json.loads((root / best.run_id / "metrics.json").read_text())["test"]
    assert sel["test_recall@20"] == pytest.approx(test["recall@20"])


@real("scientific")
def test_second_call_trains_nothing(issue_search, monkeypatch):
    (trials, selected), root = issue_search
    monkeypatch.setenv("MOTOR_RUNS", str(root))
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}

    def no_launch(*args, **kwargs):
        raise AssertionError("a trial was launched although every run is saved")

    monkeypatch.setattr(tune_ray, "_launch", no_launch)  # Ray is not even reached
    again, sel_again = tune("scientific", "lightgcn", "ms", space=ISSUE_SPACE, epochs=3, num_cpus=2)
    assert set(again.status) == {"reused"}
    assert list(again.run_id) == list(trials.run_id)
    assert sel_again.run_ids.iloc[0] == selected.run_ids.iloc[0]
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")} == stamps


@real("scientific")
def test_selection_reads_valid_only(issue_search, monkeypatch, tmp_path):
    """Test metrics rewritten so that they rank the trials opposite to valid: the selection does not move, and
    the test metrics of no other trial are read."""
    (trials, selected), root = issue_search
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    monkeypatch.setenv("MOTOR_RUNS", str(copy))
    for t in trials.itertuples():
        path = copy / t.run_id / "metrics.json"
        meta = json.loads(path.read_text())
        meta["test"] = {k: 1.0 - v if k != "n_users" else v for k, v in meta["test"].items()}
        path.write_text(json.dumps(meta))
    read = []
    real_read = tune_plan._test_metrics
    monkeypatch.setattr(tune_plan, "_test_metrics", lambda rid: read.append(rid) or real_read(rid))
    _, sel = tune("scientific", "lightgcn", "ms", space=ISSUE_SPACE, epochs=3)
    assert sel.run_ids.iloc[0] == selected.run_ids.iloc[0]
    assert read == list(selected.run_ids.iloc[0])
    assert sel["test_recall@20"].iloc[0] == pytest.approx(1.0 - selected["test_recall@20"].iloc[0])
    by_test = trials.assign(test=[1 - json.loads((root / r / "metrics.json").read_text())["test"]["recall@20"]
                                  for r in trials.run_id])
    assert by_test.loc[by_test.test.idxmax(), "run_id"] != sel.run_ids.iloc[0][0]  # a test-based pick differs


def _garbage_copy(src: Path, dst: Path, seed: int = 0) -> None:
    """``src`` (an MMRec folder) as ``dst`` with every test row (x_label 2) moved to a random item the user has
    no other row with; train and valid rows unchanged, feature files linked."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".inter":
            (dst / f.name).symlink_to(f)
    inter = pd.read_csv(next(src.glob("*.inter")), sep="\t")
    rng = np.random.default_rng(seed)
    n_items = int(inter.itemID.max()) + 1
    taken = set(zip(inter.userID, inter.itemID))
    items = inter.itemID.to_numpy().copy()
    for i in np.flatnonzero(inter.x_label.to_numpy() == 2):
        u = inter.userID.iat[i]
        while True:
            j = int(rng.integers(n_items))
            if (u, j) not in taken:
                taken.add((u, j))
                items[i] = j
                break
    inter["itemID"] = items
    inter.to_csv(dst / f"{dst.name}.inter", sep="\t", index=False)


@real("scientific")
def test_selected_trial_does_not_change_when_test_is_garbage(ray_session, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sci").symlink_to(SHARED / "scientific")
    _garbage_copy(SHARED / "scientific", data / "sci_garbage")
    monkeypatch.setenv("MOTOR_DATA", str(data))
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    space = {"reg_weight": [1e-1, 1e-3, 1e-5]}
    trials, selected = tune(["sci", "sci_garbage"], "lightgcn", "id", space=space, epochs=2, split="given",
                            num_cpus=2)  # one search over both datasets: one Ray launch
    clean, garbage = (trials[trials.dataset == d].reset_index(drop=True) for d in ("sci", "sci_garbage"))
    sel_clean, sel_garbage = (selected[selected.dataset == d] for d in ("sci", "sci_garbage"))
    assert set(clean.status) == set(garbage.status) == {"trained"}
    assert sel_clean.hyper_parameters.iloc[0] == sel_garbage.hyper_parameters.iloc[0]
    assert list(clean["valid_recall@20"]) == list(garbage["valid_recall@20"])  # same train and valid data
    assert sel_garbage["test_recall@20"].iloc[0] < 0.5 * sel_clean["test_recall@20"].iloc[0]  # test is garbage


@real("scientific")
def test_asha_stops_bad_trials_and_does_not_save_them(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    # two useful learning rates first (they run first on 2 CPUs and fill ASHA's rungs), then two that cannot learn
    space = {"lr": [1e-2, 5e-3, 1e-9, 1e-10]}
    trials, selected = tune("scientific", "bpr", "id", space=space, epochs=6, budget="asha", num_cpus=2,
                            asha={"grace_period": 2, "reduction_factor": 2})
    status = dict(zip(trials.lr, trials.status))
    # the rungs hold the useful rates' values when the others arrive: both are stopped at the first rung
    assert status[1e-9] == status[1e-10] == "stopped_early" and status[1e-2] == "trained"
    # stopped at a rung (epoch 2, or 4 when a bad trial reached rung 2 before the useful rates' values did)
    assert set(trials[trials.status == "stopped_early"].epochs_run) <= {2, 4}
    for t in trials.itertuples():
        assert runs.exists(t.run_id) == (t.status in COMPLETE)  # a stopped trial is not a saved run
    assert selected.hyper_parameters.iloc[0] == "lr=0.01"
    # a re-launch of the same search trains nothing: finished trials are runs, stopped ones are recorded
    launched = []
    monkeypatch.setattr(tune_ray, "_launch", lambda todo, **k: launched.append(todo) or {})
    again, selected_again = tune("scientific", "bpr", "id", space=space, epochs=6, budget="asha", num_cpus=2,
                                 asha={"grace_period": 2, "reduction_factor": 2})
    assert launched == []
    assert list(again.status) == [{"trained": "reused"}.get(s, s) for s in trials.status]
    assert again.epochs_run.equals(trials.epochs_run)
    assert selected_again.hyper_parameters.iloc[0] == "lr=0.01"
    # other ASHA settings, or reuse=False: the stopped trials are searched again
    tune("scientific", "bpr", "id", space=space, epochs=6, budget="asha", num_cpus=2,
         asha={"grace_period": 3, "reduction_factor": 2})
    assert sorted(t.run_id for t in launched[0]) == sorted(trials[trials.status == "stopped_early"].run_id)


@real("scientific")
def test_cli_tune_prints_the_selection(issue_search, monkeypatch, capsys):
    (trials, selected), root = issue_search
    monkeypatch.setenv("MOTOR_RUNS", str(root))
    monkeypatch.setattr(tune_ray, "_launch", lambda *a, **k: pytest.fail("launched"))
    from motor.cli import main

    rc = main(["tune", "--dataset", "scientific", "--backbone", "lightgcn", "--item-repr", "ms",
               "--space", json.dumps(ISSUE_SPACE), "--epochs", "3"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "selected on valid" in out and selected.hyper_parameters.iloc[0] in out
    assert "4 already in the registry" in err
    assert main(["tune", "--backbone", "bpr", "--space", '{"reg_wieght": [1]}']) == 2
    assert "reg_wieght" in capsys.readouterr().err


# ---- the tuned comparison table (no Ray) ----

def test_tuned_table_matches_a_naive_computation(small_synth_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    cfg = {"dataset": "tiny_synth", "backbone": "bpr", "epochs": 2, "dim": 16, "n_tokens": 2, "n_centroids": 16}
    id_runs = [run(**cfg, item_repr="id", hparams={"reg_weight": 1e-2}, seed=s, keep_model=False).run_id
               for s in (0, 1)]
    ms_runs = [run(**cfg, item_repr="ms", seed=s, keep_model=False).run_id for s in (0, 1)]
    selected = pd.DataFrame({"dataset": "tiny_synth", "backbone": "bpr", "item_repr": ["id", "ms"],
                             "hyper_parameters": ["reg_weight=0.01", ""], "run_ids": [tuple(id_runs),
                                                                                     tuple(ms_runs)]})
    t = analysis.tuned_table(runs.load(), selected).set_index("item_repr")
    rec = {r: [runs.read(i)["test"]["recall@20"] for i in ids] for r, ids in (("id", id_runs), ("ms", ms_runs))}
    assert t.loc["ms", "mean"] == pytest.approx(np.mean(rec["ms"]))
    assert t.loc["ms", "std"] == pytest.approx(np.std(rec["ms"], ddof=1))
    assert t.loc["ms", "improvement_%"] == pytest.approx(100 * (np.mean(rec["ms"]) / np.mean(rec["id"]) - 1))
    for seed in (0, 1):
        a, b = runs.read(id_runs[seed])["per_user"], runs.read(ms_runs[seed])["per_user"]
        m = a.merge(b, on="user")
        p = stats.ttest_rel(m["recall@20_y"], m["recall@20_x"]).pvalue
        assert t.loc["ms", "p_values"][seed] == pytest.approx(p, nan_ok=True)
    assert t.loc["id", "p_values"] == () and t.loc["id", "improvement_%"] == pytest.approx(0.0)
    report = analysis.tuned_report(runs.load(), selected)
    assert report.loc[("tiny_synth", "bpr", "id"), "hyper-parameters"] == "reg_weight=0.01"
    assert report.loc[("tiny_synth", "bpr", "ms"), "hyper-parameters"] == "(defaults)"


@pytest.fixture
def small_synth_folder(tmp_path, monkeypatch, small_synth):
    """``small_synth`` written as an MMRec folder ``tiny_synth`` under a fresh data root."""
    folder = tmp_path / "data" / "tiny_synth"
    folder.mkdir(parents=True)
    rows = []
    for label, m in enumerate((small_synth.train, small_synth.valid, small_synth.test)):
        coo = m.tocoo()
        rows += [(u, i, label) for u, i in zip(coo.row, coo.col)]
    df = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).sort_values(["userID", "x_label"])
    df.insert(2, "rating", 1.0)
    df.insert(3, "timestamp", range(len(df)))
    df.to_csv(folder / "tiny_synth.inter", sep="\t", index=False)
    for name, f in small_synth.features.items():
        np.save(folder / f"{name}_feat.npy", np.asarray(f, dtype=np.float32))
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path / "data"))
    return folder


def test_tune_seeds_and_progress_helpers():
    assert tune_ray._hms(75) == "1m15s" and tune_ray._hms(3700) == "1h01m"
    assert tune_ray._hms(float("nan")) == "?"
    empty = pd.DataFrame({"dataset": ["x"], "backbone": ["bpr"], "item_repr": ["id"], "run_ids": [()],
                          "hyper_parameters": [None], "point": [0], "params": [{}], "config": [None]})
    out = tune_seeds(empty, seeds=(0, 1), progress=False)  # nothing selected: nothing to repeat, nothing launched
    assert out.run_ids.iloc[0] == ()
    assert callable(motor.tune)


def test_progress_lines_one_per_trial_in_small_searches_and_sparse_in_large_ones(capsys):
    """Small searches print every finished trial; large ones print improvements, the last trial and a line at
    most every ``every`` seconds, so a 300-trial search does not print 300 lines into a notebook."""
    from types import SimpleNamespace

    _ProgressLines = tune_ray._ProgressLines

    def finish(total: int, valid) -> list[str]:
        payload = [{"label": f"t{i}"} for i in range(total)]
        p = _ProgressLines(total, payload, "recall@20", "test", every=3600.0, per_trial_up_to=50)
        capsys.readouterr()
        for i in range(total):
            trial = SimpleNamespace(config={"i": i}, last_result={"complete": 1, "best_valid": valid(i)})
            p.on_trial_complete(0, [], trial)
        return capsys.readouterr().err.strip().splitlines()

    assert len(finish(10, lambda i: 0.1)) == 10
    lines = finish(200, lambda i: 0.5 if i == 120 else 0.1)  # improvements at trials 0 and 120, then the end
    assert len(lines) == 3
    assert lines[-1].startswith("[tune] 200/200 trials done") and "0.5000 (t120)" in lines[-1]


# ---- the metric, a search that selects nothing, and what a search leaves behind ----


@pytest.mark.parametrize("metric", ["recall@x", "recall", "nope@20", "recall@50"])
def test_metric_is_checked_before_anything_runs(metric, monkeypatch, capsys):
    monkeypatch.setattr(tune_ray, "_run_trials", lambda *a, **k: pytest.fail("trials started"))
    with pytest.raises(ValueError, match=rf"metric '{metric}' is not a valid metric.*'recall@20'"):
        tune("synthetic", "bpr", "id", {"reg_weight": [1e-3]}, epochs=1, metric=metric)
    from motor.cli import main

    assert main(["tune", "--backbone", "bpr", "--item-repr", "id", "--metric", metric]) == 2
    assert f"metric '{metric}' is not a valid metric" in capsys.readouterr().err


def _watch_ray(monkeypatch, fail: bool = False) -> dict:
    """Wrap the search's Ray Tune call: note its work folder and the processes under this one while Ray is up
    (Ray's own and its workers); ``fail``: raise there, as an interrupted search would."""
    import psutil

    seen = {}
    real_fit = tune_ray._fit

    def fit(todo, workdir, *args, **kwargs):
        seen["workdir"] = Path(workdir)
        seen["procs"] = psutil.Process().children(recursive=True)
        assert seen["procs"], "Ray started no process"
        if fail:
            raise KeyboardInterrupt("interrupted")
        grid = real_fit(todo, workdir, *args, **kwargs)
        seen["procs"] += psutil.Process().children(recursive=True)
        return grid

    monkeypatch.setattr(tune_ray, "_fit", fit)
    return seen


def _nothing_left(seen: dict) -> None:
    """Every process seen while Ray was up has ended, and the search's temp folder is gone."""
    import time

    import psutil

    deadline = time.monotonic() + 30
    alive = seen["procs"]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.5)
    assert not alive, [" ".join(p.cmdline()[:3]) for p in alive]
    assert not seen["workdir"].exists()
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(seen["workdir"]) in " ".join(p.info["cmdline"] or [])]
    assert not mine


def test_a_search_leaves_no_ray_process_or_folder_behind(tmp_path, monkeypatch):
    shutdown()
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    seen = _watch_ray(monkeypatch)
    trials, selected = tune("synthetic", "bpr", "id", {"reg_weight": [1e-3]}, epochs=1, num_cpus=1,
                            progress=False)
    assert list(trials.status) == ["trained"] and selected.run_ids.iloc[0] == tuple(trials.run_id)
    _nothing_left(seen)


def test_a_search_that_selects_nothing_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    shutdown()
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the trials' registry should be")
    env = tune_ray._paths_env()
    monkeypatch.setattr(tune_ray, "_paths_env", lambda: {**env, "MOTOR_RUNS": str(blocked)})  # every trial fails
    seen = _watch_ray(monkeypatch)
    with pytest.raises(tune_plan.TuneError, match=r"selected nothing on valid recall@20 for synthetic/bpr/id: "
                                                    r"2 trials \(2 error\); first error: .*not-a-folder.*Fix:") as err:
        tune("synthetic", "bpr", "id", {"reg_weight": [1e-3, 1e-4]}, epochs=1, num_cpus=1, progress=False)
    assert list(err.value.trials.status) == ["error", "error"]
    _nothing_left(seen)
    # the CLI: the trials and the reason on stderr, a failing exit status
    seen = _watch_ray(monkeypatch)
    from motor.cli import main

    assert main(["tune", "--dataset", "synthetic", "--backbone", "bpr", "--item-repr", "id", "--space",
                 '{"reg_weight": [1e-3]}', "--epochs", "1", "--num-cpus", "1", "--quiet"]) == 1
    assert "motor tune: error: the search selected nothing" in capsys.readouterr().err
    _nothing_left(seen)


def test_an_interrupted_search_leaves_nothing_behind(tmp_path, monkeypatch):
    shutdown()
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    seen = _watch_ray(monkeypatch, fail=True)
    with pytest.raises(KeyboardInterrupt):
        tune("synthetic", "bpr", "id", {"reg_weight": [1e-3]}, epochs=1, num_cpus=1, progress=False)
    _nothing_left(seen)


def test_a_damaged_trial_run_is_named_and_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    trials = plan("synthetic", "bpr", "id", {"reg_weight": [1e-3, 1e-4]}, epochs=1)
    for t in trials:
        run(t.config, progress=False, keep_model=False)
    damaged = runs.run_path(trials[1].run_id) / "metrics.json"
    damaged.write_text('{"valid": {"recall@20": 0.1,')
    launched = []
    monkeypatch.setattr(tune_ray, "_launch", lambda todo, **k: launched.append(todo) or {})
    with pytest.warns(UserWarning, match=rf"run {trials[1].run_id}: {damaged} cannot be read .*The trial is "
                                         "trained again"):
        table, selected = tune("synthetic", "bpr", "id", {"reg_weight": [1e-3, 1e-4]}, epochs=1, progress=False)
    assert [t.run_id for t in launched[0]] == [trials[1].run_id]
    assert list(table.status) == ["reused", "not_run"] and selected.run_ids.iloc[0] == (trials[0].run_id,)


@pytest.mark.parametrize("content", ["[1, 2]", "null", '{"some-run": "stopped"}', '{"r": {"settings": 3}}', "{"])
def test_a_malformed_asha_record_is_named_and_ignored(tmp_path, monkeypatch, content):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "runs" / runs.TUNE_STOPS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(UserWarning, match=rf"{path}: .*those trials run again. Fix: delete the file"):
        assert runs.read_tune_stops() == {}
    with pytest.warns(UserWarning, match=str(path)):  # a later record replaces the malformed one
        runs.record_tune_stops({"a-run": {"best_valid": 0.1, "epochs_run": 2}}, {"metric": "recall@20"})
    assert runs.read_tune_stops() == {"a-run": {"settings": {"metric": "recall@20"}, "best_valid": 0.1,
                                                      "epochs_run": 2}}


def test_a_killed_search_leaves_nothing_a_later_search_keeps(tmp_path):
    """``kill -9`` of a search's process: the next search ends that Ray's processes and removes its folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import os, sys, time, tempfile\nfrom pathlib import Path\nimport motor.tune\n"
            "import importlib; t = importlib.import_module('motor.tune.ray')\n"
            "w = Path(tempfile.mkdtemp(prefix=f'motor-tune-{os.getpid()}-'))\n"
            "t._init_ray(None, 1, 1, w / 'r')\nprint(w, flush=True)\ntime.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        workdir = Path(driver.stdout.readline().strip())
        assert workdir.name.startswith(f"motor-tune-{driver.pid}-")
        left = tune_ray._ray_processes(workdir)
        assert left  # Ray's processes, found by their folder
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    time.sleep(1.0)
    tune_ray._clean_stale()
    deadline = time.monotonic() + 20
    while tune_ray._ray_processes(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert tune_ray._ray_processes(workdir) == [] and not workdir.exists()
    for pid in left:  # those processes are gone (or zombies of a reaped parent)
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
