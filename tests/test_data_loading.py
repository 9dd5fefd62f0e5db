"""Data loading on hostile input (issue 16 points 7, 8, 11): every error names the file and the row/column,
silent mis-reads are warnings or errors, and resplitting keeps every interaction."""
import json

import numpy as np
import pandas as pd
import pytest

from motor.data import DataError, load, resplit

from .conftest import write_folder

ROWS = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 2, 2), (2, 0, 0), (2, 2, 0)]


def _expect(folder, pattern, *names):
    with pytest.raises(DataError, match=pattern) as err:
        load(folder)
    for name in names:
        assert name in str(err.value)
    return str(err.value)


def _edit_inter(folder, col, row, value):
    path = folder / f"{folder.name}.inter"
    df = pd.read_csv(path, sep="\t", dtype=str)
    df.loc[row, col] = value
    df.to_csv(path, sep="\t", index=False)


# ------------------------------------------------------------------------------------------ point 7: silent mis-reads


def test_non_numeric_timestamp_is_refused_with_its_row(tmp_path):
    f = write_folder(tmp_path / "t")
    _edit_inter(f, "timestamp", 4, "yesterday")
    msg = _expect(f, "'timestamp' row 6 holds 'yesterday'", "t.inter")
    assert "Fix" in msg


def test_empty_timestamp_column_reads_as_absent(tmp_path):
    f = write_folder(tmp_path / "t")
    df = pd.read_csv(f / "t.inter", sep="\t")
    df["timestamp"] = ""
    df.to_csv(f / "t.inter", sep="\t", index=False)
    with pytest.warns(UserWarning, match="'timestamp' is empty"):
        ds = load(f)
    assert ds.timestamps is None


def test_complex_features_are_refused(tmp_path):
    f = write_folder(tmp_path / "c", feats={"text": (np.ones((3, 4)) + 1j).astype(np.complex64)})
    _expect(f, "real numbers", "text_feat.npy", "complex64")


def test_constant_features_warn_at_load(tmp_path):
    f = write_folder(tmp_path / "k", feats={"text": np.ones((3, 4), np.float32)})
    with pytest.warns(UserWarning, match="all 3 rows are identical"):
        load(f)


def test_float_mask_must_hold_only_zero_or_one(tmp_path):
    f = write_folder(tmp_path / "m")
    np.save(f / "text_mask.npy", np.array([1.0, 0.0, 1.0]))
    assert load(f).feature_masks["text"].tolist() == [True, False, True]
    np.save(f / "text_mask.npy", np.array([0.9, 0.2, 0.7]))  # read as all True before
    _expect(f, "item 0 holds 0.9", "text_mask.npy")


def test_non_string_item_texts_are_refused(tmp_path):
    f = write_folder(tmp_path / "j")
    (f / "item_text.json").write_text(json.dumps(["a", 5, "c"]))
    _expect(f, "entry 1 is int 5, not a string", "item_text.json")


def test_out_of_range_item_text_rows_are_refused(tmp_path):
    f = write_folder(tmp_path / "o")
    (f / "item_text.tsv").write_text("itemID\ttext\n0\ta\n1\tb\n7\tghost\n")
    _expect(f, "line 4 has itemID 7, but the dataset has 3 items", "item_text.tsv")


def test_feature_rows_beyond_the_interactions_are_catalogue_items_with_a_warning(tmp_path):
    f = write_folder(tmp_path / "p", feats={"text": np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)})
    with pytest.warns(UserWarning, match="5 rows but p.inter uses items 0..2 only: the other 2 items"):
        ds = load(f)
    assert ds.n_items == 5


# ------------------------------------------------------------------------------------------ point 8: resplit keeps rows


def test_resplit_keeps_the_rows_of_users_without_a_train_row(tmp_path):
    rows = ROWS + [(3, 0, 1), (3, 1, 2), (3, 2, 1)]  # user 3 has valid/test rows only
    f = write_folder(tmp_path / "r", rows=rows)
    ds = load(f)
    assert ds.dropped["rows_of_users_without_train"] == 3  # the file's own split: left out, as MMRec does
    assert ds.all_interactions().nnz == len(ROWS)
    for scheme in ("random", "loo"):
        again = resplit(ds, scheme, seed=0)
        assert again.all_interactions().nnz == len(rows)  # lost before: 7 of 10
        assert again.all_interactions()[3].nnz == 3


# ------------------------------------------------------------------------------------------ point 11: right messages


def test_truncated_npy_is_reported_as_truncated_not_pickle(tmp_path):
    f = write_folder(tmp_path / "tr")
    raw = (f / "text_feat.npy").read_bytes()
    (f / "text_feat.npy").write_bytes(raw[:-10])
    msg = _expect(f, "truncated", "text_feat.npy")
    assert "pickle" not in msg


def test_zero_byte_npy_names_the_file(tmp_path):
    f = write_folder(tmp_path / "z")
    (f / "text_feat.npy").write_bytes(b"")
    _expect(f, "empty file", "text_feat.npy")


def test_extra_rows_in_the_first_feature_file_name_both_files(tmp_path):
    rng = np.random.default_rng(0)
    f = write_folder(tmp_path / "x", feats={"image": rng.normal(size=(4, 4)).astype(np.float32),
                                            "text": rng.normal(size=(3, 4)).astype(np.float32)})
    msg = _expect(f, "disagree on the number of items")
    assert "image_feat.npy: 4 rows" in msg and "text_feat.npy: 3 rows" in msg


@pytest.mark.parametrize("value", ["1e23", "1000000000000", "50000000"])
def test_huge_ids_say_ids_must_be_dense(tmp_path, value):
    f = write_folder(tmp_path / "h")
    _edit_inter(f, "itemID", 2, value)
    msg = _expect(f, "must be dense 0-based", "h.inter", "'itemID' row 4")
    assert "negative" not in msg


def test_user_ids_with_gaps_beyond_the_row_count_are_refused(tmp_path):
    f = write_folder(tmp_path / "u")
    _edit_inter(f, "userID", 0, "40")
    _expect(f, "max id 40 for 7 rows", "'userID'")


def test_tab_inside_item_text_names_the_line(tmp_path):
    f = write_folder(tmp_path / "tab")
    (f / "item_text.tsv").write_text('itemID\ttext\n0\ta\n1\t"b\twith a tab"\n2\tc\n')
    msg = _expect(f, "line 3 has 3 tab-separated fields, the header has 2", "item_text.tsv")
    assert "itemID" not in msg.split("header")[0]  # not blamed on the id


def test_latin1_item_text_names_the_file_and_line(tmp_path):
    f = write_folder(tmp_path / "lat")
    (f / "item_text.tsv").write_bytes("itemID\ttext\n0\ta\n1\tcaf\u00e9\n".encode("latin-1"))
    _expect(f, "not UTF-8.*line 3", "item_text.tsv")


def test_malformed_item_text_json_names_the_file(tmp_path):
    f = write_folder(tmp_path / "js")
    (f / "item_text.json").write_text('["a", "b",')
    _expect(f, "not valid JSON", "item_text.json")


def test_corrupt_mask_names_the_file(tmp_path):
    f = write_folder(tmp_path / "cm")
    (f / "text_mask.npy").write_bytes(b"\x93NUMPY garbage")
    _expect(f, "text_mask.npy")


def test_unreadable_inter_file_names_the_file(tmp_path):
    f = write_folder(tmp_path / "bad")
    with open(f / "bad.inter", "a") as fh:
        fh.write("1\t2\t1\t9\t0\textra\tfields\n")
    _expect(f, "cannot be read as a tab-separated table", "bad.inter")


def test_infinite_id_is_not_an_integer(tmp_path):
    f = write_folder(tmp_path / "inf")
    _edit_inter(f, "itemID", 1, "inf")
    _expect(f, "'itemID' row 3 holds 'inf', not an integer id")


def test_user_ids_with_gaps_warn(tmp_path):
    f = write_folder(tmp_path / "g")
    _edit_inter(f, "userID", 6, "5")  # users 0..5, of which 3 and 4 have no row
    with pytest.warns(UserWarning, match="2 of the user ids 0..5 have no interaction"):
        load(f)


def test_kcore_that_removes_everything_is_a_clear_error(tmp_path):
    from motor.data import kcore

    ds = load(write_folder(tmp_path / "k"))
    with pytest.raises(DataError, match="k=50.*nothing is left"):
        kcore(ds, 50)
