import json

import numpy as np
import pandas as pd
import pytest

import motor
from motor.data import DataError, from_interactions, kcore, load, resplit

from .conftest import real, write_folder


def test_load_tiny(tiny_folder):
    ds = load(tiny_folder)
    assert (ds.n_users, ds.n_items) == (3, 3)
    assert ds.train.nnz == 5 and ds.valid.nnz == 1 and ds.test.nnz == 1
    assert ds.features["text"].dtype == np.float32
    assert ds.item_popularity.tolist() == [2, 2, 1]
    assert "users 3" in repr(ds)


def test_load_by_name_uses_data_root(tiny_folder, monkeypatch):
    monkeypatch.setenv("MOTOR_DATA", str(tiny_folder.parent))
    assert load("tiny").n_users == 3
    with pytest.raises(DataError, match="MOTOR_DATA"):
        load("nope")


def _expect(folder, pattern):
    with pytest.raises(DataError, match=pattern) as err:
        load(folder)
    return str(err.value)


def test_missing_inter_file(tmp_path):
    (tmp_path / "x").mkdir()
    assert "x.inter" in _expect(tmp_path / "x", "missing file")


def test_missing_column(tmp_path):
    f = write_folder(tmp_path / "c")
    df = pd.read_csv(f / "c.inter", sep="\t").drop(columns="x_label")
    df.to_csv(f / "c.inter", sep="\t", index=False)
    msg = _expect(f, "missing column")
    assert "x_label" in msg and "c.inter" in msg


def test_non_integer_and_negative_ids(tmp_path):
    f = write_folder(tmp_path / "n")
    df = pd.read_csv(f / "n.inter", sep="\t", dtype=str)
    df.loc[3, "itemID"] = "1.5"
    df.to_csv(f / "n.inter", sep="\t", index=False)
    assert "row 5" in _expect(f, "'itemID'.*not an integer")
    df.loc[3, "itemID"] = "abc"
    df.to_csv(f / "n.inter", sep="\t", index=False)
    _expect(f, "not an integer")
    df.loc[3, "itemID"] = "1"
    df.loc[0, "userID"] = "-1"
    df.to_csv(f / "n.inter", sep="\t", index=False)
    _expect(f, "'userID'.*negative")


def test_feature_row_mismatch(tmp_path):
    f = write_folder(tmp_path / "r", feats={"image": np.zeros((2, 4), np.float32)})
    msg = _expect(f, "2 feature rows")
    assert "image_feat.npy" in msg


def test_nan_inf_features(tmp_path):
    bad = np.zeros((3, 4), np.float32)
    bad[1, 2] = np.nan
    f = write_folder(tmp_path / "nan", feats={"text": bad})
    assert "row/item 1" in _expect(f, "NaN or inf")
    bad[1, 2] = np.inf
    np.save(f / "text_feat.npy", bad)
    _expect(f, "NaN or inf")


def test_pickled_feature_file_refused(tmp_path):
    f = write_folder(tmp_path / "p", feats={})
    np.save(f / "text_feat.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    assert "text_feat.npy" in _expect(f, "not a plain numeric array")


def test_non_numeric_feature_file(tmp_path):
    f = write_folder(tmp_path / "s", feats={})
    np.save(f / "text_feat.npy", np.array([["a"], ["b"], ["c"]]))
    _expect(f, "2-D numeric matrix")


def test_empty_train_split(tmp_path):
    f = write_folder(tmp_path / "e", rows=[(0, 0, 1), (1, 1, 2), (2, 2, 1)])
    _expect(f, "train split is empty")


def test_unknown_label(tmp_path):
    f = write_folder(tmp_path / "l", rows=[(0, 0, 0), (1, 1, 3), (2, 2, 0)])
    assert "row 3" in _expect(f, "x_label.*allowed values")


def test_duplicates_dropped_with_warning(tmp_path):
    f = write_folder(tmp_path / "d", rows=[(0, 0, 0), (0, 0, 0), (0, 1, 0), (1, 2, 0), (1, 2, 2)])
    with pytest.warns(UserWarning, match="dropped 2 duplicate"):
        ds = load(f)
    assert ds.train.nnz == 3 and ds.dropped["duplicates"] == 2


def test_orphan_valid_test_rows_dropped(tmp_path):
    f = write_folder(tmp_path / "o", rows=[(0, 0, 0), (0, 1, 2), (1, 2, 1), (2, 2, 0)])
    ds = load(f)
    assert ds.dropped["rows_of_users_without_train"] == 1
    assert ds.valid.nnz == 0 and ds.test.nnz == 1


def test_item_text_json_and_mask(tmp_path):
    f = write_folder(tmp_path / "j")
    (f / "item_text.json").write_text(json.dumps(["a", "b", "c"]))
    np.save(f / "text_mask.npy", np.array([True, False, True]))
    ds = load(f)
    assert ds.item_text == ["a", "b", "c"]
    assert ds.feature_masks["text"].tolist() == [True, False, True]


# --------------------------------------------------------------------------------- splits


def _disjoint(ds):
    a, b, c = (ds.split(s).astype(bool) for s in ("train", "valid", "test"))
    return a.multiply(b).nnz == 0 and a.multiply(c).nnz == 0 and b.multiply(c).nnz == 0


def test_random_split_properties(small_synth):
    ds = resplit(small_synth, "random", seed=3)
    assert _disjoint(ds)
    assert ds.all_interactions().nnz == small_synth.all_interactions().nnz
    users_all = np.asarray(ds.all_interactions().sum(1)).ravel()
    users_train = np.asarray(ds.train.sum(1)).ravel()
    assert (users_train[users_all > 0] >= 1).all()
    n = ds.all_interactions().nnz
    assert abs(ds.train.nnz / n - 0.8) < 0.03
    assert abs(ds.valid.nnz / n - 0.1) < 0.02 and abs(ds.test.nnz / n - 0.1) < 0.02
    again = resplit(small_synth, "random", seed=3)
    assert (again.test != ds.test).nnz == 0
    other = resplit(small_synth, "random", seed=4)
    assert (other.test != ds.test).nnz > 0


def test_random_split_one_core_users():
    users = np.array([0, 1, 1, 2, 2, 2])
    items = np.array([0, 0, 1, 0, 1, 2])
    ds = from_interactions("x", users, items, np.zeros(6), 3, 3)
    for seed in range(20):
        out = resplit(ds, "random", seed=seed)
        tr = np.asarray(out.train.sum(1)).ravel()
        assert tr.tolist()[0] == 1 and (tr >= 1).all()


def test_loo_split_uses_timestamps():
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 1, 2])
    ts = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 0.0])
    ds = from_interactions("x", users, items, np.zeros(6), 3, 3, timestamps=ts)
    out = resplit(ds, "loo", seed=0)
    assert out.test[0, 0] == 1 and out.valid[0, 2] == 1 and out.train[0, 1] == 1
    assert out.test[1, 0] == 1 and out.train[1, 1] == 1
    assert out.train[2, 2] == 1


def test_cold_item_split(small_synth):
    ds = resplit(small_synth, "cold_item", seed=0, cold_fraction=0.2)
    assert _disjoint(ds)
    pop = ds.item_popularity
    held = np.asarray((ds.valid + ds.test).sum(0)).ravel()
    cold = np.flatnonzero((pop == 0) & (held > 0))
    n_items_with = (np.asarray(small_synth.all_interactions().sum(0)).ravel() > 0).sum()
    # the planted cold items (20 %) plus a few tail items whose only interactions fell into valid/test
    assert 0.2 * n_items_with - 2 <= len(cold) <= 0.25 * n_items_with
    assert ds.train[:, cold].nnz == 0


def test_kcore():
    users = np.array([0, 0, 0, 1, 1, 1, 2, 3])
    items = np.array([0, 1, 2, 0, 1, 2, 0, 3])
    ds = from_interactions("x", users, items, np.zeros(8), 4, 4,
                           features={"t": np.arange(8, dtype=np.float32).reshape(4, 2)})
    out = kcore(ds, 2)
    assert (out.n_users, out.n_items) == (2, 3)
    assert out.features["t"].shape == (3, 2)
    deg_u = np.asarray(out.all_interactions().sum(1)).ravel()
    deg_i = np.asarray(out.all_interactions().sum(0)).ravel()
    assert deg_u.min() >= 2 and deg_i.min() >= 2


# --------------------------------------------------------------------------------- synthetic


def test_synthetic_shape_determinism_long_tail():
    a = motor.synthetic(seed=7)
    b = motor.synthetic(seed=7)
    assert a.n_users == 800 and a.n_items == 500
    assert a.all_interactions().nnz == 8000
    assert (a.train != b.train).nnz == 0
    assert np.array_equal(a.features["text"], b.features["text"])
    pop = a.item_popularity
    assert (pop <= 5).mean() > 0.3  # a real long tail
    assert pop.max() > 10 * np.median(pop)
    assert set(a.features) == {"text", "image"}


# --------------------------------------------------------------------------------- real data


@real("scientific")
def test_real_scientific():
    ds = load("scientific")
    s = ds.summary()
    assert (s["users"], s["items"], s["interactions"]) == (2928, 1585, 19568)
    assert ds.features["image"].shape == (1585, 512) and ds.features["text"].shape == (1585, 384)
    assert len(ds.item_text) == 1585 and ds.item_text[0]


@real("ml100k")
def test_real_ml100k():
    ds = load("ml100k")
    assert (ds.n_users, ds.n_items, ds.all_interactions().nnz) == (943, 1682, 100000)
    assert ds.feature_masks["image"].sum() == 1657
