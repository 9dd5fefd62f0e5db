import numpy as np
import pytest
import torch

from motor.item_repr import (CrossNetwork, IDEmbedding, TokenRepresentation, build_item_repr,
                             item_parameter_fraction, second_order)


def _ids(n=7, widths=(3, 4), k=5, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.integers(0, k, size=(n, w)) for m, w in zip(("image", "text"), widths)}


def _naive_cross(net: CrossNetwork, emb: torch.Tensor) -> torch.Tensor:
    """Eqs. 5-8 written as loops over items and token pairs."""
    out = []
    w = net.w
    for i in range(emb.shape[0]):
        e = emb[i]
        one = sum(w[x] * e[x] for x in range(e.shape[0]))
        two = torch.zeros_like(one)
        for x in range(e.shape[0]):
            for y in range(x + 1, e.shape[0]):
                two = two + w[x] * w[y] * e[x] * e[y]
        h = e.reshape(-1)
        for layer in net.mlp:
            h = layer(h)
        out.append(one + two + h)
    return torch.stack(out)


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()


@pytest.mark.parametrize("cross", ["ms", "ma"])
def test_tcn_matches_naive_equations(cross):
    torch.manual_seed(0)
    ids = _ids()
    rep = TokenRepresentation(ids, n_centroids=5, dim=6, cross=cross, hidden=(8,)).double()
    _randomise(rep)
    got = rep()
    emb = rep.token_embeddings()
    if cross == "ms":
        want = _naive_cross(rep.nets[0], emb[:, :3]) + _naive_cross(rep.nets[1], emb[:, 3:])
    else:
        want = _naive_cross(rep.nets[0], emb)
    assert got.shape == (7, 6)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    # embeddings really are the rows of each position's own table
    for p, (m, w) in enumerate([("image", 0), ("image", 1), ("image", 2), ("text", 0), ("text", 1), ("text", 2),
                                ("text", 3)]):
        torch.testing.assert_close(emb[:, p], rep.tables[p][torch.as_tensor(ids[m][:, w])])


def test_second_order_identity():
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    naive = sum(x[:, a] * x[:, b] for a in range(4) for b in range(a + 1, 4))
    torch.testing.assert_close(second_order(x), naive, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cross", ["ms", "ma", "mean", "linear"])
def test_gradients_reach_every_table_and_weight(cross):
    ids = _ids(n=50, k=5)
    rep = TokenRepresentation(ids, n_centroids=5, dim=4, cross=cross)
    rep().pow(2).sum().backward()
    used = torch.zeros(7, 5, dtype=torch.bool)
    for p, col in enumerate(np.concatenate([ids["image"], ids["text"]], 1).T):
        used[p, col] = True
    grad_rows = rep.tables.grad.abs().sum(-1) > 0
    assert torch.equal(grad_rows, used)  # every used token row gets a gradient, unused ones none
    if cross in ("ms", "ma"):
        for net in rep.nets:
            assert net.w.grad is not None and (net.w.grad != 0).all()


def test_shapes_of_ablations_and_subsets():
    ids = _ids()
    assert TokenRepresentation(ids, 5, 6, cross="mean")().shape == (7, 6)
    assert TokenRepresentation(ids, 5, 6, cross="linear")().shape == (7, 6)
    only_text = TokenRepresentation(ids, 5, 6, cross="ms", modalities=["text"])
    assert only_text.widths == [4] and only_text().shape == (7, 6)
    assert only_text(torch.tensor([0, 3])).shape == (2, 6)
    torch.testing.assert_close(only_text(torch.tensor([3])), only_text()[3:4])
    mean = TokenRepresentation(ids, 5, 6, cross="mean")
    torch.testing.assert_close(mean(), mean.token_embeddings().mean(1))
    with pytest.raises(KeyError):
        TokenRepresentation(ids, 5, 6, modalities=["audio"])
    with pytest.raises(ValueError, match="n_centroids"):
        TokenRepresentation(ids, 3, 6)


def test_same_seed_same_output():
    ids = _ids()
    torch.manual_seed(3)
    a = TokenRepresentation(ids, 5, 6)()
    torch.manual_seed(3)
    b = TokenRepresentation(ids, 5, 6)()
    assert torch.equal(a, b)


def test_parameter_accounting():
    ids = {"image": np.zeros((10_000, 4), int), "text": np.zeros((10_000, 4), int)}
    rep = build_item_repr("ms", 10_000, 64, token_ids=ids, n_centroids=256)
    tables = 8 * 256 * 64
    nets = 2 * (4 + 4 * 64 * 64 + 64)
    assert rep.n_parameters() == tables + nets
    assert item_parameter_fraction(rep, 10_000, 64) == pytest.approx((tables + nets) / 640_000)
    idm = build_item_repr("id", 10_000, 64)
    assert isinstance(idm, IDEmbedding) and idm.n_parameters() == 640_000
    with pytest.raises(ValueError, match="token_ids"):
        build_item_repr("ms", 10, 64)


def _direct(rep: TokenRepresentation) -> torch.Tensor:
    """The networks applied to gathered token embeddings with plain autograd (no per-token tables)."""
    emb = rep.token_embeddings()
    if rep.cross == "ma":
        return rep.nets[0](emb)
    return sum(net(part) for net, part in zip(rep.nets, torch.split(emb, rep.widths, dim=1)))


@pytest.mark.parametrize("cross", ["ms", "ma"])
@pytest.mark.parametrize("hidden,activation", [((), "tanh"), ((), "relu"), ((8,), "tanh")])
def test_fast_paths_equal_direct_form_values_and_gradients(cross, hidden, activation):
    """Default one-layer tanh nets take the fully fused kernel; other shapes the token-sums kernel + autograd."""
    torch.manual_seed(1)
    rep = TokenRepresentation(_ids(n=40, widths=(2, 5), k=5), 5, 6, cross=cross, hidden=hidden,
                              activation=activation).double()
    _randomise(rep)
    g = torch.randn(40, 6, dtype=torch.float64)
    paths = {"all items": lambda: rep(), "subset": lambda: rep._represent(torch.arange(40)), "direct": lambda: _direct(rep)}
    outs, grads = {}, {}
    for name, f in paths.items():
        rep.zero_grad()
        outs[name] = f()
        (outs[name] * g).sum().backward()
        grads[name] = {n: p.grad.clone() for n, p in rep.named_parameters()}
    for name in ("all items", "subset"):
        torch.testing.assert_close(outs[name], outs["direct"], atol=1e-12, rtol=0)
        for n in grads["direct"]:
            torch.testing.assert_close(grads[name][n], grads["direct"][n], atol=1e-10, rtol=0, msg=f"{name}: {n}")


def test_token_sums_gradcheck():
    from motor.sparse import csr_pair
    from motor.tcn import _TokenSums

    rep = TokenRepresentation(_ids(n=9, widths=(2, 3), k=4), 4, 3, cross="ms").double()
    _, inc_t = csr_pair(rep.incidence)
    ids = rep.flat_ids.reshape(-1)
    args = (torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(5, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda t, w, w1: _TokenSums.apply(t, w, w1, ids, rep.bag_offsets, inc_t), args)


def test_tanh_cross_gradcheck():
    from motor.sparse import csr_pair
    from motor.tcn import _TanhCross

    rep = TokenRepresentation(_ids(n=9, widths=(2, 3), k=4), 4, 3, cross="ms").double()
    _, inc_t = csr_pair(rep.incidence)
    ids = rep.flat_ids.reshape(-1)
    g = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                 for shape in ((5, 4, 3), (5,), (3, 5, 3), (2, 3)))
    assert torch.autograd.gradcheck(lambda t, w, w1, b: _TanhCross.apply(t, w, w1, b, ids, rep.bag_offsets, inc_t),
                                    args)
