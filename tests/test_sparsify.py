import numpy as np
import pytest

from motor.data import SPLITS, from_interactions, resplit, sparsify
from motor.synthetic import synthetic


@pytest.fixture(scope="module")
def marked():
    """A synthetic dataset whose feature row j, mask and text name item j, with a few users and items that have
    no interactions at all (they must be dropped and the rest re-indexed)."""
    ds = synthetic(n_users=300, n_items=200, n_interactions=3000, seed=3)
    allm = ds.all_interactions().tocoo()
    labels = np.concatenate([np.full(ds.split(s).nnz, k) for k, s in enumerate(SPLITS)])
    parts = [ds.split(s).tocoo() for s in SPLITS]
    u = np.concatenate([p.row for p in parts]) + 2  # users 0 and 1 have no interactions
    i = np.concatenate([p.col for p in parts])
    n_items = ds.n_items + 3  # items 200-202 have none
    feats = {"text": np.arange(n_items, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)}
    masks = {"text": np.arange(n_items) % 3 == 0}
    text = [f"item {j}" for j in range(n_items)]
    ts = np.arange(len(u), dtype=np.float64)
    assert allm.nnz == len(u)
    return from_interactions("marked", u, i, labels, ds.n_users + 2, n_items, features=feats, feature_masks=masks,
                             item_text=text, timestamps=ts)


def _rows(ds):
    """{(user, item): label} of all interactions."""
    out = {}
    for k, s in enumerate(SPLITS):
        coo = ds.split(s).tocoo()
        out.update({(int(a), int(b)): k for a, b in zip(coo.row, coo.col)})
    return out


def test_every_user_keeps_a_train_interaction(marked):
    sp = sparsify(marked, 0.1, seed=0)
    per_user = np.asarray(sp.all_interactions().sum(1)).ravel()
    assert per_user.min() >= 1
    assert np.asarray(sp.train.sum(1)).ravel().min() >= 1
    assert sp.n_users == marked.n_users - 2  # the two users without interactions are gone


def test_reindexing_drops_empty_items_and_is_contiguous(marked):
    sp = sparsify(marked, 0.2, seed=1)
    per_item = np.asarray(sp.all_interactions().sum(0)).ravel()
    assert len(per_item) == sp.n_items and per_item.min() >= 1
    # old items are kept in their old order: the feature rows (= old ids) increase strictly
    old = sp.features["text"][:, 0].astype(int)
    assert (np.diff(old) > 0).all()
    assert not set(old) & {200, 201, 202}
    assert sp.n_items < marked.n_items - 3  # keeping 20 % leaves some long-tail items without interactions


def test_features_masks_text_and_interactions_follow_their_items(marked):
    sp = sparsify(marked, 0.5, seed=2)
    old_item = sp.features["text"][:, 0].astype(int)  # row of new item j == row of old item
    np.testing.assert_array_equal(sp.features["text"], marked.features["text"][old_item])
    np.testing.assert_array_equal(sp.feature_masks["text"], marked.feature_masks["text"][old_item])
    assert sp.item_text == [f"item {j}" for j in old_item]
    before = _rows(marked)
    after = _rows(sp)
    # users 0 and 1 had nothing, the others are shifted down by two: old user = new user + 2
    for (u, j), label in after.items():
        assert before[(u + 2, int(old_item[j]))] == label  # the same interaction, with its split label
    # timestamps follow their interactions too
    t_new = sp.timestamps.tocoo()
    t_old = marked.timestamps.tocsr()
    for u, j, t in list(zip(t_new.row, t_new.col, t_new.data))[:200]:
        assert t == t_old[u + 2, old_item[j]]


def test_same_seed_same_result_other_seed_differs(marked):
    a, b, c = sparsify(marked, 0.4, seed=5), sparsify(marked, 0.4, seed=5), sparsify(marked, 0.4, seed=6)
    assert _rows(a) == _rows(b)
    np.testing.assert_array_equal(a.features["text"], b.features["text"])
    assert _rows(a) != _rows(c)


def test_proportions(marked):
    counts = np.asarray(marked.all_interactions().sum(1)).ravel()[2:]
    for keep in (0.2, 0.6):
        sp = sparsify(marked, keep, seed=0)
        kept = np.asarray(sp.all_interactions().sum(1)).ravel()
        # per user: keep * n rounded down or up, never below one
        assert (kept >= np.maximum(1, np.floor(keep * counts))).all()
        assert (kept <= np.maximum(1, np.ceil(keep * counts))).all()
        expected = np.maximum(1, keep * counts).sum()
        assert abs(kept.sum() - expected) < 0.03 * expected


def test_keep_one_keeps_everything_and_bad_keep_is_refused(marked):
    sp = sparsify(marked, 1.0)
    assert sp.all_interactions().nnz == marked.all_interactions().nnz
    assert sp.n_items == int((np.asarray(marked.all_interactions().sum(0)).ravel() > 0).sum())
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep must be in"):
            sparsify(marked, bad)


def test_hand_example_single_interaction_users_keep_theirs():
    # user 0: one train row; user 1: five rows; keep 0.2 -> user 0 keeps 1, user 1 keeps exactly 1
    users = [0, 1, 1, 1, 1, 1]
    items = [0, 1, 2, 3, 4, 0]
    labels = [0, 0, 1, 2, 0, 0]
    ds = from_interactions("hand", users, items, labels, 2, 6,
                           features={"text": np.arange(12, dtype=np.float32).reshape(6, 2)})
    for seed in range(5):
        sp = sparsify(ds, 0.2, seed=seed)
        kept = np.asarray(sp.all_interactions().sum(1)).ravel()
        assert kept.tolist() == [1, 1]
        assert sp.train.nnz == 2  # each user's kept row is a train row
        assert sp.n_items in (1, 2)  # item 5 never had an interaction; only kept items remain


def test_sparsified_dataset_resplits(marked):
    sp = resplit(sparsify(marked, 0.4, seed=0), "random", seed=0)
    assert sp.train.nnz > sp.valid.nnz > 0 and np.asarray(sp.train.sum(1)).ravel().min() >= 1
