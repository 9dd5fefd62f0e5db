"""``train_features``: FREEDOM, BM3 and MGCN train the raw modality feature matrices as MMRec does
(``nn.Embedding.from_pretrained(freeze=False)``) when asked, and keep them frozen by default.

Checked on a small synthetic dataset: the matrices are parameters initialised from (a copy of) the data, receive a
gradient where the backbone uses them and move with an Adam step, while the kNN item-item graphs stay the ones
built from the original features; the default keeps buffers that never move; ``RunConfig.hparams`` accepts the
option and a run through :func:`motor.run` trains with it.
"""
import numpy as np
import pytest
import torch

import motor
from motor.backbones import build
from motor.experiment import ConfigError, RunConfig
from motor.item_repr import build_item_repr
from motor.train import make_optimizer

BACKBONES = ["freedom", "bm3", "mgcn"]


@pytest.fixture(scope="module")
def ds():
    return motor.synthetic(n_users=80, n_items=120, n_interactions=900, seed=7)


def _model(name: str, ds, **hparams):
    torch.manual_seed(0)
    return build(name, ds, build_item_repr("id", ds.n_items, 32), dim=32, **hparams)


def _batch(ds, n: int = 64):
    coo = ds.train.tocoo()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(coo.row), n, replace=False)
    return (torch.as_tensor(coo.row[pick], dtype=torch.long), torch.as_tensor(coo.col[pick], dtype=torch.long),
            torch.as_tensor(rng.integers(0, ds.n_items, n), dtype=torch.long))


def _graphs(model) -> dict[str, torch.Tensor]:
    """The backbone's kNN item-item graphs (FREEDOM: one summed graph, MGCN: one per modality, BM3: none)."""
    return {name: t for name, t in model.named_buffers() if name.startswith("item_graph")}


def _step(model, ds) -> None:
    """One Adam step of the trainer's optimizer on one batch."""
    opt = make_optimizer(model, lr=1e-2)
    opt.zero_grad()
    model.loss(*_batch(ds)).backward()
    opt.step()


@pytest.mark.parametrize("name", BACKBONES)
def test_trained_features_are_parameters_initialised_from_a_copy_of_the_data(ds, name):
    model = _model(name, ds, train_features=True)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for m in ds.modalities:
        f = model.features(m)
        assert params[f"features_{m}"] is f and f"features_{m}" not in buffers
        assert f.requires_grad and f.dtype == torch.float32
        assert torch.equal(f.detach(), torch.as_tensor(ds.features[m], dtype=torch.float32))
        assert not np.shares_memory(f.detach().numpy(), ds.features[m])
    frozen = _model(name, ds)
    feature_size = sum(ds.features[m].size for m in ds.modalities)
    assert model.n_parameters() == frozen.n_parameters() + feature_size
    assert model.item_parameters() == frozen.item_parameters()
    assert f"features_{ds.modalities[0]}" in model.state_dict()  # trained weights are saved with the model


@pytest.mark.parametrize("name", BACKBONES)
def test_trained_features_get_gradients_and_move_while_the_knn_graphs_stay(ds, name):
    model = _model(name, ds, train_features=True)
    data = {m: ds.features[m].copy() for m in ds.modalities}
    before = {m: model.features(m).detach().clone() for m in ds.modalities}
    graphs = {k: g.detach().clone() for k, g in _graphs(model).items()}
    if name != "bm3":
        assert graphs
        # the same graphs as the frozen model's: built from the original features
        for k, g in _graphs(_model(name, ds)).items():
            assert torch.equal(g.indices(), graphs[k].indices()) and torch.equal(g.values(), graphs[k].values())

    users, pos, neg = _batch(ds)
    model.loss(users, pos, neg).backward()
    for m in ds.modalities:
        grad = model.features(m).grad
        assert grad is not None and grad.abs().sum() > 0, (name, m)
        touched = grad.abs().sum(1) > 0
        if name == "freedom":  # only the modality BPR terms read the features: rows of the batch's pos and neg
            used = torch.zeros(ds.n_items, dtype=torch.bool)
            used[torch.cat([pos, neg])] = True
            assert touched[~used].sum() == 0 and touched[used].any()
        elif name == "bm3":  # the projections of the batch's positive items only
            used = torch.zeros(ds.n_items, dtype=torch.bool)
            used[pos] = True
            assert touched[~used].sum() == 0 and touched[used].any()

    _step(model, ds)
    for m in ds.modalities:
        assert not torch.equal(model.features(m).detach(), before[m]), (name, m)
        np.testing.assert_array_equal(ds.features[m], data[m])  # the dataset is never modified
    for k, g in _graphs(model).items():
        assert not g.requires_grad
        assert torch.equal(g.indices(), graphs[k].indices()) and torch.equal(g.values(), graphs[k].values())


@pytest.mark.parametrize("name", BACKBONES)
def test_default_keeps_frozen_buffers_that_never_move(ds, name):
    model = _model(name, ds)
    assert model.train_features is False
    assert not any(n.startswith("features_") for n, _ in model.named_parameters())
    buffers = dict(model.named_buffers())
    before = {m: model.features(m).clone() for m in ds.modalities}
    for m in ds.modalities:
        assert buffers[f"features_{m}"] is model.features(m) and not model.features(m).requires_grad
    _step(model, ds)
    for m in ds.modalities:
        assert torch.equal(model.features(m), before[m])
        assert model.features(m).grad is None


@pytest.mark.parametrize("name", BACKBONES)
def test_trained_and_frozen_features_give_the_same_first_loss_and_then_differ(ds, name):
    """Same initial values: the first loss is the same; the second differs, because the features moved."""
    losses = {}
    for flag in (False, True):
        model = _model(name, ds, train_features=flag)
        opt = make_optimizer(model, lr=1e-2)
        losses[flag] = []
        for step in range(2):
            torch.manual_seed(step)  # the same dropout masks on both sides
            loss = model.loss(*_batch(ds))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[flag].append(loss.item())
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5, abs=1e-7)
    assert losses[True][1] != losses[False][1]


def test_runconfig_accepts_train_features_only_where_it_exists():
    for name in BACKBONES:
        RunConfig(dataset="synthetic", backbone=name, item_repr="id", hparams={"train_features": True}).validate()
    with pytest.raises(ConfigError, match="train_features"):
        RunConfig(dataset="synthetic", backbone="freedom", item_repr="id", hparams={"train_features": 1}).validate()
    with pytest.raises(ConfigError, match="train_features"):
        RunConfig(dataset="synthetic", backbone="lightgcn", item_repr="id",
                  hparams={"train_features": True}).validate()


def test_run_trains_the_features(ds):
    res = motor.run(dataset="synthetic", backbone="freedom", item_repr="id", epochs=2,
                    hparams={"train_features": True}, progress=False)
    assert res.config["hparams"] == {"train_features": True}
    assert len(res.history) == 2 and np.isfinite(res.history["loss"]).all()
    assert all(0.0 <= res.valid[k] <= 1.0 for k in ("recall@20", "ndcg@20"))
    model = res.model
    assert any(n.startswith("features_") for n, _ in model.named_parameters())
    full = motor.experiment.get_dataset("synthetic")  # the run's data: every modality, same item order
    moved = [m for m in model.modalities
             if not torch.equal(model.features(m).detach().cpu(), torch.as_tensor(full.features[m]).float())]
    assert moved == model.modalities
