import numpy as np
import pytest
import torch

from motor.item_repr import ITEM_REPRS, CrossNetwork, IDEmbedding, ModalSpecific, TokenRepresentation, build_item_repr


def _rep(kind, token_ids, n_centroids, dim, **kw):
    """A registered token representation (``kind``) directly from its class."""
    return ITEM_REPRS[kind](token_ids, n_centroids, dim, **kw)


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
    rep = _rep(cross, ids, n_centroids=5, dim=6, hidden=(8,)).double()
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


@pytest.mark.parametrize("cross", ["ms", "ma", "mean", "linear"])
def test_gradients_reach_every_table_and_weight(cross):
    ids = _ids(n=50, k=5)
    rep = _rep(cross, ids, n_centroids=5, dim=4)
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
    assert _rep("mean", ids, 5, 6)().shape == (7, 6)
    assert _rep("linear", ids, 5, 6)().shape == (7, 6)
    only_text = _rep("ms", ids, 5, 6, modalities=["text"])
    assert only_text.widths == [4] and only_text().shape == (7, 6)
    assert only_text(torch.tensor([0, 3])).shape == (2, 6)
    torch.testing.assert_close(only_text(torch.tensor([3])), only_text()[3:4])
    mean = _rep("mean", ids, 5, 6)
    torch.testing.assert_close(mean(), mean.token_embeddings().mean(1))
    with pytest.raises(KeyError):
        _rep("ms", ids, 5, 6, modalities=["audio"])
    with pytest.raises(ValueError, match="n_centroids"):
        _rep("ms", ids, 3, 6)


def test_same_seed_same_output():
    ids = _ids()
    torch.manual_seed(3)
    a = _rep("ms", ids, 5, 6)()
    torch.manual_seed(3)
    b = _rep("ms", ids, 5, 6)()
    assert torch.equal(a, b)


def test_parameter_accounting():
    ids = {"image": np.zeros((10_000, 4), int), "text": np.zeros((10_000, 4), int)}
    rep = build_item_repr("ms", 10_000, 64, token_ids=ids, n_centroids=256)
    tables = 8 * 256 * 64
    nets = 2 * (4 + 4 * 64 * 64 + 64)
    assert rep.n_parameters() == tables + nets
    idm = build_item_repr("id", 10_000, 64)
    assert isinstance(idm, IDEmbedding) and idm.n_parameters() == 640_000
    with pytest.raises(ValueError, match="token_ids"):
        build_item_repr("ms", 10, 64)


def _direct(rep: TokenRepresentation) -> torch.Tensor:
    """The networks applied to gathered token embeddings with plain autograd (no per-token tables)."""
    emb = rep.token_embeddings()
    if rep.name == "ma":
        return rep.nets[0](emb)
    return sum(net(part) for net, part in zip(rep.nets, torch.split(emb, rep.widths, dim=1)))


@pytest.mark.parametrize("cross", ["ms", "ma"])
@pytest.mark.parametrize("hidden,activation", [((), "tanh"), ((), "relu"), ((8,), "tanh")])
def test_fast_paths_equal_direct_form_values_and_gradients(cross, hidden, activation):
    """Default one-layer tanh nets take the fully fused kernel; other shapes the token-sums kernel + autograd."""
    torch.manual_seed(1)
    rep = _rep(cross, _ids(n=40, widths=(2, 5), k=5), 5, 6, hidden=hidden, activation=activation).double()
    _randomise(rep)
    g = torch.randn(40, 6, dtype=torch.float64)
    paths = {"all items": lambda: rep(), "subset": lambda: rep.represent(torch.arange(40)),
             "direct": lambda: _direct(rep)}
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


def _float32_and_float64(kind: str, n: int = 300, widths=(3, 5), k: int = 16, dim: int = 8):
    """A float32 representation with O(1) random weights and its float64 copy (same weights)."""
    ids = _ids(n=n, widths=widths, k=k, seed=5)
    torch.manual_seed(2)
    rep = _rep(kind, ids, k, dim)
    with torch.no_grad():
        for p in rep.parameters():
            p.normal_(0, 0.5)
    rep64 = _rep(kind, ids, k, dim).double()
    rep64.load_state_dict(rep.state_dict())
    return rep, rep64


def _values_and_grads(rep, f, g):
    rep.zero_grad()
    out = f()
    (out * g).sum().backward()
    return out.detach().clone(), {n: p.grad.clone() for n, p in rep.named_parameters()}


@pytest.mark.parametrize("cross", ["ms", "ma"])
def test_fused_float32_tcn_equals_the_float64_reference_and_the_naive_loop(cross, monkeypatch):
    """Float32 CPU: the numba kernels (motor.kernels.tcn_*); float64: the torch form and the direct form; and the
    equations as loops. Values and every parameter's gradient agree within float32 rounding."""
    import motor.tcn

    calls = []
    fused = motor.tcn._fused_forward
    monkeypatch.setattr(motor.tcn, "_fused_forward", lambda *a: calls.append(1) or fused(*a))
    rep, rep64 = _float32_and_float64(cross)
    g = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    out, grads = _values_and_grads(rep, rep, g)
    assert calls, "the float32 CPU path did not take the fused kernels"
    ref, ref_grads = _values_and_grads(rep64, rep64, g.double())
    direct, direct_grads = _values_and_grads(rep64, lambda: _direct(rep64), g.double())
    assert len(calls) == 1  # the float64 paths did not
    torch.testing.assert_close(ref, direct, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=1e-6)
    for name, want in ref_grads.items():
        torch.testing.assert_close(direct_grads[name], want, atol=1e-10, rtol=0, msg=name)
        torch.testing.assert_close(grads[name].double(), want, atol=1e-5 * want.abs().max().item(), rtol=1e-5,
                                   msg=name)
    emb = rep64.token_embeddings().detach()
    if cross == "ms":
        naive = _naive_cross(rep64.nets[0], emb[:, :3]) + _naive_cross(rep64.nets[1], emb[:, 3:])
    else:
        naive = _naive_cross(rep64.nets[0], emb)
    torch.testing.assert_close(out.double(), naive.detach(), atol=2e-6, rtol=1e-6)


@pytest.mark.parametrize("cross", ["ms", "ma"])
def test_fused_tcn_is_bit_identical_under_one_and_two_threads(cross):
    """The kernels are serial with a fixed summation order; the BLAS products around them do not split sums."""
    rep, _ = _float32_and_float64(cross, n=2000, widths=(4, 4), k=256, dim=64)
    g = torch.randn(2000, 64, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            results.append(_values_and_grads(rep, rep, g))
    finally:
        torch.set_num_threads(before)
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        for name, grad in grads.items():
            assert torch.equal(grad, results[0][1][name]), name


def test_token_sums_gradcheck():
    from motor.sparse import csr_pair
    from motor.tcn import _TokenSums

    rep = _rep("ms", _ids(n=9, widths=(2, 3), k=4), 4, 3).double()
    _, inc_t = csr_pair(rep.incidence)
    ids = rep.flat_ids.reshape(-1)
    args = (torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(5, dtype=torch.float64, requires_grad=True),
            torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda t, w, w1: _TokenSums.apply(t, w, w1, ids, rep.bag_offsets, inc_t), args)


def test_tanh_cross_gradcheck():
    from motor.sparse import csr_pair
    from motor.tcn import _TanhCross

    rep = _rep("ms", _ids(n=9, widths=(2, 3), k=4), 4, 3).double()
    _, inc_t = csr_pair(rep.incidence)
    ids = rep.flat_ids.reshape(-1)
    g = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                 for shape in ((5, 4, 3), (5,), (3, 5, 3), (2, 3)))
    starts = torch.tensor([0, 2, 5])
    assert torch.autograd.gradcheck(
        lambda t, w, w1, b: _TanhCross.apply(t, w, w1, b, ids, rep.bag_offsets, inc_t, rep.flat_ids, starts), args)


# --- the registry ------------------------------------------------------------------------------------------------

def test_registry_names_classes_and_headline():
    from motor.item_repr import headline_item_reprs, item_repr_class

    assert list(ITEM_REPRS)[:7] == ["id", "ms", "ma", "mean", "linear", "ms+id", "ms+gate"]  # run ids use these names
    assert headline_item_reprs() == ["id", "ms", "ma"]
    for name, cls in ITEM_REPRS.items():
        assert cls.name == name and item_repr_class(name) is cls
    assert not ITEM_REPRS["id"].needs_tokens and all(ITEM_REPRS[k].needs_tokens for k in ("ms", "ma", "ms+id"))
    with pytest.raises(ValueError, match="unknown item_repr 'nope'.*registered"):
        build_item_repr("nope", 10, 4)
    ids = _ids()
    for name, cls in ITEM_REPRS.items():  # built by name, the class that was registered
        rep = build_item_repr(name, 7, 6, token_ids=ids, n_centroids=5, item_popularity=np.arange(7))
        assert type(rep) is cls and rep(torch.tensor([1, 4])).shape == (2, 6)
    with pytest.raises(ValueError, match="token ids cover 7 items, the dataset has 8"):
        build_item_repr("ms", 8, 6, token_ids=ids, n_centroids=5)


def test_a_custom_representation_is_one_class_and_one_line(monkeypatch):
    """The README's example: registered in one line, then usable by name in a whole run."""
    monkeypatch.setitem(ITEM_REPRS, "max", None)  # undone after the test: the registry is left as it was
    # --- the README's example, as written there
    import motor
    from motor.item_repr import TokenRepresentation, register_item_repr

    @register_item_repr("max")
    class MaxOfTokens(TokenRepresentation):
        """Element-wise maximum of an item's token embeddings (no cross network)."""

        def represent(self, index=None):
            return self.token_embeddings(index).amax(1)

    res = motor.run(dataset="synthetic", backbone="bpr", item_repr="max", n_tokens=2, epochs=2, save=False,
                    progress=False)
    # ---
    assert res.config["item_repr"] == "max" and res.test["recall@20"] > 0
    rep = res.model.item_repr
    assert type(rep) is MaxOfTokens
    torch.testing.assert_close(rep(), rep.token_embeddings().max(1).values)
    assert res.params["item"] == rep.tables.numel()  # token tables only: no per-item parameter
    with pytest.raises(TypeError, match="ItemRepresentation subclasses"):
        register_item_repr("bad")(object)


# --- equal to the code before the registry (commit 12a8a28), for the same seed and weights -------------------------

_BEFORE = "12a8a28ebbb5012af6eaa809e0d80f2df6aa4a47"  # last commit with the `cross` flag; its registry runs


@pytest.fixture(scope="module")
def old_token_representation():
    """``TokenRepresentation`` of commit ``_BEFORE`` (with that commit's tcn.py), loaded from git history."""
    import subprocess
    import sys
    import types
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def source(path: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), "show", f"{_BEFORE}:{path}"], capture_output=True,
                                  text=True, check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            pytest.skip(f"git history with commit {_BEFORE[:7]} is not available (not a full clone)")

    sources = {name: source(path) for name, path in (("_old_tcn", "motor/tcn.py"),
                                                     ("_old_item_repr", "motor/item_repr.py"))}
    modules = {}
    for name, code in sources.items():
        mod = types.ModuleType(f"motor.{name}")
        mod.__package__ = "motor"
        sys.modules[mod.__name__] = mod  # for the relative import of the old tcn
        exec(compile(code.replace("from .tcn import", "from ._old_tcn import"), f"{_BEFORE[:7]}:{name}", "exec"),
             mod.__dict__)
        modules[name] = mod
    yield modules["_old_item_repr"].TokenRepresentation
    for name in modules:
        sys.modules.pop(f"motor.{name}", None)


_PATHS = {"all items": None, "few": torch.tensor([3, 0, 3, 17]),
          "many distinct (embedding_bag)": torch.arange(0, 200, 3), "many with repeats (unique)": torch.arange(90) % 45,
          "most items (all, then gather)": torch.arange(150)}


@pytest.mark.parametrize("kind,tcn", [("ms", {}), ("ma", {}), ("mean", {}), ("linear", {}),
                                      ("ms", {"hidden": (8,)}), ("ma", {"activation": "relu"})])
def test_registered_kinds_equal_the_cross_flag_code_bit_for_bit(old_token_representation, kind, tcn,
                                                                monkeypatch):
    """The same floats as the pre-registry code on the torch form of the TCN (the float32 CPU kernels of the fused
    network round differently; :func:`test_fused_float32_tcn_equals_the_float64_reference_and_the_naive_loop`)."""
    import motor.tcn

    monkeypatch.setattr(motor.tcn, "numba_kernels_apply", lambda *tensors: False)
    ids = _ids(n=200, widths=(3, 4), k=16, seed=4)
    torch.manual_seed(7)
    old = old_token_representation(ids, 16, 8, cross=kind, **tcn)
    torch.manual_seed(7)
    new = build_item_repr(kind, 200, 8, token_ids=ids, n_centroids=16, **tcn)
    # the same seed gives the same initial weights under the same names (checkpoints load in both)
    assert old.state_dict().keys() == new.state_dict().keys()
    for k, v in old.state_dict().items():
        assert torch.equal(v, new.state_dict()[k]), k
    for weights in ("initial", "trained-like"):
        if weights != "initial":
            _randomise(old)
            new.load_state_dict(old.state_dict())
        for path, index in _PATHS.items():
            g = torch.randn(200 if index is None else len(index), 8, generator=torch.Generator().manual_seed(1))
            outs, grads = [], []
            for rep in (old, new):
                rep.zero_grad()
                out = rep() if index is None else rep(index)
                (out * g).sum().backward()
                outs.append(out)
                grads.append({n: p.grad for n, p in rep.named_parameters()})
            assert torch.equal(outs[0], outs[1]), (weights, path)
            for n in grads[0]:
                assert torch.equal(grads[0][n], grads[1][n]), (weights, path, n)


# --- the hybrids "ms+id" and "ms+gate" ---------------------------------------------------------------------------

def test_hybrid_is_ms_plus_an_id_row_and_starts_as_ms():
    ids = _ids(n=30, k=5)
    torch.manual_seed(2)
    ms = build_item_repr("ms", 30, 6, token_ids=ids, n_centroids=5)
    torch.manual_seed(2)
    hybrid = build_item_repr("ms+id", 30, 6, token_ids=ids, n_centroids=5, id_scale=3.0, id_reg=0.1,
                             id_dropout=0.5)
    assert hybrid.n_parameters() == ms.n_parameters() + 30 * 6
    hybrid.eval()
    assert torch.equal(hybrid(), ms())  # zero ID rows: the same model as "ms" at the start
    with torch.no_grad():
        hybrid.id_rows.normal_()
    idx = torch.tensor([4, 1, 4])
    torch.testing.assert_close(hybrid(idx), ms(idx) + 3.0 * hybrid.id_rows[idx])
    torch.testing.assert_close(hybrid(), ms() + 3.0 * hybrid.id_rows)
    tokens, id_part = hybrid.parts()
    torch.testing.assert_close(tokens, ms())
    torch.testing.assert_close(id_part, 3.0 * hybrid.id_rows.detach())
    for bad, match in (({"id_dropout": 1.0}, "id_dropout"), ({"id_reg": -1}, "id_reg"),
                       ({"id_scale": 0.0}, "id_scale")):
        with pytest.raises(ValueError, match=match):
            build_item_repr("ms+id", 30, 6, token_ids=ids, n_centroids=5, **bad)


@pytest.mark.parametrize("kind", ["ms+id", "ms+gate"])
@pytest.mark.parametrize("index", [None, torch.tensor([4, 1, 4, 9, 2, 7, 0])])
def test_hybrid_backward_l2_and_row_dropout(kind, index):
    """Training: kept ID parts are scaled by id_scale / (1 - p), dropped ones give nothing to the output; every
    used row's gradient is the loss's plus ``id_reg * row`` (dropped ones too), unused rows get no gradient."""
    ids = _ids(n=30, k=5)
    pop = np.arange(30) % 4  # items 0, 4, 8, ... have no train interactions
    p, reg, scale = 0.5, 0.1, 3.0
    torch.manual_seed(0)
    rep = build_item_repr(kind, 30, 6, token_ids=ids, n_centroids=5, id_reg=reg, id_dropout=p, id_scale=scale,
                          item_popularity=pop).double()
    with torch.no_grad():
        rep.id_rows.normal_()
    rep.train()
    torch.manual_seed(5)
    out = rep() if index is None else rep(index)
    items = torch.arange(30) if index is None else index
    if kind == "ms+id":
        theta, weight = rep.id_rows.detach()[items], torch.ones(len(items), dtype=torch.float64)
        row = items
    else:
        row = rep.row_of_item[items]
        theta = torch.where(row[:, None] >= 0, rep.id_rows.detach()[row.clamp_min(0)], 0.0)
        weight = rep.gate(items).detach()
    id_part = out.detach() - ModalSpecific.represent(rep, index).detach()  # the same path without ID rows
    full = weight[:, None] * scale * theta / (1 - p)
    kept = (id_part - full).abs().amax(1) < 1e-12
    dropped = id_part.abs().amax(1) < 1e-12
    has_row = weight > 0
    assert (kept | dropped).all() and (kept & has_row).any() and (dropped & has_row & ~kept).any()
    g = torch.randn_like(out)
    (out * g).sum().backward()
    want = torch.zeros_like(rep.id_rows)
    use = row >= 0
    grad = g * (kept & ~dropped)[:, None] * weight[:, None] * scale / (1 - p) + reg * theta
    want.index_add_(0, row[use], grad[use])
    torch.testing.assert_close(rep.id_rows.grad, want, atol=1e-12, rtol=0)
    rep.eval()  # evaluation: no dropout, no penalty
    tokens, id_part = rep.parts()
    assert torch.equal(rep(), tokens + id_part)


def _gated(n=40, pop=None, **kw):
    ids = _ids(n=n, k=5)
    pop = np.random.default_rng(1).integers(0, 80, n) * (np.arange(n) % 3 > 0) if pop is None else pop
    return build_item_repr("ms+gate", n, 6, token_ids=ids, n_centroids=5, item_popularity=pop, **kw), ids, pop


def test_gate_is_monotone_zero_for_cold_items_and_tends_to_one():
    rep, _, _ = _gated(n=8, pop=np.array([0, 1, 2, 5, 10, 50, 1000, 10 ** 7]))
    with torch.no_grad():
        rep.gate_slope_raw.fill_(0.3)
        rep.gate_center.fill_(1.7)
    g = rep.gate()
    assert g[0].item() == 0.0  # exactly, not approximately
    assert (g[1:] > 0).all() and (torch.diff(g) > 0).all() and 0.99 < g[-1] <= 1.0
    assert torch.equal(rep.gate(torch.tensor([5, 0])), g[[5, 0]])
    a, b = torch.nn.functional.softplus(torch.tensor(0.3)), torch.tensor(1.7)
    naive = [(torch.sigmoid(a * (np.log1p(n) - b)) - torch.sigmoid(-a * b)) / (1 - torch.sigmoid(-a * b))
             for n in (1, 10, 1000)]
    torch.testing.assert_close(g[[1, 4, 6]], torch.stack(naive).float())
    fresh, _, _ = _gated(n=8, pop=np.array([0, 1, 2, 5, 10, 50, 1000, 10 ** 7]), gate_center=10.0, gate_slope=2.0)
    torch.testing.assert_close(fresh.gate()[4], torch.tensor(
        float((1 / (1 + np.exp(-2 * (np.log1p(10) - np.log1p(10)))) - 1 / (1 + np.exp(2 * np.log1p(10))))
              / (1 - 1 / (1 + np.exp(2 * np.log1p(10)))))))


def test_gated_cold_items_are_exactly_their_token_vectors():
    torch.manual_seed(0)
    rep, ids, pop = _gated()
    torch.manual_seed(0)
    ms = build_item_repr("ms", len(pop), 6, token_ids=ids, n_centroids=5)
    assert rep.n_warm == int((pop > 0).sum()) and rep.id_rows.shape == (rep.n_warm, 6)
    assert rep.n_parameters() == ms.n_parameters() + rep.n_warm * 6 + 2  # rows of warm items only, 2 gate weights
    with torch.no_grad():
        rep.id_rows.normal_()
    cold = np.flatnonzero(pop == 0)
    for mode in (rep.eval, rep.train):
        mode()
        out = rep()
        assert torch.equal(out[cold], ModalSpecific.represent(rep, None)[cold])
        sub = torch.as_tensor(np.r_[cold[:3], np.flatnonzero(pop > 0)[:3]])
        assert torch.equal(rep(sub)[:3], ModalSpecific.represent(rep, sub)[:3])
    rep.eval()
    warm = np.flatnonzero(pop > 0)
    assert (rep()[warm] - ModalSpecific.represent(rep, None)[warm]).abs().amax(1).min() > 0


def test_gated_gradients_reach_rows_gate_and_tokens():
    rep, _, pop = _gated(id_dropout=0.0)
    with torch.no_grad():
        rep.id_rows.normal_()
    rep.train()
    rep().pow(2).sum().backward()
    assert (rep.id_rows.grad.abs().sum(1) > 0).all()  # every warm item's row
    assert rep.gate_slope_raw.grad != 0 and rep.gate_center.grad != 0
    assert rep.tables.grad.abs().sum() > 0
    fixed, _, _ = _gated(learn_gate=False)
    assert not fixed.gate_slope_raw.requires_grad and fixed.n_parameters() == rep.n_parameters()


def test_gated_needs_popularity_and_checks_options():
    ids = _ids(n=10, k=5)
    with pytest.raises(ValueError, match="needs item_popularity"):
        build_item_repr("ms+gate", 10, 6, token_ids=ids, n_centroids=5)
    with pytest.raises(ValueError, match="item_popularity must be 10 finite counts"):
        build_item_repr("ms+gate", 10, 6, token_ids=ids, n_centroids=5, item_popularity=np.ones(9))
    with pytest.raises(ValueError, match="gate_center"):
        _gated(gate_center=0.0)
    all_cold, _, _ = _gated(n=10, pop=np.zeros(10, dtype=int))  # no train interactions at all: the token model
    assert all_cold.n_warm == 0 and torch.equal(all_cold(), ModalSpecific.represent(all_cold, None))


@pytest.mark.parametrize("kind", ["ms+id", "ms+gate"])
def test_hybrid_state_round_trip(kind):
    """Built by name twice from the same data, one's weights load into the other and give the same vectors."""
    ids = _ids(n=40, k=5)
    pop = np.arange(40) % 5
    rep = build_item_repr(kind, 40, 6, token_ids=ids, n_centroids=5, item_popularity=pop, id_scale=2.0)
    assert type(rep) is ITEM_REPRS[kind] and rep.name == kind
    _randomise(rep)
    other = build_item_repr(kind, 40, 6, token_ids=ids, n_centroids=5, item_popularity=pop, id_scale=2.0)
    other.load_state_dict(rep.state_dict())
    rep.eval(), other.eval()
    assert torch.equal(rep(), other())


def test_id_token_norms_by_bucket():
    from motor.diagnostics import id_token_norms

    rep, _, pop = _gated(n=60, pop=np.r_[np.zeros(20, int), np.full(20, 8), np.full(20, 100)])
    with torch.no_grad():
        rep.id_rows.normal_()
    table = id_token_norms(rep, pop)
    assert list(table.index) == ["0-5", "6-10", "11-20", "21-50", ">50"]
    assert table.n_items.tolist() == [20, 20, 0, 0, 20]
    tokens, id_part = (t.norm(dim=1).numpy() for t in rep.parts())
    assert table.loc["0-5", "id_norm"] == 0 and table.loc["0-5", "id_token_ratio"] == 0  # cold: token-only
    np.testing.assert_allclose(table.loc[">50", "id_token_ratio"], np.median(id_part[40:] / tokens[40:]), rtol=1e-6)
    np.testing.assert_allclose(table.loc["6-10", "token_norm"], np.median(tokens[20:40]), rtol=1e-6)
    with pytest.raises(ValueError, match="no ID part"):
        id_token_norms(build_item_repr("ms", 60, 6, token_ids=_ids(n=60, k=5), n_centroids=5), pop)


@pytest.mark.parametrize("kind, tcn", [("ms+id", {"id_reg": 1e-3, "id_dropout": 0.2}),
                                       ("ms+gate", {"gate_center": 5.0, "id_scale": 10.0})])
def test_hybrid_trains_in_a_run(kind, tcn):
    from motor.experiment import run

    res = run(dataset="synthetic", backbone="lightgcn", item_repr=kind, n_tokens=2, epochs=3, save=False,
              progress=False, tcn=tcn)
    rep = res.model.item_repr
    assert res.history.loss.iloc[-1] < res.history.loss.iloc[0]
    assert rep.id_rows.abs().sum() > 0  # the ID rows moved away from zero
    assert res.params["item"] == rep.n_parameters() and res.run_id.split("-")[3] == kind


def test_gated_run_scores_new_items_as_token_only_items():
    import motor
    from motor.experiment import get_dataset

    res = motor.run(dataset="synthetic", backbone="bpr", item_repr="ms+gate", n_tokens=2, epochs=2, save=False,
                    progress=False)
    ds = get_dataset("synthetic")
    items = [3, 7]
    feats = {m: ds.features[m][items] for m in ds.modalities}
    vecs = motor.new_item_vectors(res, feats)
    rep = res.model.item_repr
    tokens, _ = rep.parts(torch.as_tensor(items))  # a new copy of an item: its token vector, no ID part
    np.testing.assert_allclose(vecs, tokens.numpy(), atol=1e-5)
    assert motor.score_new_items(res, feats, users=[0, 1]).shape == (2, 2)


def test_hybrid_options_are_searchable_by_tune():
    from motor.experiment import ConfigError, RunConfig
    from motor.tune import plan

    trials = plan("synthetic", "bpr", ["ms+gate", "ms+id"], {"tcn.id_scale": [3.0, 10.0], "n_tokens": [2]}, epochs=1)
    assert [(t.item_repr, t.config.tcn) for t in trials] == [
        ("ms+gate", {"id_scale": 3.0}), ("ms+gate", {"id_scale": 10.0}),
        ("ms+id", {"id_scale": 3.0}), ("ms+id", {"id_scale": 10.0})]
    for t in trials:
        t.config.validate()
    RunConfig(item_repr="ms+gate", tcn={"gate_center": 5.0, "gate_slope": 1.0, "learn_gate": False}).validate()
    with pytest.raises(ConfigError, match="unknown key.*item_popularity"):  # data, not a hyper-parameter
        RunConfig(item_repr="ms+gate", tcn={"item_popularity": [1, 2]}).validate()
    with pytest.raises(ConfigError, match="unknown key.*gate_center"):
        RunConfig(item_repr="ms+id", tcn={"gate_center": 5.0}).validate()
