"""Every backbone, with item IDs and with MOTOR tokens, built and trained on a small synthetic dataset.

Needs no shared data, so a fresh clone's ``make test`` constructs all nine backbones: shapes of the final
embeddings and scores, a gradient in every parameter of the item representation, a few epochs of the real trainer
with a finite, falling loss, and an evaluation pass with metrics in range.
"""
import numpy as np
import pytest
import torch

import motor
from motor.backbones import REGISTRY, build
from motor.evaluate import evaluate
from motor.item_repr import build_item_repr
from motor.tokenizer import n_centroids_of
from motor.train import train

ALL_BACKBONES = ["bpr", "lightgcn", "layergcn", "vbpr", "grcn", "slmrec", "bm3", "freedom", "mgcn"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(dataset, token ids): 150 users, 200 items (more items than feature dimensions, so the tokenizer fits OPQ
    as on real data), about 1,200 training interactions, text and image features."""
    ds = motor.synthetic(n_users=150, n_items=200, n_interactions=1500, seed=3)
    with pytest.MonkeyPatch.context() as mp:  # token cache outside the repository, as for every test
        mp.setenv("MOTOR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        token_ids = motor.tokenize(ds, 2)
    return ds, token_ids


def _model(name: str, kind: str, ds, token_ids):
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=token_ids, n_centroids=n_centroids_of(token_ids))
    return build(name, ds, rep)


def _batch(ds, n: int = 256):
    coo = ds.train.tocoo()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(coo.row), n, replace=False)
    return (torch.as_tensor(coo.row[pick], dtype=torch.long), torch.as_tensor(coo.col[pick], dtype=torch.long),
            torch.as_tensor(rng.integers(0, ds.n_items, n), dtype=torch.long))


def test_every_registered_backbone_is_covered():
    assert sorted(REGISTRY) == sorted(ALL_BACKBONES)


@pytest.mark.parametrize("kind", ["id", "ms"])
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_backbone_builds_and_trains_on_synthetic_data(data, name, kind):
    ds, token_ids = data
    model = _model(name, kind, ds, token_ids)
    expected_repr = "IDEmbedding" if kind == "id" else "ModalSpecific"  # the "ms" class (motor.item_repr.ITEM_REPRS)
    assert type(model.item_repr).__name__ == expected_repr

    u, i = model.embeddings()
    assert u.shape[0] == ds.n_users and i.shape[0] == ds.n_items and u.shape[1] == i.shape[1]
    assert torch.isfinite(u).all() and torch.isfinite(i).all()
    with model.evaluating():
        scores = model.score(torch.arange(5))
    assert scores.shape == (5, ds.n_items) and torch.isfinite(scores).all()

    # one batch: the loss is a finite scalar and its gradient reaches every parameter of the item representation
    model.train()
    model.on_epoch_start(torch.Generator().manual_seed(0))
    loss = model.loss(*_batch(ds))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    item_params = dict(model.item_repr.named_parameters())
    assert item_params
    for pname, p in item_params.items():
        assert p.grad is not None, f"{name}-{kind}: no gradient reaches item_repr.{pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}-{kind}: item_repr.{pname}"
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{name}-{kind}: gradient of {pname} not finite"
    model.zero_grad(set_to_none=True)

    # the real trainer: a few epochs of several steps each; the epoch-mean loss is finite and falls every epoch
    result = train(model, ds, epochs=4, batch_size=256, lr=1e-2, progress=False)
    loss_per_epoch = result.history["loss"].to_numpy()
    assert len(loss_per_epoch) == 4 and np.isfinite(loss_per_epoch).all()
    assert (np.diff(loss_per_epoch) < 0).all(), f"{name}-{kind}: loss per epoch {loss_per_epoch}"
    metrics = evaluate(model, ds, "valid", buckets=None).metrics
    assert 0 <= metrics["recall@20"] <= 1 and 0 <= metrics["ndcg@20"] <= 1


def test_freedom_without_item_graph_drops_exactly_the_item_graph_term(data):
    """``item_graph=False``: the item vectors lose S e (the frozen kNN term) and nothing else; users unchanged."""
    from motor.backbones.graph import propagate

    ds, token_ids = data
    full = _model("freedom", "ms", ds, token_ids)
    torch.manual_seed(0)
    rep = build_item_repr("ms", ds.n_items, 64, token_ids=token_ids, n_centroids=n_centroids_of(token_ids))
    bare = build("freedom", ds, rep, item_graph=False)
    bare.load_state_dict(full.state_dict())
    with torch.no_grad():
        (u1, i1), (u2, i2) = full.embeddings(), bare.embeddings()
        h = propagate(full.item_graph, full.item_repr(), full.n_mm_layers)[-1]
    torch.testing.assert_close(u1, u2)
    torch.testing.assert_close(i1 - h, i2)
    assert h.abs().sum() > 0
    users, pos, neg = _batch(ds)
    assert torch.isfinite(bare.loss(users, pos, neg))
