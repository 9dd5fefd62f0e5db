"""A run folder is a portable artifact: the fitted tokenizer and token ids are stored beside config and weights, so a
copied run scores and re-trains without fitting; strict cold start fits the tokenizer on the training items only."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import motor
from motor import runs
from motor.evaluate import cold_candidates
from motor.experiment import ConfigError, RunConfig, config_from_dict, get_dataset, run, tokenizer_fit_items
from motor.tokenizer import PQTokenizer, fit_tokenizer, tokenizer_from_state, tokenizer_state

REPO = Path(__file__).resolve().parent.parent


def _no_fitting(monkeypatch) -> None:
    """Any tokenizer fit (or cache lookup that could fit) raises."""
    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was fitted")

    monkeypatch.setattr(PQTokenizer, "fit", refuse)
    monkeypatch.setattr(motor.tokenizer, "fit_tokenizer", refuse)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A LightGCN-ms run on the synthetic set with its weights, in its own registry and cache."""
    root = tmp_path_factory.mktemp("portable")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTOR_RUNS", str(root / "runs"))
    mp.setenv("MOTOR_CACHE", str(root / "cache"))
    try:
        res = run(dataset="synthetic", backbone="lightgcn", item_repr="ms", n_tokens=2, epochs=2, progress=False)
        yield res
    finally:
        mp.undo()


def _new_features(seed: int = 0) -> dict[str, np.ndarray]:
    ds = get_dataset("synthetic")
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(5, ds.features[m].shape[1])).astype(np.float32) for m in ds.modalities}


def test_run_folder_holds_tokenizer_state_without_pickles(saved):
    folder = saved.folder
    assert folder is not None and (folder / runs.TOKENIZER_FILE).is_file()
    assert json.loads((folder / "metrics.json").read_text())["schema_version"] == runs.SCHEMA_VERSION
    with np.load(folder / runs.TOKENIZER_FILE, allow_pickle=False) as z:  # raises if any entry is a pickle
        entries = {k: z[k] for k in z.files}
    for m in get_dataset("synthetic").modalities:
        assert str(entries[f"{m}/method"]) == "opq"
        assert int(entries[f"{m}/D"]) == 2 and int(entries[f"{m}/K"]) == entries[f"{m}/centroids"].shape[1]
        np.testing.assert_array_equal(entries[f"{m}/token_ids"], saved.token_ids[m])
        assert entries[f"{m}/rotation"].shape[0] == 2 * entries[f"{m}/centroids"].shape[2]


def test_copied_run_scores_without_fitting(saved, tmp_path, monkeypatch):
    """The issue's bar: the folder copied to an empty registry on a fresh cache, tokenizer fitting made to raise,
    gives the same recommend and score_new_items output as the original."""
    feats = _new_features()
    want_rec = motor.recommend(saved, [0, 5, 9], k=10)
    want_new = motor.score_new_items(saved, feats)
    registry = tmp_path / "elsewhere"
    shutil.copytree(saved.folder, registry / saved.run_id)
    monkeypatch.setenv("MOTOR_RUNS", str(registry))
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path / "fresh-cache"))
    _no_fitting(monkeypatch)
    for copy in (saved.run_id, motor.load_run(registry / saved.run_id)):
        rec = motor.recommend(copy, [0, 5, 9], k=10)
        assert rec.item.tolist() == want_rec.item.tolist()
        np.testing.assert_allclose(rec.score, want_rec.score, rtol=1e-6)
        np.testing.assert_allclose(motor.score_new_items(copy, feats).to_numpy(), want_new.to_numpy(), rtol=1e-6)
    assert not any((tmp_path / "fresh-cache").rglob("*.npz"))  # nothing was fitted or cached


def test_load_run_opens_a_folder_anywhere(saved, tmp_path):
    folder = shutil.copytree(saved.folder, tmp_path / "some" / "copy")
    res = motor.load_run(folder)
    assert res.run_id == "copy" and res.folder == folder
    assert res.valid == saved.valid and res.test == saved.test and res.best_epoch == saved.best_epoch
    for m, ids in saved.token_ids.items():
        np.testing.assert_array_equal(res.token_ids[m], ids)
        np.testing.assert_array_equal(res.tokenizers[m].centroids, saved.tokenizers[m].centroids)
    with pytest.raises(FileNotFoundError, match="not a complete run folder"):
        motor.load_run(tmp_path / "some")


def test_damaged_tokenizer_file_is_named(saved, tmp_path):
    folder = shutil.copytree(saved.folder, tmp_path / "damaged")
    with np.load(folder / runs.TOKENIZER_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k.endswith("/centroids"))
    arrays[key] = arrays[key] + 1  # edited: the checksum no longer matches
    np.savez(folder / runs.TOKENIZER_FILE, **arrays)
    with pytest.raises(runs.RunReadError, match="tokenizer.npz.*checksum"):
        motor.load_run(folder)
    obj = np.empty(1, dtype=object)
    obj[0] = {"a": 1}
    np.savez(folder / runs.TOKENIZER_FILE, text__x=obj)  # a pickled object is refused, never unpickled
    with pytest.raises(runs.RunReadError, match="tokenizer.npz"):
        motor.load_run(folder)


def test_run_saved_without_tokenizer_state_refits_and_checks(saved, tmp_path, monkeypatch):
    """A run written before tokenizer state was stored: the old path, refit with the run's settings and check."""
    folder = shutil.copytree(saved.folder, tmp_path / "old" / saved.run_id)
    (folder / runs.TOKENIZER_FILE).unlink()
    monkeypatch.setenv("MOTOR_RUNS", str(folder.parent))
    feats = _new_features(1)
    old = motor.load_run(folder)
    assert old.tokenizers is None
    np.testing.assert_allclose(motor.score_new_items(old, feats).to_numpy(),
                               motor.score_new_items(saved, feats).to_numpy(), rtol=1e-6)
    real_encode = PQTokenizer.encode  # the refit (a cache hit now) encodes differently from the run's ids
    monkeypatch.setattr(PQTokenizer, "encode", lambda self, x, batch=8192: real_encode(self, x, batch) ^ 1)
    with pytest.raises(RuntimeError, match="does not reproduce the token ids.*Train the run again"):
        motor.score_new_items(old, feats)


def test_tokenizer_state_round_trip_and_unknown_method(small_synth):
    x = small_synth.features["text"]
    tok = fit_tokenizer(x, use_cache=False, n_tokens=2, n_centroids=16)
    again = tokenizer_from_state(tokenizer_state(tok))
    np.testing.assert_array_equal(again.encode(x), tok.encode(x))
    with pytest.raises(ValueError, match="method 'rq2' is not one this motor knows"):
        tokenizer_from_state({**tokenizer_state(tok), "method": np.array("rq2")})
    with pytest.raises(ValueError, match="K=3"):
        tokenizer_from_state({**tokenizer_state(tok), "K": np.array(3)})


RETRAIN = """
import json, sys
import motor
from motor.experiment import config_from_dict, run
from motor.tokenizer import PQTokenizer
mode, folder = sys.argv[1], sys.argv[2]
if mode == "train":
    r = run(dataset="synthetic", backbone="lightgcn", item_repr="ms", n_tokens=2, epochs=3, patience=3,
            progress=False)
else:
    def refuse(*a, **k):
        raise AssertionError("the tokenizer was fitted")
    PQTokenizer.fit = refuse
    motor.tokenizer.fit_tokenizer = refuse
    cfg = config_from_dict(motor.load_run(folder).config)
    r = run(cfg, token_ids_from=folder, progress=False, save=False)
print(json.dumps({"run_id": r.run_id, "valid": r.valid, "test": r.test, "best_epoch": r.best_epoch}))
"""


def _child(args: list[str], threads: int, tmp_path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MOTOR_CACHE": str(tmp_path / f"cache{threads}"),
           "MOTOR_RUNS": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, "-c", RETRAIN, *args], env=env, capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retrain_from_stored_ids_under_other_threads_gives_identical_metrics(tmp_path):
    first = _child(["train", ""], 1, tmp_path)
    folder = tmp_path / "runs" / first["run_id"]
    again = _child(["retrain", str(folder)], 2, tmp_path)  # another thread count, a fresh cache, no fitting
    assert again == first


def test_token_source_must_be_the_same_tokenization(saved):
    with pytest.raises(ConfigError, match="n_tokens \\(2 there, 4 here\\)"):
        run(dataset="synthetic", backbone="bpr", item_repr="ms", n_tokens=4, epochs=1, progress=False, save=False,
            token_ids_from=str(saved.folder))
    with pytest.raises(ConfigError, match="no saved run there"):
        run(dataset="synthetic", item_repr="ms", epochs=1, progress=False, save=False, token_ids_from="nope")


# ------------------------------------------------------------------------------------------ strict cold start


def test_strict_cold_start_fits_on_the_non_cold_items():
    cfg = RunConfig(dataset="synthetic", split="cold_item", n_tokens=2)
    ds = get_dataset("synthetic", "cold_item", 0, cfg.cold_fraction)
    items = tokenizer_fit_items(cfg, ds)
    cold = np.union1d(cold_candidates(ds, "valid"), cold_candidates(ds, "test"))
    assert len(cold) > 0 and len(items) + len(cold) == ds.n_items
    assert not np.isin(cold, items).any()
    assert tokenizer_fit_items(RunConfig(dataset="synthetic", split="cold_item", tokenizer_items="all"), ds) is None
    assert tokenizer_fit_items(RunConfig(dataset="synthetic", split="random"), get_dataset("synthetic")) is None


def test_strict_cold_start_scores_cold_items_as_new_items(tmp_path, monkeypatch):
    """The cold test items of a strict run are tokenized exactly as brand-new items: score_new_items with their
    features gives the run's own scores for them (BPR: an item's vector is its representation alone)."""
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path))
    res = run(dataset="synthetic", split="cold_item", backbone="bpr", item_repr="ms", n_tokens=2, epochs=2,
              progress=False)
    ds = get_dataset("synthetic", "cold_item", 0, 0.2)
    cold = cold_candidates(ds, "test")
    feats = {m: ds.features[m][cold] for m in ds.modalities}
    from motor.recommend import new_item_tokens

    for m, ids in new_item_tokens(res, feats).items():
        np.testing.assert_array_equal(ids, res.token_ids[m][cold])
    with res.model.evaluating():
        import torch

        own = res.model.score(torch.arange(4)).numpy()[:, cold]
    np.testing.assert_allclose(motor.score_new_items(res, feats, users=[0, 1, 2, 3]).to_numpy(), own, rtol=1e-5,
                               atol=1e-6)
    transductive = run(dataset="synthetic", split="cold_item", backbone="bpr", item_repr="ms", n_tokens=2,
                       epochs=1, progress=False, save=False, tokenizer_items="all")
    assert transductive.run_id != res.run_id
    assert any(not np.array_equal(transductive.token_ids[m], res.token_ids[m]) for m in ds.modalities)


def test_committed_cold_runs_keep_their_ids_and_read_as_transductive():
    """Runs saved before strict cold start were fitted on all items: their ids and meaning are unchanged, and
    their variant says so (so tables never average them with strict runs)."""
    folders = sorted((REPO / "reports" / "runs").glob("*-cold_item-*"))
    saved = [(f, json.loads((f / "config.json").read_text())) for f in folders]
    before = [(f, c) for f, c in saved if "tokenizer_items" not in c]  # saved before the option existed
    after = [(f, c) for f, c in saved if "tokenizer_items" in c]
    if not before:
        pytest.skip("no committed cold_item runs saved before strict cold start")
    for folder, saved_cfg in before[:5]:
        cfg = config_from_dict(saved_cfg)
        assert cfg.tokenizer_items == "all" and cfg.run_id() == folder.name
        assert "tokenizer_items=all" in runs.variant_of(saved_cfg)
    for folder, saved_cfg in after[:5]:  # strict runs made since: the default, no variant
        cfg = config_from_dict(saved_cfg)
        assert cfg.run_id() == folder.name
        assert (cfg.tokenizer_items == "train") == ("tokenizer_items=all" not in runs.variant_of(saved_cfg))
    strict = RunConfig(dataset="ml100k", split="cold_item", item_repr="ms")
    assert strict.run_id() != RunConfig(**{**strict.__dict__, "tokenizer_items": "all"}).run_id()
    assert runs.variant_of({"split": "cold_item", "tokenizer_items": "train"}) == ""
    assert RunConfig(split="random", tokenizer_items="all").run_id() == RunConfig(split="random").run_id()
