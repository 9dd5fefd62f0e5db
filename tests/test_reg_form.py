"""``reg_form``: motor's L2 penalty (the default, unchanged) and MMRec's exact penalties, against hand-written
formulas (value and gradient) on a small synthetic batch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import motor
from motor.backbones import build
from motor.backbones.losses import emb_loss, half_squared_l2, l2_reg
from motor.experiment import RunConfig
from motor.item_repr import build_item_repr


@pytest.fixture(scope="module")
def ds():
    return motor.synthetic(n_users=40, n_items=50, n_interactions=300, seed=5)


def _model(name, ds, **hparams):
    torch.manual_seed(0)
    return build(name, ds, build_item_repr("id", ds.n_items, 8), dim=8, **hparams)


def _batch(ds, n=16):
    coo = ds.train.tocoo()
    rng = np.random.default_rng(1)
    pick = rng.choice(len(coo.row), n, replace=False)
    return (torch.as_tensor(coo.row[pick], dtype=torch.long), torch.as_tensor(coo.col[pick], dtype=torch.long),
            torch.as_tensor(rng.integers(0, ds.n_items, n), dtype=torch.long))


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


def test_penalty_functions_match_their_formulas():
    torch.manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    # MMRec EmbLoss: (||A||_F + ||B||_F) / B; d/dA = A / (||A||_F B)
    value = emb_loss(a, b)
    fro = lambda x: torch.sqrt((x * x).sum())  # noqa: E731
    assert torch.allclose(value, (fro(a) + fro(b)) / 5)
    ga, gb = torch.autograd.grad(value, (a, b))
    assert torch.allclose(ga, a.detach() / (fro(a).detach() * 5))
    assert torch.allclose(gb, b.detach() / (fro(b).detach() * 5))
    # MMRec L2Loss: 0.5 * sum of squares; gradient = the tensor itself
    value = half_squared_l2(a, b)
    assert torch.allclose(value, 0.5 * ((a * a).sum() + (b * b).sum()))
    assert all(torch.allclose(g, x.detach()) for g, x in zip(torch.autograd.grad(value, (a, b)), (a, b)))
    # motor's default: sum of squares / B; gradient 2 x / B
    value = l2_reg(a, b)
    assert torch.allclose(value, ((a * a).sum() + (b * b).sum()) / 5)
    assert all(torch.allclose(g, 2 * x.detach() / 5) for g, x in zip(torch.autograd.grad(value, (a, b)), (a, b)))


def _bpr(u, p, n):
    return -F.logsigmoid((u * p).sum(1) - (u * n).sum(1))


@pytest.mark.parametrize("name", ["bpr", "vbpr"])
@pytest.mark.parametrize("form", ["motor", "mmrec"])
def test_bpr_and_vbpr_losses(ds, name, form):
    reg = 0.3
    model = _model(name, ds, reg_weight=reg, **({} if form == "motor" else {"reg_form": form}))
    users, pos, neg = _batch(ds)
    params = [p for p in model.parameters() if p.requires_grad]
    got = model.loss(users, pos, neg)
    items = model.items() if name == "vbpr" else model.item_repr()
    u, p, n = model.user_emb[users], items[pos], items[neg]
    if form == "mmrec":  # MMRec: mean BPR + reg * (|U|_F + |P|_F + |N|_F) / B
        penalty = (u.pow(2).sum().sqrt() + p.pow(2).sum().sqrt() + n.pow(2).sum().sqrt()) / len(users)
    else:  # motor: mean BPR + reg * (sum of squares) / B
        penalty = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(users)
    want = _bpr(u, p, n).mean() + reg * penalty
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(got, params), _grads(want, params)):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("form", ["motor", "mmrec"])
def test_lightgcn_loss(ds, form):
    reg = 0.3
    model = _model("lightgcn", ds, n_layers=2, reg_weight=reg, **({} if form == "motor" else {"reg_form": form}))
    users, pos, neg = _batch(ds)
    params = [p for p in model.parameters() if p.requires_grad]
    got = model.loss(users, pos, neg)
    ego = model.ego()
    adj = model.adj.to_dense()
    out = (ego + adj @ ego + adj @ (adj @ ego)) / 3  # mean over layers 0..2
    rows = [users, pos + ds.n_users, neg + ds.n_users]
    u, p, n = (out[r] for r in rows)
    eu, ep, en = (ego[r] for r in rows)
    if form == "mmrec":
        penalty = (eu.norm() + ep.norm() + en.norm()) / len(users)
    else:
        penalty = (eu.pow(2).sum() + ep.pow(2).sum() + en.pow(2).sum()) / len(users)
    want = _bpr(u, p, n).mean() + reg * penalty
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(_grads(got, params), _grads(want, params)):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("form", ["motor", "mmrec"])
def test_layergcn_loss(ds, form):
    reg = 0.3
    model = _model("layergcn", ds, n_layers=2, dropout=0.0, reg_weight=reg,
                   **({} if form == "motor" else {"reg_form": form}))
    users, pos, neg = _batch(ds)
    params = [p for p in model.parameters() if p.requires_grad]
    got = model.loss(users, pos, neg)
    ego = torch.cat([model.user_emb, model.item_repr()])
    adj = model.graph.pruned.to_dense()  # dropout 0: the full normalised graph
    h, layers = ego, []
    for _ in range(2):
        h = adj @ h
        h = F.cosine_similarity(h, ego, dim=-1).unsqueeze(1) * h
        layers.append(h)
    out = layers[0] + layers[1]
    rows = [users, pos + ds.n_users, neg + ds.n_users]
    u, p, n = (out[r] for r in rows)
    squares = sum(ego[r].pow(2).sum() for r in rows)
    if form == "mmrec":  # MMRec's LayerGCN: summed BPR + reg * 0.5 * sum of squares (not / B)
        want = _bpr(u, p, n).sum() + reg * 0.5 * squares
    else:
        want = _bpr(u, p, n).mean() + reg * squares / len(users)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(got, params), _grads(want, params)):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["bpr", "lightgcn", "vbpr", "layergcn"])
def test_default_form_is_motor_and_bad_values_are_refused(ds, name):
    users, pos, neg = _batch(ds)
    default = _model(name, ds, reg_weight=0.3).loss(users, pos, neg)
    explicit = _model(name, ds, reg_weight=0.3, reg_form="motor").loss(users, pos, neg)
    mmrec = _model(name, ds, reg_weight=0.3, reg_form="mmrec").loss(users, pos, neg)
    assert torch.equal(default, explicit) and not torch.allclose(default, mmrec)
    with pytest.raises(ValueError, match="reg_form"):
        _model(name, ds, reg_form="MMRec")


def test_reg_form_is_a_validated_hparam_that_changes_the_run_id():
    base = RunConfig(dataset="synthetic", backbone="bpr", item_repr="id", hparams={"reg_weight": 0.1})
    mmrec = RunConfig(dataset="synthetic", backbone="bpr", item_repr="id",
                      hparams={"reg_weight": 0.1, "reg_form": "mmrec"})
    assert mmrec.validate() is mmrec and base.run_id() != mmrec.run_id()
