import numpy as np
import pytest
import torch

import motor
import motor.experiment
from motor.backbones import build
from motor.evaluate import evaluate
from motor.item_repr import build_item_repr
from motor.train import sample_negatives, train, train_keys

from .conftest import real


def test_negative_sampler_never_returns_a_positive(small_synth):
    keys = train_keys(small_synth.train)
    coo = small_synth.train.tocoo()
    rng = np.random.default_rng(0)
    for _ in range(5):
        neg = sample_negatives(coo.row, small_synth.n_items, keys, rng)
        assert small_synth.train[coo.row, neg].sum() == 0
    # a user owning all but one item always gets that item
    from motor.data import from_interactions

    ds = from_interactions("x", np.zeros(9, int), np.arange(9), np.zeros(9), 1, 10)
    neg = sample_negatives(np.zeros(200, int), 10, train_keys(ds.train), rng)
    assert (neg == 9).all()


def _model(ds, kind="id", backbone="lightgcn", seed=0):
    torch.manual_seed(seed)
    tok = motor.tokenize(ds, 2, n_centroids=32) if kind != "id" else None
    return build(backbone, ds, build_item_repr(kind, ds.n_items, 16, token_ids=tok, n_centroids=32), dim=16)


def test_same_seed_identical_metrics(small_synth):
    a = train(_model(small_synth), small_synth, epochs=3, progress=False)
    b = train(_model(small_synth), small_synth, epochs=3, progress=False)
    pd_equal = a.history.drop(columns=["train_seconds", "eval_seconds"]).equals(
        b.history.drop(columns=["train_seconds", "eval_seconds"]))
    assert pd_equal and a.best_valid == b.best_valid


class _NoTest:
    """Wraps a dataset; reading the test split raises (proves selection never looks at it)."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name == "test":
            raise AssertionError("the trainer read the test split")
        return getattr(self._ds, name)

    def split(self, name):
        if name == "test":
            raise AssertionError("the trainer read the test split")
        return self._ds.split(name)


def test_selection_never_reads_test(small_synth):
    res = train(_model(small_synth), _NoTest(small_synth), epochs=3, progress=False)
    assert res.best_epoch >= 0
    with pytest.raises(AssertionError, match="test split"):
        evaluate(_model(small_synth), _NoTest(small_synth), "test")


def test_best_weights_restored(small_synth):
    model = _model(small_synth)
    res = train(model, small_synth, epochs=6, progress=False)
    again = evaluate(model, small_synth, "valid", buckets=None)
    assert again["recall@20"] == pytest.approx(res.best_valid["recall@20"])
    assert again["recall@20"] == pytest.approx(res.history["valid_recall@20"].max())


def test_resume_reproduces_uninterrupted_run(small_synth, tmp_path):
    full = train(_model(small_synth, backbone="layergcn"), small_synth, epochs=5, progress=False)

    def crash(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_model(small_synth, backbone="layergcn"), small_synth, epochs=5, progress=False,
              checkpoint=str(ckpt), callbacks=[crash])
    resumed = train(_model(small_synth, backbone="layergcn", seed=99), small_synth, epochs=5, progress=False,
                    checkpoint=str(ckpt), resume=True)
    cols = ["epoch", "loss", "valid_recall@20", "valid_ndcg@20"]
    assert full.history[cols].equals(resumed.history[cols])
    assert full.best_valid == resumed.best_valid


def test_nan_loss_stops_with_clear_message(small_synth):
    model = _model(small_synth)
    with torch.no_grad():
        model.user_emb.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan.*learning rate"):
        train(model, small_synth, epochs=2, progress=False)


@real("scientific")
@pytest.mark.parametrize("backbone", ["bpr", "lightgcn", "layergcn", "vbpr"])
def test_backbones_learn_and_beat_popularity(backbone):
    ds = motor.experiment.get_dataset("scientific", "random", 0)
    pop = evaluate(build("pop", ds, None), ds, "valid", buckets=None)["recall@20"]
    tok = motor.tokenize(ds, 4)
    for kind in ("id", "ms"):
        torch.manual_seed(0)
        model = build(backbone, ds, build_item_repr(kind, ds.n_items, 64, token_ids=tok))
        users = torch.arange(64)
        model.loss(users, users, users + 1).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.item_repr.parameters())
        model.zero_grad()
        # (V)BPR with ID embeddings learns slowly at lr 1e-3 on this sparse data (passes popularity at ~20)
        epochs = 25 if kind == "id" and backbone in ("bpr", "vbpr") else 8
        res = train(model, ds, epochs=epochs, patience=50, progress=False)
        assert res.history["loss"].iloc[-1] < res.history["loss"].iloc[0]
        assert res.best_valid["recall@20"] > pop, (backbone, kind, res.best_valid["recall@20"], pop)
        u, i = model.embeddings()
        assert u.shape[0] == ds.n_users and i.shape[0] == ds.n_items


def test_spmm_matches_dense_in_value_and_gradient():
    from motor.backbones.graph import knn_graph, spmm

    a = knn_graph(np.random.default_rng(0).normal(size=(30, 5)), k=4)  # not symmetric
    x = torch.randn(30, 3, dtype=torch.float32, requires_grad=True)
    y = spmm(a, x)
    (y * torch.arange(90.0).view(30, 3)).sum().backward()
    dense = a.to_dense()
    torch.testing.assert_close(y, dense @ x)
    torch.testing.assert_close(x.grad, dense.T @ torch.arange(90.0).view(30, 3))


def test_negatives_are_uniform_over_the_non_positives():
    """Chi-square over many draws for one user: every item that is not a positive is equally likely (an
    off-by-one that never draws the last item fails here; "never a positive" alone does not see it)."""
    from scipy import stats

    n_items, positives = 12, [0, 5]
    keys = np.sort(np.asarray(positives, dtype=np.int64))  # user 0: key = 0 * n_items + item
    neg = sample_negatives(np.zeros(60_000, dtype=np.int64), n_items, keys, np.random.default_rng(0))
    counts = np.bincount(neg, minlength=n_items)
    allowed = np.setdiff1d(np.arange(n_items), positives)
    assert counts[positives].sum() == 0 and (counts[allowed] > 0).all()
    assert stats.chisquare(counts[allowed]).pvalue > 1e-3


def test_a_user_with_every_item_is_named_before_training():
    from motor.data import from_interactions

    users = np.r_[np.zeros(5, int), np.ones(2, int), 2 * np.ones(3, int)]
    items = np.r_[np.arange(5), [0, 1], [2, 3, 4]]
    ds = from_interactions("full", users, items, np.zeros(10), 3, 5, user_ids=np.array([10, 11, 12]))
    model = build("bpr", ds, build_item_repr("id", ds.n_items, 8), dim=8)
    with pytest.raises(ValueError, match=r"dataset 'full': user\(s\) \[10\] interacted with every one of its 5 "
                                         r"items in training.*Fix: drop those users"):
        train(model, ds, epochs=1, progress=False)
    keys = train_keys(ds.train)
    with pytest.raises(RuntimeError, match=r"could not sample negatives for user rows \[0\].*Fix: drop"):
        sample_negatives(np.zeros(3, int), 5, keys, np.random.default_rng(0))


def test_a_checkpoint_missing_an_entry_names_it(tmp_path, small_synth):
    from motor.train import CheckpointError, TrainConfig, checkpoint_bytes, run_description, trainer_settings

    model = build("bpr", small_synth, build_item_repr("id", small_synth.n_items, 8), dim=8)
    cfg = TrainConfig(epochs=1, checkpoint=str(tmp_path / "ck.pt"), progress=False)
    desc = run_description(model, small_synth, cfg, trainer_settings(model, None, None))
    (tmp_path / "ck.pt").write_bytes(checkpoint_bytes({"model": model.state_dict(), "epoch": 0}, desc))
    with pytest.raises(CheckpointError, match=r"ck.pt lacks the entries \['optimizer', 'history', 'best', "
                                              r"'np_rng', 'edge_rng', 'torch_rng'\].*Fix: delete"):
        train(model, small_synth, cfg, resume=True)
