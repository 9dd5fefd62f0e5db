"""motor.recommend / score_new_items / the explorer speak the ids of the user's file (thinned runs, ids not in
file order), saved weights are checked to be the run's own, and bad arguments get errors that name the fix."""
import io
import shutil
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

import motor
from motor import runs
from motor.experiment import get_dataset, run
from motor.widgets import TokenExplorer

RUN = dict(backbone="bpr", item_repr="ms", n_tokens=2, n_centroids=16, dim=16, epochs=1, progress=False,
           split="random")


def _write_shuffled(folder, seed: int = 0):
    """A synthetic set written as an MMRec folder whose itemIDs are a permutation of the generator's items (so
    the file's rows are not in id order), with user 0 left without interactions (a gap: a thinned run drops it)
    and one text line per item naming its id. Returns {itemID: text}."""
    syn = motor.synthetic(n_users=120, n_items=90, n_interactions=1500, seed=3)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(syn.n_items)  # generator item r is itemID perm[r]
    rows = []
    for label, m in enumerate((syn.train, syn.valid, syn.test)):
        coo = m.tocoo()
        rows += [(u + 1, perm[i], label) for u, i in zip(coo.row, coo.col)]
    df = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).sample(frac=1.0, random_state=seed)
    df.insert(2, "rating", 1.0)
    df.insert(3, "timestamp", range(len(df)))
    folder.mkdir(parents=True)
    df.to_csv(folder / f"{folder.name}.inter", sep="\t", index=False)
    for name, f in syn.features.items():
        out = np.empty_like(f)
        out[perm] = f
        np.save(folder / f"{name}_feat.npy", out.astype(np.float32))
    texts = {int(i): f"the item with id {i}" for i in range(syn.n_items)}
    lines = ["itemID\ttext"] + [f"{i}\t{t}" for i, t in sorted(texts.items(), key=lambda kv: -kv[0])]
    (folder / "item_text.tsv").write_text("\n".join(lines) + "\n")
    return texts


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """The shuffled folder under a fresh data root, and runs on it: full data and thinned (keep=0.5)."""
    root = tmp_path_factory.mktemp("recommend")
    texts = _write_shuffled(root / "data" / "shuf")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTOR_DATA", str(root / "data"))
    mp.setenv("MOTOR_RUNS", str(root / "runs"))
    mp.setenv("MOTOR_CACHE", str(root / "cache"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # user 0 has no interaction: load warns about the gap
            out = {"texts": texts, "registry": root / "runs",
                   "full": run(dataset="shuf", **RUN),
                   "thin": run(dataset="shuf", keep=0.5, **RUN),
                   "thin_s1": run(dataset="shuf", keep=0.5, **{**RUN, "seed": 1}),
                   "thin_lightgcn": run(dataset="shuf", keep=0.5, **{**RUN, "backbone": "lightgcn"})}
        yield out
    finally:
        mp.undo()


@pytest.fixture
def env(shuffled, monkeypatch):
    monkeypatch.setenv("MOTOR_DATA", str(shuffled["registry"].parent / "data"))
    monkeypatch.setenv("MOTOR_RUNS", str(shuffled["registry"]))
    monkeypatch.setenv("MOTOR_CACHE", str(shuffled["registry"].parent / "cache"))
    return shuffled


def _dataset(res):
    c = res.config
    return get_dataset(c["dataset"], c["split"], c["split_seed"], c["cold_fraction"], c["keep"])


def _check_in_file_ids(res, rec, texts, users):
    ds = _dataset(res)
    assert sorted(set(rec.user)) == sorted(users)
    # the text shown is the text the file gives that itemID
    assert rec.text.tolist() == [texts[i] for i in rec.item]
    rows_u, rows_i = ds.user_index(rec.user), ds.item_index(rec.item)
    with res.model.evaluating():
        full = res.model.score(torch.as_tensor(ds.user_index(users))).numpy()
    pos = {u: n for n, u in enumerate(users)}
    np.testing.assert_allclose(rec.score, full[[pos[u] for u in rec.user], rows_i], rtol=1e-6)
    assert not np.asarray(ds.train[rows_u, rows_i]).any()  # training items masked
    for r, u, i in zip(rec.itertuples(), rows_u, rows_i):
        assert r.held_out == ("valid" if ds.valid[u, i] else "test" if ds.test[u, i] else "")


@pytest.mark.parametrize("which", ["full", "thin"])
def test_recommend_names_items_and_users_by_the_files_ids(env, which):
    res = env[which]
    ds = _dataset(res)
    if which == "thin":
        assert ds.n_items < 90 and ds.n_users == 120  # rows were dropped and re-indexed: ids != rows
        assert not np.array_equal(ds.item_id(np.arange(ds.n_items)), np.arange(ds.n_items))
    users = [1, 5, 60, 120]
    rec = motor.recommend(res, users, k=10)
    assert len(rec) == 40
    _check_in_file_ids(res, rec, env["texts"], users)
    from_id = motor.recommend(res.run_id, users, k=10)  # rebuilt from the registry: the same table
    pd.testing.assert_frame_equal(from_id, rec, check_exact=False, rtol=1e-6)


def test_a_user_the_thinned_run_dropped_is_named(env):
    with pytest.raises(ValueError, match=r"no user with userID \[0\].*Fix: pass userIDs"):
        motor.recommend(env["thin"], [0, 1])
    with pytest.raises(ValueError, match=r"no user with userID \[121\]"):
        motor.recommend(env["full"], 121)


def test_new_items_scored_for_the_files_user_ids(env):
    res = env["thin"]
    ds = _dataset(res)
    known = np.array([3, 40])  # itemIDs of the file that the thinned run kept
    known = known[np.isin(known, ds.item_id(np.arange(ds.n_items)))]
    rows = ds.item_index(known)
    users = [2, 77]
    scores = motor.score_new_items(res, {m: ds.features[m][rows] for m in ds.modalities}, users=users)
    assert scores.index.tolist() == users
    rec = motor.recommend(res, users, k=ds.n_items, exclude_seen=False)  # BPR: a known item's own scores
    for n, item in enumerate(known):
        expect = rec[rec.item == item].set_index("user").score.loc[users]
        np.testing.assert_allclose(scores[n].to_numpy(), expect.to_numpy(), rtol=1e-5, atol=1e-6)


def test_explorer_shows_the_files_item_ids(env):
    res = env["thin"]
    ds = _dataset(res)
    tokens = motor.tokenize(ds, 2, n_centroids=16)
    ex = TokenExplorer(ds, tokens, {"MOTOR": np.random.default_rng(0).normal(size=(ds.n_items, 4))}, top=4)
    item_id = int(ds.item_id(ds.n_items - 1))  # a file id above the thinned row count
    assert ex.search(str(item_id)) == [ds.n_items - 1]
    tables = ex.select(ex.matches[0])
    for name in ("shared tokens", "nearest by MOTOR vector"):
        t = tables[name]
        assert t.text.tolist() == [env["texts"][i][:140] for i in t.item]
    assert f"item {item_id} " in ex.render()
    dropped = sorted(set(range(90)) - set(ds.item_id(np.arange(ds.n_items)).tolist()))[0]
    assert ex.search(str(dropped)) == []  # an id the thinned data no longer holds: no match, not another item


def test_case_study_names_the_files_items(env):
    from motor.studies import case_study

    ds = _dataset(env["thin"])
    table = case_study(ds, motor.tokenize(ds, 2, n_centroids=16), n_queries=3, top=3)
    assert table.text.tolist() == [env["texts"][i] for i in table.item]


# ---- saved weights: this run's, intact ----


def _weights(res):
    return runs.run_path(res.run_id) / runs.WEIGHTS_FILE


@pytest.fixture
def copy_of(env, tmp_path, monkeypatch):
    """A copy of the registry (so the shared runs stay intact) as MOTOR_RUNS."""
    copy = tmp_path / "runs"
    shutil.copytree(env["registry"], copy)
    monkeypatch.setenv("MOTOR_RUNS", str(copy))
    return env


@pytest.mark.parametrize("other", ["thin_s1", "thin_lightgcn"])
def test_weights_of_another_run_are_refused(copy_of, other):
    target, foreign = copy_of["thin"], copy_of[other]
    motor.recommend(target.run_id, 1, k=3)  # served (and cached) with its own weights first
    shutil.copy(_weights(foreign), _weights(target))
    with pytest.raises(runs.RunReadError, match=rf"run {target.run_id}: its weights .*belong to another run "
                                                 rf"\(saved for run '{foreign.run_id}'.*Fix: delete"):
        motor.recommend(target.run_id, 1, k=3)


def _rewrite(path, arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped", "pickled", "no_fingerprint", "nan",
                                    "edited"])
def test_damaged_weights_name_the_run_the_file_and_the_fix(copy_of, damage):
    res = copy_of["thin"]
    path = _weights(res)
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = runs._WEIGHTS_META
    key = next(k for k in arrays if k != meta and arrays[k].dtype.kind == "f")
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    elif damage == "flipped":
        b = bytearray(raw)
        b[len(b) // 3] ^= 0xFF
        path.write_bytes(bytes(b))
    elif damage == "pickled":
        with zipfile.ZipFile(path, "w") as z:
            buf = io.BytesIO()
            np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
            z.writestr(f"{key}.npy", buf.getvalue())
    elif damage == "no_fingerprint":  # what motor wrote before weights were stamped
        _rewrite(path, {k: v for k, v in arrays.items() if k != meta})
    elif damage == "nan":  # stamped correctly, but NaN inside
        state = {k: v for k, v in arrays.items() if k != meta}
        state[key] = np.full_like(state[key], np.nan)
        import json

        desc = json.loads(str(arrays[meta]))["description"]
        path.write_bytes(runs.weights_bytes(state, desc))
    elif damage == "edited":  # a value changed, the stamp kept
        arrays[key] = arrays[key] + 1.0
        _rewrite(path, arrays)
    words = {"no_fingerprint": "carry no fingerprint", "nan": "NaN or infinite", "edited": "checksum does not match"}
    with pytest.raises(runs.RunReadError) as err:
        motor.recommend(res.run_id, 1, k=3)
    msg = str(err.value)
    assert f"run {res.run_id}" in msg and str(path) in msg and "Fix: delete" in msg
    assert words.get(damage, "damaged") in msg
    assert "unsafe" not in msg and "pickle" not in msg.lower()


# ---- arguments ----


@pytest.mark.parametrize("k", [2.5, float("nan"), "5", 0, True, None])
def test_k_must_be_a_whole_number(env, k):
    with pytest.raises(ValueError, match=rf"recommend: k={k!r} .*Fix: a whole number >= 1"):
        motor.recommend(env["thin"], 1, k=k)


def test_string_features_name_the_modality(env):
    ds = _dataset(env["thin"])
    feats = {m: ds.features[m][:2].astype(str) for m in ds.modalities}
    feats[ds.modalities[0]] = np.array([["a"] * ds.features[ds.modalities[0]].shape[1]] * 2)
    with pytest.raises(ValueError, match=rf"features\['{ds.modalities[0]}'\] is not a numeric matrix.*Fix"):
        motor.score_new_items(env["thin"], feats)


# ---- runs with options ----


def test_text_only_run_scores_new_items_from_text_alone(env, tmp_path):
    res = run(dataset="shuf", modalities=["text"], **RUN)
    ds = _dataset(res)
    assert len(ds.modalities) > 1
    rows = [4, 9]
    scores = motor.score_new_items(res, {"text": ds.features["text"][rows]}, users=[1, 2])
    nan_image = {"text": ds.features["text"][rows], "image": np.full((2, ds.features["image"].shape[1]), np.nan)}
    again = motor.score_new_items(res, nan_image, users=[1, 2])  # never read: NaN there is no error
    pd.testing.assert_frame_equal(scores, again)
    rec = motor.recommend(res, [1, 2], k=ds.n_items, exclude_seen=False)
    for n, row in enumerate(rows):
        expect = rec[rec.item == ds.item_id(row)].set_index("user").score.loc[[1, 2]]
        np.testing.assert_allclose(scores[n].to_numpy(), expect.to_numpy(), rtol=1e-5, atol=1e-6)


def test_disambiguated_run_scores_new_items(env):
    res = run(dataset="shuf", tokenizer={"disambiguate": True}, **RUN)
    ds = _dataset(res)
    rows = [4, 9]
    from motor.recommend import new_item_tokens

    feats = {m: ds.features[m][rows] for m in ds.modalities}
    toks = new_item_tokens(res, feats)
    assert all(t.shape == (2, 3) for t in toks.values())  # the extra, numbering position
    scores = motor.score_new_items(res, feats, users=[1])
    assert scores.shape == (1, 2) and np.isfinite(scores.to_numpy()).all()
