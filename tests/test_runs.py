"""Run registry hardening (issue 16 points 3, 5): run folders always live under runs_dir(), and one damaged
folder never breaks the registry."""
import json
from pathlib import Path

import numpy as np
import pytest

from motor import runs
from motor.experiment import RunConfig, config_from_dict, dataset_id, run

from .conftest import write_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "registry"))  # a registry per test: counts are exact


def _tiny(folder):
    rng = np.random.default_rng(0)
    rows = [(u, i, 0) for u in range(8) for i in range(6) if (u * 7 + i) % 3] + [(u, u % 6, 1 + u % 2)
                                                                               for u in range(8) if (u * 8) % 3 == 0]
    return write_folder(folder, rows=rows, feats={"text": rng.normal(size=(6, 8)).astype(np.float32)})


def _quick(dataset, **kw):
    return run(dataset=dataset, split="given", backbone="bpr", item_repr="id", epochs=1, progress=False, **kw)


# ------------------------------------------------------------------------------------------ point 3: ids and folders


@pytest.mark.parametrize("form", ["absolute", "relative", "dotdot"])
def test_a_dataset_given_as_a_path_runs_inside_the_registry(tmp_path, monkeypatch, form):
    folder = _tiny(tmp_path / "data" / "shop")
    monkeypatch.chdir(tmp_path / "data")
    dataset = {"absolute": str(folder), "relative": "./shop", "dotdot": "../data/shop"}[form]
    res = _quick(dataset)
    saved = runs.run_path(res.run_id)
    assert saved.parent == runs.runs_dir() and (saved / "metrics.json").is_file()
    assert res.run_id.startswith("shop-") and "/" not in res.run_id
    assert not list(tmp_path.glob("data/*/metrics.json")) and not list(tmp_path.glob("*/metrics.json"))
    assert res.run_id in set(runs.load().run_id)


def test_two_folders_of_one_name_get_different_ids(tmp_path):
    a, b = tmp_path / "a" / "shop", tmp_path / "b" / "shop"
    assert dataset_id(str(a)) != dataset_id(str(b))
    assert dataset_id(str(a)).startswith("shop-") and dataset_id(str(a)) == dataset_id(str(a) + "/")


def test_plain_dataset_names_keep_their_ids():
    assert dataset_id("scientific") == "scientific" and dataset_id("ml-1m") == "ml-1m"
    assert RunConfig(dataset="scientific", backbone="lightgcn", item_repr="ms", seed=0).run_id() == \
        "scientific-random-lightgcn-ms-all-D4-s0-5b12d5f3"  # in the committed registry
    for cfg_file in sorted((REPO / "reports" / "runs").glob("*/config.json")):
        cfg = config_from_dict(json.loads(cfg_file.read_text()))
        assert dataset_id(cfg.dataset) == cfg.dataset
        assert cfg.run_id() == cfg_file.parent.name  # every committed run's id is recomputed from its config


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".", "", "/abs"])
def test_run_path_refuses_ids_that_leave_the_registry(bad):
    with pytest.raises(ValueError, match="invalid run id"):
        runs.run_path(bad)


# ------------------------------------------------------------------------------------------ point 5: damaged registry


def _two_runs(tmp_path):
    folder = _tiny(tmp_path / "shop")
    good = _quick(str(folder), seed=0).run_id
    bad = _quick(str(folder), seed=1).run_id
    return good, bad


@pytest.mark.parametrize("damage", ["bad_json", "missing_key", "not_a_number", "config_list", "buckets",
                                    "latin1"])
def test_load_skips_a_damaged_folder_and_names_it(tmp_path, damage):
    good, bad = _two_runs(tmp_path)
    folder = runs.run_path(bad)
    meta = json.loads((folder / "metrics.json").read_text())
    if damage == "bad_json":
        (folder / "metrics.json").write_text('{"valid": ')
    elif damage == "missing_key":
        cfg = json.loads((folder / "config.json").read_text())
        del cfg["backbone"]
        (folder / "config.json").write_text(json.dumps(cfg))
    elif damage == "not_a_number":
        meta["test"]["recall@20"] = "high"
        (folder / "metrics.json").write_text(json.dumps(meta))
    elif damage == "config_list":
        (folder / "config.json").write_text("[1, 2]")
    elif damage == "buckets":
        (folder / "buckets.csv").write_text('bucket,recall@20\n"unclosed,1\n')
    else:
        (folder / "metrics.json").write_bytes(b'{"valid": "\xe9"}')
    with pytest.warns(UserWarning, match=f"skipped 1 run folder.*{bad}") as rec:
        df = runs.load()
    assert len([w for w in rec if "skipped" in str(w.message)]) == 1
    assert set(df.run_id) == {good}


def test_read_names_the_run_and_file(tmp_path):
    _, bad = _two_runs(tmp_path)
    (runs.run_path(bad) / "per_user_test.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(runs.RunReadError, match=f"run {bad}: .*per_user_test.npz cannot be read.*Fix: delete"):
        runs.read(bad)


def test_reuse_retrains_when_the_saved_run_is_unreadable(tmp_path):
    folder = _tiny(tmp_path / "shop")
    first = _quick(str(folder))
    (runs.run_path(first.run_id) / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="Training it again"):
        again = _quick(str(folder), reuse=True)
    assert again.run_id == first.run_id and again.model is not None  # trained, not read
    assert runs.read(first.run_id)["test"] == again.test
