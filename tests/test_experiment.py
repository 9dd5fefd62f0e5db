import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import motor
from motor import analysis, runs
from motor.experiment import RunConfig, get_dataset, resolve_dataset_name, run
from motor.tokenizer import n_centroids_of


def test_run_saves_and_registry_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    a = run(dataset="synthetic", backbone="lightgcn", item_repr="id", epochs=3, progress=False, save_vectors=True)
    b = run(dataset="synthetic", backbone="lightgcn", item_repr="ms", n_tokens=2, epochs=3, progress=False)
    assert set(a.valid) >= {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    n_users, n_items = motor.synthetic().n_users, motor.synthetic().n_items
    assert a.params["item"] == a.params["id_table"] == n_items * 64 and a.params["item_fraction"] == 1.0
    # LightGCN's only other parameters are its user table, the same for both item representations
    assert a.params["total"] - a.params["item"] == b.params["total"] - b.params["item"] == n_users * 64
    # ms, 2 tokens per modality: one K x 64 table per (modality, position), plus the cross networks
    k = n_centroids_of(motor.tokenize(get_dataset("synthetic"), 2))
    assert b.params["item"] > 2 * 2 * k * 64
    assert b.params["item_fraction"] == pytest.approx(b.params["item"] / (n_items * 64))
    df = runs.load()
    assert set(df.run_id) == {a.run_id, b.run_id}
    r20 = analysis.metric_frame(df, "recall", 20)
    assert sorted(r20.value) == sorted([a.test["recall@20"], b.test["recall@20"]])
    assert {"0-5", ">50"} <= set(df[df.bucket != "all"].bucket)
    table = analysis.compare_table(df)
    assert table.set_index("item_repr").loc["id", "improvement_%"] == 0
    assert set(analysis.main_runs(df).run_id) == {a.run_id}  # the D=2 run is not a main-comparison run
    md = analysis.results_markdown(df)
    assert f"| synthetic | lightgcn | id | {a.test['recall@20']:.4f} | {a.test['ndcg@20']:.4f} | 1 | — |" in md
    sig = analysis.significance_table(df)
    assert len(sig) == 1 and 0 <= sig.t_pvalue.iloc[0] <= 1
    # every run records its tie shares and ranking rule; a token run the share of items that share their code
    assert set(df.ties) == {"expected"} and 0 <= a.test["tie_share@20"] <= 1
    shared = df[(df.metric == "params_shared_code_fraction")].set_index("run_id").value
    assert list(shared.index) == [b.run_id]
    ids = motor.tokenize(get_dataset("synthetic"), 2)
    assert shared[b.run_id] == pytest.approx(motor.tokenizer.collision_share(ids)["all"])
    prof = runs.read(b.run_id)["hit_profile"]  # where in the top 20 the test hits land
    hits_per_user = (b.per_user["recall@20"] * b.per_user["n_held"]).mean()
    assert prof[prof.bucket == "all"].hits.sum() == pytest.approx(hits_per_user)
    saved = runs.read(a.run_id)
    assert saved["item_vectors"].shape == (500, 64)
    made_by = saved["provenance"]  # which code made the run
    assert made_by["torch"] == __import__("torch").__version__
    assert made_by["git_commit"] == _git_head()
    assert not list((tmp_path / "runs").rglob("*.tmp"))
    # reuse returns the registry copy without training
    again = run(dataset="synthetic", backbone="lightgcn", item_repr="id", epochs=3, progress=False, reuse=True)
    assert again.model is None and again.test == a.test


def test_same_config_same_numbers():
    kw = dict(dataset="synthetic", backbone="bpr", item_repr="ma", n_tokens=2, epochs=2, progress=False, save=False)
    assert run(**kw).test == run(**kw).test


def test_run_id_depends_on_config():
    assert RunConfig(seed=0).run_id() != RunConfig(seed=1).run_id()
    assert RunConfig(device="cpu").run_id() == RunConfig(device="cuda").run_id()
    # the registry's ids predate the tokenizer field: an empty one must leave them unchanged
    old = RunConfig(dataset="ml100k", backbone="bm3", item_repr="id").run_id()
    assert old == "ml100k-random-bm3-id-all-D4-s0-15dd0924"
    assert RunConfig(tokenizer={"subspace_seeds": True}).run_id() != RunConfig().run_id()


def test_variants_are_named_and_kept_out_of_the_main_table():
    assert runs.variant_of({"hparams": {}, "tcn": {}, "tokenizer": {}, "tag": ""}) == ""
    assert runs.variant_of({"tokenizer": {"subspace_seeds": True}, "tcn": {"hidden": [8]}}) == \
        "tcn.hidden=[8],tokenizer.subspace_seeds=True"
    df = pd.DataFrame({"split": ["random"] * 2, "modalities": ["all"] * 2, "n_tokens": [4, 4],
                       "variant": ["", "tokenizer.subspace_seeds=True"]})
    assert analysis.main_runs(df).index.tolist() == [0]
    assert analysis.main_runs(df, variant="tokenizer.subspace_seeds=True").index.tolist() == [1]


def test_missing_default_dataset_falls_back_to_synthetic(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    assert resolve_dataset_name(None) == "synthetic"  # a named one that is missing raises (tests/test_api.py)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "synthetic" in out


def _git_head() -> str | None:
    """The checkout's commit, or None where it is not a git checkout or git is not installed."""
    try:
        head = subprocess.run(["git", "-C", str(Path(runs.__file__).parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True)
    except OSError:
        return None
    return head.stdout.strip() if head.returncode == 0 else None


@pytest.mark.parametrize("git_on_path", [True, False])
def test_cli_train_json_and_its_provenance(tmp_path, git_on_path):
    env = {**os.environ, "MOTOR_RUNS": str(tmp_path), "MOTOR_DATA": str(tmp_path)}
    if not git_on_path:
        env["PATH"] = ""  # no git to ask: the run still trains and is saved, with versions but no commit
    out = subprocess.run([sys.executable, "-m", "motor", "train", "--dataset", "synthetic", "--backbone", "bpr",
                          "--item-repr", "ms", "--epochs", "2", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout)
    assert 0 <= res["test"]["recall@20"] <= 1
    made_by = json.loads((tmp_path / res["run_id"] / "metrics.json").read_text())["provenance"]
    assert made_by["torch"] == __import__("torch").__version__
    assert made_by["git_commit"] == (_git_head() if git_on_path else None)
    if git_on_path:
        listing = subprocess.run([sys.executable, "-m", "motor", "runs"], capture_output=True, text=True, env=env,
                                 check=True)
        assert "bpr" in listing.stdout


def test_run_grid_reuses_trains_or_lists_missing(tmp_path, monkeypatch):
    from motor.experiment import run_grid

    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    cfgs = [RunConfig(dataset="synthetic", backbone="bpr", item_repr="id", seed=s, epochs=2) for s in (0, 1)]
    done = run(cfgs[0], progress=False)
    results, missing = run_grid(cfgs, train_missing=False)
    assert [r.run_id for r in results] == [done.run_id] and missing == [cfgs[1].run_id()]
    assert results[0].test == done.test and results[0].model is None  # from the registry, not retrained
    results, missing = run_grid(cfgs, train_missing=True, progress=False)
    assert missing == [] and [r.run_id for r in results] == [c.run_id() for c in cfgs]
    assert runs.exists(cfgs[1].run_id())
    table = analysis.compare_table(runs.load()[lambda d: d.run_id == done.run_id])
    assert "(n=" not in analysis.mean_std_pivot(table).iloc[0, 0]


def test_too_many_tokens_blame_n_tokens_not_the_tokenizer():
    with pytest.raises(motor.experiment.ConfigError,
                       match=r"RunConfig.n_tokens=1000: more tokens per modality than the tokenizer's output "
                             r"dimensions \(max_dim=512.*Fix: n_tokens <= 512"):
        RunConfig(dataset="synthetic", n_tokens=1000).validate()
    RunConfig(dataset="synthetic", n_tokens=600, tokenizer={"max_dim": 600}).validate()  # raised: allowed


def test_a_single_item_dataset_says_so(tmp_path, monkeypatch):
    from .conftest import write_folder

    rows = [(u, 0, label) for u in range(4) for label in (0, 1, 2)]  # one item, each user's rows duplicates
    write_folder(tmp_path / "one", rows=rows, feats={"text": np.ones((1, 4), dtype=np.float32)})
    monkeypatch.setenv("MOTOR_DATA", str(tmp_path))
    with pytest.warns(UserWarning, match="duplicate"), \
            pytest.raises(motor.data.DataError, match=r"dataset 'one' has 1 item after dropping duplicate "
                                                      r"\(user, item\) rows .*needs at least 2. Fix"):
        run(dataset="one", split="given", backbone="bpr", item_repr="id", epochs=1, progress=False)
