import numpy as np
import pytest
import scipy.sparse as sp
import torch

from motor.backbones.base import Backbone
from motor.data import from_interactions
from motor.evaluate import _membership, evaluate, item_buckets, metrics_from_topk


class FixedScores(Backbone):
    trainable = False

    def __init__(self, scores):
        super().__init__(scores.shape[0], scores.shape[1], torch.nn.Identity(), 1)
        self.s = torch.as_tensor(scores, dtype=torch.float32)

    def embeddings(self):
        return torch.eye(self.s.shape[0]), self.s.T  # u_i . item_j = s[i, j]


def test_metrics_hand_computed():
    # user 0: held {1, 3}; top-4 = [1, 0, 2, 3] -> hits at ranks 0 and 3
    held = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=np.float32))
    top = np.array([[1, 0, 2, 3], [4, 3, 2, 1]])
    df = metrics_from_topk(top, held, np.array([0, 1]), ks=(2, 4))
    r0 = df.iloc[0]
    assert r0["recall@2"] == pytest.approx(0.5)
    assert r0["recall@4"] == pytest.approx(1.0)
    assert r0["precision@4"] == pytest.approx(0.5) and r0["hit@2"] == 1
    assert r0["ndcg@2"] == pytest.approx(1.0 / (1 + 1 / np.log2(3)))
    assert r0["ndcg@4"] == pytest.approx((1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))
    r1 = df.iloc[1]  # one held-out item (fewer than K), never retrieved
    assert r1["recall@4"] == 0 and r1["ndcg@4"] == 0 and r1["hit@4"] == 0


def test_fewer_heldout_than_k_ideal_dcg():
    held = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], dtype=np.float32))
    df = metrics_from_topk(np.array([[3, 0, 1, 2, 4]]), held, np.array([0]), ks=(5,))
    assert df["ndcg@5"].iloc[0] == pytest.approx(1 / np.log2(3))  # IDCG uses min(|held|, K) = 1 position
    assert df["recall@5"].iloc[0] == 1.0


def test_membership():
    rows = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32))
    assert _membership(rows, np.array([[1, 0], [0, 2]])).tolist() == [[True, False], [True, False]]


def _toy():
    users = np.array([0, 0, 0, 1, 1, 1])
    items = np.array([0, 1, 2, 2, 3, 4])
    labels = np.array([0, 0, 2, 0, 1, 2])
    return from_interactions("toy", users, items, labels, 2, 6)


def test_training_items_masked_and_valid_not_masked_at_test():
    ds = _toy()
    scores = np.tile(np.array([10, 9, 8, 7, 6, 5], dtype=np.float32), (2, 1))  # train items score highest
    res = evaluate(FixedScores(scores), ds, "test", ks=(1, 2), buckets=None)
    # user 0: train {0,1} masked -> top1 = item 2 (its test item)
    assert res.per_user.set_index("user").loc[0, "recall@1"] == 1.0
    # user 1: train {2} masked; valid item 3 is NOT masked at test time (MMRec) -> top2 = [0, 1], test item 4 missed
    assert res.per_user.set_index("user").loc[1, "recall@2"] == 0.0
    masked = evaluate(FixedScores(scores), ds, "test", ks=(3,), mask=("train", "valid"), buckets=None)
    assert masked.per_user.set_index("user").loc[1, "recall@3"] == 1.0  # [0, 1, 4] once 3 is masked


def test_training_items_never_in_topk(small_synth):
    from motor.evaluate import topk_items

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(small_synth.n_users, small_synth.n_items)).astype(np.float32)
    scores[small_synth.train.nonzero()] += 100  # the model loves exactly its training items
    model = FixedScores(scores)
    users = np.arange(small_synth.n_users)
    top = topk_items(model, users, small_synth.train, 20)
    assert not small_synth.train[np.repeat(users, 20), top.ravel()].any()


def test_popularity_buckets_and_cold():
    pop = np.array([0, 3, 5, 6, 10, 11, 20, 21, 50, 51])
    assert item_buckets(pop).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    ds = _toy()
    res = evaluate(FixedScores(np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)), ds, "test")
    b = res.buckets.set_index("bucket")
    assert "cold (0)" in b.index  # items 4, 5 have no train interactions
    assert b.loc["0-5", "n_heldout"] == 2 and b.loc["cold (0)", "n_heldout"] == 1
