"""The public API: lazy ``import motor``, recommend / score_new_items, dataset resolution, notebook parameters, the
user's run registry."""
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

import motor
from motor import runs
from motor.data import DataError
from motor.experiment import DEFAULT_DATASET, get_dataset, resolve_dataset_name, run
from motor.params import DATASET, ParameterError, coerce, notebook_params, one_of, to_bool

from .conftest import write_folder

REPO = Path(__file__).resolve().parent.parent


def test_import_motor_is_light_and_exports_the_readme_api():
    code = ("import sys, motor; heavy = [m for m in ('torch', 'faiss') if m in sys.modules]; "
            "print(heavy); print(motor.run, motor.run_grid, motor.RunConfig, motor.runs.load, motor.recommend, "
            "motor.score_new_items, motor.synthetic, motor.tokenize, motor.notebook_params)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, second = out.splitlines()
    assert first == "[]"  # torch and faiss load on first use, not on import
    assert "function run" in second and "function recommend" in second and "function synthetic" in second


def test_functions_named_like_their_module_stay_functions():
    import motor.recommend  # noqa: F401  (importing the submodule must not replace the function)
    import motor.synthetic  # noqa: F401

    assert callable(motor.recommend) and callable(motor.synthetic)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        motor.nope  # noqa: B018


# ------------------------------------------------------------------------------------------------- datasets


def test_default_dataset_falls_back_to_synthetic_with_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    assert resolve_dataset_name(None) == "synthetic"
    assert resolve_dataset_name("") == "synthetic"
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "synthetic" in out and DEFAULT_DATASET in out
    write_folder(tmp_path / DEFAULT_DATASET)
    assert resolve_dataset_name(None) == DEFAULT_DATASET
    assert capsys.readouterr().out == ""


def test_named_missing_dataset_is_an_error_listing_those_found(monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    write_folder(tmp_path / "tiny")
    with pytest.raises(DataError) as e:
        resolve_dataset_name("scientfic")
    assert "'scientfic'" in str(e.value) and "tiny" in str(e.value) and "synthetic" in str(e.value)
    assert resolve_dataset_name("tiny") == "tiny" and resolve_dataset_name("synthetic") == "synthetic"
    with pytest.raises(DataError, match="tiny"):
        run(dataset="scientfic", epochs=1, progress=False)


# ----------------------------------------------------------------------------------------- notebook parameters


@pytest.mark.parametrize("raw, expected", [
    ("false", False), ("False", False), ("0", False), (0, False), ("no", False), (False, False),
    ("true", True), ("True", True), ("1", True), (1, True), ("YES", True), (True, True)])
def test_booleans_from_papermill_strings(raw, expected):
    assert to_bool(raw, "fast") is expected
    assert coerce(raw, bool | None, "fast") is expected


@pytest.mark.parametrize("raw, kind, expected", [
    ("text", list[str] | None, ["text"]),
    ("text,image", list[str] | None, ["text", "image"]),
    ("[text, image]", list[str], ["text", "image"]),  # YAML
    ('["text"]', list[str], ["text"]),  # JSON
    ("None", list[str] | None, None),
    ("null", list[str] | None, None),
    (None, list[str] | None, None),
    ("0,1,2", list[int], [0, 1, 2]),
    (1, list[int], [1]),  # papermill turns "-p seeds 1" into an int
    ("8", int, 8), (8.0, int, 8), ("1e-3", float, 1e-3), (3, float, 3.0),
    ("id,ms", list[one_of("id", "ms", "ma")], ["id", "ms"]),
    ("4", one_of(2, 4, 8), 4),
    ('{"n_layers": 2}', dict, {"n_layers": 2}),
    ("n_layers: 2", dict, {"n_layers": 2}),
    (123, str, "123"),
])
def test_coerce(raw, kind, expected):
    assert coerce(raw, kind, "p") == expected


@pytest.mark.parametrize("raw, kind, words", [
    ("maybe", bool, ["'fast'", "true/false", "'maybe'"]),
    ("2", bool, ["'fast'", "boolean"]),
    ("x", int, ["'fast'", "integer"]),
    ("1.5", int, ["integer"]),
    ("abc", float, ["number"]),
    ("bert", one_of("id", "ms"), ["'fast'", "['id', 'ms']", "'bert'"]),
    ("id,bert", list[one_of("id", "ms")], ["'fast[1]'", "['id', 'ms']"]),
    ("None", int, ["integer"]),
    ("[1, 2", list[int], ["'fast'"]),
])
def test_bad_values_name_the_parameter_and_the_allowed_values(raw, kind, words):
    with pytest.raises(ParameterError) as e:
        coerce(raw, kind, "fast")
    assert all(w in str(e.value) for w in words), str(e.value)


def test_notebook_params_writes_back_and_rejects_unknown_names(monkeypatch, tmp_path):
    ns = {"fast": "false", "modalities": "text", "seeds": "0,1", "backbone": "lightgcn", "In": [], "_": None,
          "np": np, "Literal": Literal, "one_of": one_of}
    out = notebook_params(ns, {"fast": bool | None, "modalities": list[str] | None, "seeds": list[int],
                               "backbone": one_of("bpr", "lightgcn")})
    assert out == {"fast": False, "modalities": ["text"], "seeds": [0, 1], "backbone": "lightgcn"}
    assert ns["fast"] is False and ns["modalities"] == ["text"]
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['datset'\].*takes: dataset"):
        notebook_params({"dataset": "x", "datset": "y"}, {"dataset": str})
    with pytest.raises(ParameterError, match="not defined"):
        notebook_params({}, {"dataset": str})
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    assert notebook_params({"dataset": None, "DATASET": DATASET}, {"dataset": DATASET}) == {"dataset": "synthetic"}
    with pytest.raises(DataError):
        notebook_params({"dataset": "tinyy"}, {"dataset": DATASET})


def test_fast_mode_reads_papermill_strings(monkeypatch):
    from motor.params import fast_mode

    monkeypatch.setenv("MOTOR_FAST", "1")
    assert fast_mode("false") is False and fast_mode("False") is False and fast_mode(None) is True
    with pytest.raises(ParameterError):
        fast_mode("nope")


# ---------------------------------------------------------------------------------------------- registry


def test_users_registry_is_git_ignored_and_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("MOTOR_RUNS")
    assert runs.runs_dir() == REPO / "runs"
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "runs/some-run/metrics.json"])
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0
    assert subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "reports/runs/x/metrics.json"]).returncode == 1
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path))
    assert runs.runs_dir() == tmp_path


def test_split_seeds_are_not_averaged_into_one_cell():
    assert runs.variant_of({"split_seed": 0}) == ""
    assert runs.variant_of({"split_seed": 1}) == "split_seed=1"


# ------------------------------------------------------------------------------ recommend / score new items


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LightGCN-ms and a BPR-ms run on the synthetic set (2 epochs), with the default dataset resolution."""
    root = tmp_path_factory.mktemp("api")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTOR_RUNS", str(root / "runs"))
    mp.setenv("MOTOR_CACHE", str(root / "cache"))
    mp.setenv("MOTOR_DATA", str(root / "no-data"))
    try:
        out = {bb: run(backbone=bb, item_repr="ms", n_tokens=2, epochs=2, progress=False)
               for bb in ("lightgcn", "bpr")}
        out["id"] = run(backbone="bpr", item_repr="id", epochs=1, progress=False)
        out["registry"] = root / "runs"
        yield out
    finally:
        mp.undo()


@pytest.fixture
def registry_of(trained, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(trained["registry"]))
    return trained


def test_no_dataset_named_trains_the_synthetic_set(trained):
    assert trained["bpr"].config["dataset"] == "synthetic"


def test_recommend_ranks_unseen_items_by_score(trained):
    res = trained["lightgcn"]
    ds = get_dataset("synthetic")
    rec = motor.recommend(res, [0, 7], k=10)
    assert list(rec.columns) == ["user", "rank", "item", "score", "text", "held_out"]
    assert len(rec) == 20 and rec.groupby("user")["rank"].apply(list).tolist() == [list(range(1, 11))] * 2
    with res.model.evaluating():
        full = res.model.score(torch.tensor([0, 7])).numpy()
    for row, user in enumerate([0, 7]):
        got = rec[rec.user == user]
        seen = set(ds.train[user].indices)
        assert not seen & set(got.item)  # training items are masked
        unseen = np.array([i for i in range(ds.n_items) if i not in seen])
        best = unseen[np.argsort(-full[row, unseen], kind="stable")[:10]]
        assert got.item.tolist() == best.tolist()  # the naive ranking over unseen items
        np.testing.assert_allclose(got.score, full[row, best], rtol=1e-6)
        assert got.text.tolist() == [ds.item_text[i] for i in best]
        for rec_row in got.itertuples():
            expect = "valid" if ds.valid[user, rec_row.item] else "test" if ds.test[user, rec_row.item] else ""
            assert rec_row.held_out == expect
    with_seen = motor.recommend(res, 0, k=ds.n_items, exclude_seen=False)
    assert len(with_seen) == ds.n_items


def test_recommend_from_a_run_id_rebuilds_the_same_model(registry_of):
    res = registry_of["lightgcn"]
    state_file = runs.run_path(res.run_id) / "model_state.npz"
    assert state_file.is_file()
    rng_before = torch.get_rng_state()
    from_id = motor.recommend(res.run_id, [0, 7], k=10)
    assert torch.equal(rng_before, torch.get_rng_state())  # rebuilding leaves the caller's RNG alone
    live = motor.recommend(res, [0, 7], k=10)
    assert from_id.item.tolist() == live.item.tolist()
    np.testing.assert_allclose(from_id.score, live.score, rtol=1e-6)
    from motor.experiment import from_registry

    saved = from_registry(res.run_id)  # a RunResult without its model: rebuilt from the registry
    assert motor.recommend(saved, 3, k=5).item.tolist() == motor.recommend(res, 3, k=5).item.tolist()


def test_recommend_without_saved_weights_says_how_to_fix(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path))
    res = run(dataset="synthetic", backbone="bpr", item_repr="ms", n_tokens=2, epochs=1, progress=False,
              save_model=False)
    with pytest.raises(FileNotFoundError, match="without its weights.*save_model=True"):
        motor.recommend(res.run_id, 0)
    with pytest.raises(ValueError, match=r"no user with userID \[800\]: it holds ids 0..799"):
        motor.recommend(res, 800)


def test_new_item_with_known_features_scores_like_that_item(trained):
    """BPR's item vector is its representation alone: a 'new' item with item j's features gets j's scores."""
    res = trained["bpr"]
    ds = get_dataset("synthetic")
    items = [3, 7, 250]
    scores = motor.score_new_items(res, {m: ds.features[m][items] for m in ds.modalities}, users=[0, 1, 2])
    assert scores.shape == (3, 3) and scores.index.name == "user"
    with res.model.evaluating():
        expected = res.model.score(torch.tensor([0, 1, 2]))[:, items].numpy()
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    from motor.recommend import new_item_tokens

    tokens = new_item_tokens(res, {m: ds.features[m][items] for m in ds.modalities})
    for m, ids in tokens.items():
        assert np.array_equal(ids, motor.tokenize(ds, 2, modalities=None)[m][items])


def test_new_items_in_a_graph_model_are_items_without_edges(registry_of):
    """LightGCN: an item with no interactions keeps only its layer-0 vector in the layer mean (1 / (L + 1))."""
    res = registry_of["lightgcn"]
    ds = get_dataset("synthetic")
    rng = np.random.default_rng(0)
    feats = {m: rng.normal(size=(4, ds.features[m].shape[1])).astype(np.float32) for m in ds.modalities}
    vecs = motor.new_item_vectors(res.run_id, feats)
    from motor.item_repr import build_item_repr
    from motor.recommend import new_item_tokens

    ids = new_item_tokens(res.run_id, feats)
    rep = res.model.item_repr
    fresh = build_item_repr("ms", 4, rep.dim, token_ids=ids, n_centroids=rep.n_centroids)  # the 4 items alone
    fresh.load_state_dict(rep.state_dict())
    with torch.no_grad():
        ego = fresh().numpy()
    np.testing.assert_allclose(vecs, ego / (res.model.n_layers + 1), rtol=1e-5, atol=1e-7)
    scores = motor.score_new_items(res.run_id, feats)
    assert scores.shape == (ds.n_users, 4) and np.isfinite(scores.to_numpy()).all()


def test_an_id_model_cannot_score_new_items(trained):
    ds = get_dataset("synthetic")
    with pytest.raises(ValueError, match="ID model.*no vector for an unseen item"):
        motor.score_new_items(trained["id"], {m: ds.features[m][:2] for m in ds.modalities})


def test_new_item_features_are_checked(trained):
    ds = get_dataset("synthetic")
    res = trained["bpr"]
    good = {m: ds.features[m][:2] for m in ds.modalities}
    with pytest.raises(ValueError, match="missing"):
        motor.score_new_items(res, {ds.modalities[0]: good[ds.modalities[0]]})
    bad = {**good, ds.modalities[0]: good[ds.modalities[0]][:, :3]}
    with pytest.raises(ValueError, match=f"features\\['{ds.modalities[0]}'\\] must have shape"):
        motor.score_new_items(res, bad)
    nan = {**good, ds.modalities[0]: np.full_like(good[ds.modalities[0]], np.nan)}
    with pytest.raises(ValueError, match="NaN"):
        motor.score_new_items(res, nan)


def test_run_result_json_summary_fields(trained):
    from motor.cli import format_summary, run_summary

    s = run_summary(trained["bpr"])
    assert s["dataset"] == "synthetic" and s["epochs_trained"] == 2 and s["stopped"] == "max_epochs"
    json.dumps(s)
    text = format_summary(trained["bpr"], 3.0)
    assert "synthetic (800 users x 500 items)" in text and "2 epochs" in text and "recall@20" in text
