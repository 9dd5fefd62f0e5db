"""BM3's options against the ID-free collapse (``center_items``, ``bpr_weight``): off by default, the default is
BM3's objective written out by hand; each option changes the objective exactly as documented."""
import pytest
import torch
import torch.nn.functional as F

from motor import train as train_mod
from motor.backbones.bm3 import BM3
from motor.backbones.graph import layer_mean
from motor.backbones.losses import dropout
from motor.experiment import RunConfig
from motor.item_repr import build_item_repr
from motor.tokenizer import tokenize

USERS, POS, NEG = torch.tensor([0, 1, 2, 2, 7]), torch.tensor([3, 4, 5, 5, 9]), torch.tensor([10, 11, 12, 13, 14])


def _model(ds, seed: int = 0, kind: str = "id", **hparams) -> BM3:
    torch.manual_seed(seed)
    tokens = tokenize(ds, 2, n_centroids=16) if kind != "id" else None
    rep = build_item_repr(kind, ds.n_items, 16, token_ids=tokens, n_centroids=16)
    return BM3(ds, rep, dim=16, **hparams)


def _naive_bm3_loss(model: BM3, users, pos) -> torch.Tensor:
    """BM3's objective as the module docstring states it, with plain torch (cosine_similarity, norms)."""
    items = model.item_repr()
    out = layer_mean(model.adj, torch.cat([model.user_emb, items]), model.n_layers)
    u_all, i_all = out[: model.n_users], out[model.n_users:] + items
    u, i = u_all[users], i_all[pos]
    u_t, i_t = dropout(u, model.dropout).detach(), dropout(i, model.dropout).detach()

    def cos_loss(a, b):
        return 1 - F.cosine_similarity(a, b, dim=1, eps=1e-8).mean()

    p = model.predictor
    loss = cos_loss(p(u), i_t) + cos_loss(p(i), u_t)
    for m in model.modalities:
        h = model.projections[m](model.features(m)[pos])
        h_t = dropout(h, model.dropout).detach()
        loss = loss + model.cl_weight * (cos_loss(p(h), i_t) + cos_loss(p(h), h_t))
    return loss + model.reg_weight * (u_all.norm() + i_all.norm()) / model.n_items


@pytest.mark.parametrize("kind", ["id", "ms"])
def test_default_is_bm3s_objective(small_synth, kind):
    model = _model(small_synth, kind=kind)
    assert not model.center_items and model.bpr_weight == 0 and model.uniformity == 0
    torch.manual_seed(1)
    got = model.loss(USERS, POS, NEG).detach()
    torch.manual_seed(1)  # the same dropout masks
    want = _naive_bm3_loss(model, USERS, POS).detach()
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    # explicit default values are the same model, the same numbers
    explicit = _model(small_synth, kind=kind, center_items=False, bpr_weight=0.0, uniformity=0.0)
    torch.manual_seed(1)
    assert float(explicit.loss(USERS, POS, NEG).detach()) == float(got)


def test_default_run_ids_unchanged():
    # the registry's BM3 runs on scientific keep their ids: the options are not in a default config
    assert RunConfig(dataset="scientific", backbone="bm3", item_repr="id", seed=0).run_id() == \
        "scientific-random-bm3-id-all-D4-s0-386d2da1"
    assert RunConfig(dataset="scientific", backbone="bm3", item_repr="ms", seed=2).run_id() == \
        "scientific-random-bm3-ms-all-D4-s2-49e976c4"
    opt = RunConfig(dataset="scientific", backbone="bm3", item_repr="ms", seed=2, hparams={"bpr_weight": 1.0})
    assert opt.run_id() != "scientific-random-bm3-ms-all-D4-s2-49e976c4"
    opt.validate()  # the options are accepted hparams


def test_center_items_removes_the_common_direction(small_synth):
    model = _model(small_synth, center_items=True)
    with torch.no_grad():
        u0, i0 = model.online()
        items = model.item_repr()
        centered = items - items.mean(0)
        out = layer_mean(model.adj, torch.cat([model.user_emb, centered]), model.n_layers)
        torch.testing.assert_close(i0, out[model.n_users:] + centered)
        torch.testing.assert_close(u0, out[: model.n_users])
        # one vector added to every item (the collapse direction) changes nothing
        model.item_repr.weight.add_(torch.linspace(-1, 1, 16))
        u1, i1 = model.online()
    torch.testing.assert_close(u1, u0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(i1, i0, atol=1e-5, rtol=1e-5)
    plain = _model(small_synth)
    with torch.no_grad():
        plain.item_repr.weight.add_(torch.linspace(-1, 1, 16))
        assert not torch.allclose(plain.online()[1], i0, atol=1e-3)


def test_bpr_weight_adds_bpr_on_the_scores(small_synth):
    base, with_bpr = _model(small_synth), _model(small_synth, bpr_weight=0.5)
    torch.manual_seed(1)
    faithful = base.loss(USERS, POS, NEG).detach()
    torch.manual_seed(1)
    got = with_bpr.loss(USERS, POS, NEG)
    with torch.no_grad():
        users, items = with_bpr.embeddings()  # scores are p(h_u) . p(h_i)
        x = (users[USERS] * items[POS]).sum(1) - (users[USERS] * items[NEG]).sum(1)
        bpr = -F.logsigmoid(x).mean()
    assert float(got.detach() - faithful) == pytest.approx(0.5 * float(bpr), rel=1e-4)
    got.backward()
    assert with_bpr.item_repr.weight.grad[NEG].abs().sum() > 0  # negatives now receive a gradient
    with pytest.raises(ValueError, match="negatives"):
        with_bpr.loss(USERS, POS)
    with pytest.raises(ValueError, match="bpr_weight"):
        _model(small_synth, bpr_weight=-1.0)


@pytest.mark.parametrize("hparams", [{"center_items": True, "uniformity": 0.1}, {"bpr_weight": 1.0}])
def test_options_train_token_models(small_synth, hparams):
    model = _model(small_synth, kind="ms", **hparams)
    res = train_mod.train(model, small_synth, train_mod.TrainConfig(epochs=2, progress=False))
    assert res.history.loss.notna().all() and len(res.history) == 2
