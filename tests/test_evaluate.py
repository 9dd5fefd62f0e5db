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


# --- tie-aware metrics -------------------------------------------------------------------------------------------
from itertools import permutations  # noqa: E402

from motor.evaluate import evaluate_cold_candidates, metrics_from_scores, topk_items  # noqa: E402


def _one_user(scores, held_items, n_items=None):
    n = len(scores)
    held = sp.csr_matrix((np.ones(len(held_items)), ([0] * len(held_items), held_items)), shape=(1, n_items or n))
    return np.asarray([scores], dtype=np.float32), held


def test_tie_group_across_the_cutoff_by_hand():
    # item 0 scores 5 (rank 0); items 1, 2, 3 tie at 4 (ranks 1-3 in some order); K = 2 keeps one of the three
    scores, held = _one_user([5, 4, 4, 4, 1, 0], [2])
    m = metrics_from_scores(scores, held, ks=(2, 4))
    d = 1 / np.log2(np.arange(2, 6))  # discounts of positions 0..3
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["precision@2"] == pytest.approx(1 / 6)
    assert m["hit@2"] == pytest.approx(1 / 3)
    assert m["ndcg@2"] == pytest.approx(d[1] / 3)  # position 1 with probability 1/3; ideal DCG = 1
    assert m["recall@4"] == 1.0 and m["hit@4"] == 1.0
    assert m["ndcg@4"] == pytest.approx((d[1] + d[2] + d[3]) / 3)  # the mean discount of the group's positions
    first = metrics_from_scores(scores, held, ks=(2, 4), ties="first")
    assert first["recall@2"] == 0.0 and first["ndcg@4"] == pytest.approx(d[2])  # item 2 is second in the group

    # two held items in the group: Hit@2 = 1 - P(the kept position goes to the third item) = 2/3
    scores, held = _one_user([5, 4, 4, 4, 1, 0], [2, 3])
    m = metrics_from_scores(scores, held, ks=(2,))
    assert m["recall@2"] == pytest.approx(1 / 3)  # 2 x 1/3 expected hits over 2 held items
    assert m["hit@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx(2 * d[1] / 3 / (d[0] + d[1]))


def _brute_force(scores, held_items, ks, exclude=()):
    """Average of the lower-id-first metrics over every order of the tied items (relabel, rank, average)."""
    n = len(scores)
    groups = {}
    for j in range(n):
        if j not in exclude:
            groups.setdefault(scores[j], []).append(j)
    tied = [g for g in groups.values() if len(g) > 1]
    assert sum(len(g) for g in tied) <= 7, "keep the brute force small"
    total, count = None, 0
    orders = [list(permutations(g)) for g in tied]
    import itertools

    for choice in itertools.product(*orders):
        rank_key = {j: 0.0 for j in range(n)}
        for _group, perm in zip(tied, choice):
            for pos, j in enumerate(perm):
                rank_key[j] = pos
        order = sorted(range(n), key=lambda j: (-scores[j], rank_key[j]))
        order = [j for j in order if j not in exclude]
        held = sp.csr_matrix((np.ones(len(held_items)), ([0] * len(held_items), held_items)), shape=(1, n))
        df = metrics_from_topk(np.array([order[:max(ks)] + [-1] * (max(ks) - len(order[:max(ks)]))]), held,
                               np.array([0]), ks)
        vals = df.drop(columns=["user", "n_held"]).iloc[0]
        total = vals if total is None else total + vals
        count += 1
    return (total / count).to_dict()


def _tie_cases(n_cases: int, n: int = 9):
    """Small random one-user cases with many ties (at most 7 tied items, so every order can be enumerated)."""
    rng = np.random.default_rng(0)
    while n_cases:
        scores = rng.integers(0, 4, size=n).astype(np.float32)  # few distinct values: many ties
        held_items = sorted(rng.choice(n, size=rng.integers(1, 4), replace=False).tolist())
        rest = [j for j in range(n) if j not in held_items]
        exclude = sorted(rng.choice(rest, size=rng.integers(0, 3), replace=False).tolist())
        groups = {}
        for j in range(n):
            if j not in exclude:
                groups.setdefault(scores[j], []).append(j)
        if sum(len(g) for g in groups.values() if len(g) > 1) <= 7:
            n_cases -= 1
            yield scores, held_items, exclude


@pytest.mark.parametrize("case", list(_tie_cases(12)))
def test_expected_metrics_equal_the_average_over_every_tie_order(case):
    scores, held_items, exclude = case
    n = len(scores)
    want = _brute_force(scores.tolist(), held_items, (2, 4), set(exclude))
    ex = sp.csr_matrix((np.ones(len(exclude)), ([0] * len(exclude), exclude)), shape=(1, n))
    got = metrics_from_scores(scores[None], _one_user(scores, held_items)[1], ks=(2, 4), exclude=ex)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_relabelling_items_never_changes_expected_metrics_but_can_change_first():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 60
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float32)  # heavy ties
    held = sp.random(n_users, n_items, density=0.08, random_state=1, format="csr")
    held.data[:] = 1
    exclude = sp.random(n_users, n_items, density=0.1, random_state=2, format="csr")
    exclude.data[:] = 1
    exclude = (exclude - exclude.multiply(held)).tocsr()  # held-out items are never excluded
    exclude.eliminate_zeros()
    base = metrics_from_scores(scores, held, ks=(5, 10), exclude=exclude)
    base_first = metrics_from_scores(scores, held, ks=(5, 10), exclude=exclude, ties="first")
    changed_first = False
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(n_items)
        got = metrics_from_scores(scores[:, perm], held[:, perm], ks=(5, 10), exclude=exclude[:, perm])
        for key in base:
            assert got[key] == pytest.approx(base[key], abs=1e-12), key
        first = metrics_from_scores(scores[:, perm], held[:, perm], ks=(5, 10), exclude=exclude[:, perm],
                                    ties="first")
        changed_first |= any(abs(first[k] - base_first[k]) > 1e-9 for k in base_first)
    assert changed_first, "the lower-id-first rule should depend on the labels in this heavily tied example"


def test_first_rule_reproduces_the_top_k_lists(small_synth):
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(small_synth.n_users, small_synth.n_items)), 1).astype(np.float32)
    model = FixedScores(scores)
    held = small_synth.split("test")
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    with model.evaluating():
        top = topk_items(model, users, small_synth.train, 20)
    old = metrics_from_topk(top, held, users, (10, 20))
    res = evaluate(model, small_synth, "test", ks=(10, 20), buckets=None, ties="first")
    for col in ("recall@10", "ndcg@20", "precision@20", "hit@10"):
        np.testing.assert_allclose(res.per_user[col].to_numpy(), old[col].to_numpy(), atol=1e-12)
    # without ties the two rules agree
    distinct = rng.permutation(small_synth.n_users * small_synth.n_items).reshape(scores.shape).astype(np.float64)
    a = metrics_from_scores(distinct, held, exclude=small_synth.train)
    b = metrics_from_scores(distinct, held, exclude=small_synth.train, ties="first")
    assert a == pytest.approx(b)


def test_evaluate_records_tie_shares_and_expected_bucket_metrics():
    ds = _toy()
    scores = np.zeros((2, 6), dtype=np.float32)  # every item ties
    res = evaluate(FixedScores(scores), ds, "test", ks=(1, 2))
    assert res.metrics["tie_share@1"] == 1.0 and res.metrics["tie_share@2"] == 1.0
    # user 0: train {0, 1} masked, 4 candidates, held {2}: recall@1 = 1/4; user 1: train {2}, 5 candidates, held {4}
    pu = res.per_user.set_index("user")
    assert pu.loc[0, "recall@1"] == pytest.approx(1 / 4) and pu.loc[1, "recall@2"] == pytest.approx(2 / 5)
    b = res.buckets.set_index("bucket")
    assert b.loc["cold (0)", "recall@2"] == pytest.approx(2 / 5)  # item 4 is cold; only user 1 holds it
    with pytest.raises(ValueError, match="ties='random'"):
        evaluate(FixedScores(scores), ds, "test", ties="random")


def test_cold_candidates_are_tie_aware():
    ds = _toy()
    res = evaluate_cold_candidates(FixedScores(np.zeros((2, 6), dtype=np.float32)), ds, "test", ks=(1,),
                                   candidates=np.array([3, 4, 5]))
    # user 1 holds candidate 4 among 3 tied candidates (3 is valid, not train) -> recall@1 = 1/3
    assert res.per_user.set_index("user").loc[1, "recall@1"] == pytest.approx(1 / 3)


def test_early_stopping_selects_on_the_tie_aware_valid_metric(small_synth):
    from motor.train import TrainConfig, train

    scores = np.zeros((small_synth.n_users, small_synth.n_items), dtype=np.float32)  # all tied
    tr = train(FixedScores(scores), small_synth, TrainConfig(epochs=1, progress=False))
    expected = evaluate(FixedScores(scores), small_synth, "valid", buckets=None)
    first = evaluate(FixedScores(scores), small_synth, "valid", buckets=None, ties="first")
    assert tr.best_valid["recall@20"] == pytest.approx(expected.metrics["recall@20"])
    assert expected.metrics["recall@20"] != pytest.approx(first.metrics["recall@20"])


def test_hit_profile_spreads_a_tie_group_over_its_positions(small_synth):
    from motor.evaluate import hit_profile, ranks_from_scores

    scores, held = _one_user([5, 4, 4, 4, 1, 0], [2])
    prof = hit_profile(ranks_from_scores(scores, held, 4), 4, [("all", np.ones(6, bool)), ("none", np.zeros(6, bool))])
    allp = prof[prof.bucket == "all"].hits.to_numpy()
    np.testing.assert_allclose(allp, [0, 1 / 3, 1 / 3, 1 / 3])
    assert (prof[prof.bucket == "none"].hits == 0).all()
    # on a real evaluation the profile adds up to the hits and to the DCG of every user
    rng = np.random.default_rng(0)
    res = evaluate(FixedScores(np.round(rng.normal(size=(small_synth.n_users, small_synth.n_items)), 1)
                               .astype(np.float32)), small_synth, "test")
    p = res.hit_profile[res.hit_profile.bucket == "all"].hits.to_numpy()
    pu = res.per_user
    assert p.sum() == pytest.approx((pu["recall@20"] * pu["n_held"]).mean())
    assert set(res.hit_profile.bucket) >= {"all", "0-5"}
