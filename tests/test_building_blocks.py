"""The small shared helpers the backbones are built from: each one equals its plain definition."""
import pytest
import torch

from motor.backbones.features import _FrozenLinear, project, project_rows
from motor.backbones.graph import layer_mean, layer_mean_rows, propagate
from motor.backbones.losses import dropout, take


def test_take_equals_indexing_in_value_and_gradient():
    x = torch.randn(10, 3, requires_grad=True)
    a, b = torch.tensor([1, 1, 4]), torch.tensor([9, 0])
    ra, rb = take(x, a, b)
    torch.testing.assert_close(ra, x[a])
    torch.testing.assert_close(rb, x[b])
    (ra.sum() + 2 * rb.sum()).backward()
    want = torch.zeros(10, 3)
    want[1] += 2
    want[4] += 1
    want[9] += 2
    want[0] += 2
    torch.testing.assert_close(x.grad, want)


def test_layer_mean_equals_stacked_mean():
    a = torch.randn(6, 6).relu().to_sparse()
    x = torch.randn(6, 4)
    torch.testing.assert_close(layer_mean(a, x, 3), torch.stack(propagate(a, x, 3)).mean(0))
    learned = a.detach().clone().requires_grad_()  # a learned adjacency takes autograd's path and gets a gradient
    out = layer_mean(learned, x, 3)
    out.sum().backward()
    torch.testing.assert_close(out, layer_mean(a, x, 3))
    assert learned.grad is not None


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_fused_layer_mean_and_its_rows_match_dense_in_value_and_gradient(n_layers):
    """The hand-written backward of the fused layer mean against autograd through dense products (float64, a
    non-symmetric matrix so a missing transpose shows, an empty row, and repeated rows)."""
    g = torch.Generator().manual_seed(n_layers)
    dense = torch.randn(7, 7, generator=g, dtype=torch.float64).relu()
    dense[3] = 0.0
    a = dense.to_sparse()
    rows = torch.tensor([0, 5, 5, 3, 6, 1])
    up = torch.randn(7, 3, generator=g, dtype=torch.float64)
    up_rows, up_ego = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g,
                                                                                       dtype=torch.float64)

    def reference(x):
        return _dense_layer_mean(dense, x, n_layers)

    x0 = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x, xr = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    (reference(x) * up).sum().backward()
    fx = x0.clone().requires_grad_()
    out = layer_mean(a, fx, n_layers)
    (out * up).sum().backward()
    torch.testing.assert_close(out, reference(x0))
    torch.testing.assert_close(fx.grad, x.grad)

    (reference(xr)[rows] * up_rows + xr[rows] * up_ego).sum().backward()
    fr = x0.clone().requires_grad_()
    got, ego_rows = layer_mean_rows(a, fr, n_layers, rows)
    (got * up_rows + ego_rows * up_ego).sum().backward()
    torch.testing.assert_close(got, reference(x0)[rows])
    torch.testing.assert_close(ego_rows, x0[rows])
    torch.testing.assert_close(fr.grad, xr.grad)
    fr.grad = None
    layer_mean_rows(a, fr, n_layers, rows)[0].sum().backward()  # the ego rows unused: their gradient is None
    torch.testing.assert_close(fr.grad, _rows_grad(dense, x0, rows, n_layers))


def _dense_layer_mean(dense, x, n_layers):
    layers = [x]
    for _ in range(n_layers):
        layers.append(dense @ layers[-1])
    return torch.stack(layers).mean(0)


def _rows_grad(dense, x0, rows, n_layers):
    x = x0.clone().requires_grad_()
    _dense_layer_mean(dense, x, n_layers)[rows].sum().backward()
    return x.grad


def test_dropout_rate_scale_seed_and_eval():
    x = torch.ones(400, 250)
    torch.manual_seed(0)
    y = dropout(x, 0.3)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01  # 100k draws: 0.01 is > 20 standard deviations
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.3), y)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x
    assert (dropout(x, 1.0) == 0).all()


def test_project_rows_both_paths_equal_direct_projection():
    torch.manual_seed(0)
    lin, feats = torch.nn.Linear(5, 3), torch.randn(40, 5)
    # few distinct rows (gather path) and every row (one product over all rows), values and gradients
    for index in (torch.tensor([3, 3, 7]), torch.arange(40).repeat(2).flip(0)):
        up = torch.randn(len(index), 3)
        lin.zero_grad()
        (project_rows(lin, feats, index) * up).sum().backward()
        fast = [p.grad.clone() for p in lin.parameters()]
        lin.zero_grad()
        want = lin(feats[index])
        (want * up).sum().backward()
        torch.testing.assert_close(project_rows(lin, feats, index), want)
        for got, ref in zip(fast, (p.grad for p in lin.parameters())):
            torch.testing.assert_close(got, ref)


def test_project_equals_linear_in_value_and_gradient():
    torch.manual_seed(0)
    feats = torch.randn(30, 7, dtype=torch.float64)
    for bias in (True, False):
        lin = torch.nn.Linear(7, 4, bias=bias).double()
        up = torch.randn(30, 4, dtype=torch.float64)
        (project(lin, feats) * up).sum().backward()
        fast = [q.grad.clone() for q in lin.parameters()]
        lin.zero_grad()
        (lin(feats) * up).sum().backward()
        torch.testing.assert_close(project(lin, feats), lin(feats))
        for got, ref in zip(fast, (q.grad for q in lin.parameters())):
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref)
    w, b = torch.randn(4, 7, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64,
                                                                                 requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: _FrozenLinear.apply(feats, w, b), (w, b))
    # features that need a gradient take autograd's path and get one
    trainable = feats.clone().requires_grad_()
    project(lin, trainable).sum().backward()
    torch.testing.assert_close(trainable.grad, lin.weight.detach().sum(0).expand(30, 7))


def test_info_nce_equals_cross_entropy_in_value_and_gradient():
    from motor.backbones.losses import info_nce

    torch.manual_seed(0)
    a = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    got = info_nce(a, b, 0.2)
    ga, gb = torch.autograd.grad(got * 3, (a, b))
    want = torch.nn.functional.cross_entropy((a / 0.2) @ b.T, torch.arange(50))
    wa, wb = torch.autograd.grad(want * 3, (a, b))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)
    big = info_nce(a.detach() * 1e3, b.detach(), 0.2)  # large logits: no overflow
    assert torch.isfinite(big)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("n_distinct", [(12, 20), (60, 60)])  # many repeats (grouped form) / few (batch form)
def test_info_nce_rows_equals_batch_cross_entropy_with_repeated_rows(normalize, n_distinct):
    """The distinct-row InfoNCE equals the (n, n) batch cross-entropy in value and gradient, repeated positives
    included as in-batch negatives, for rows and columns indexing different tables."""
    from motor.backbones.losses import info_nce_rows

    torch.manual_seed(0)
    a = torch.randn(70, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(90, 8, dtype=torch.float64, requires_grad=True)
    rows = torch.randint(0, n_distinct[0], (64,)) * 5 % 70
    cols = torch.randint(0, n_distinct[1], (64,))
    cols[:4] = cols[0]  # the first positive repeated: its copies are negatives of each other
    got = info_nce_rows(a, b, rows, cols, 0.3, normalize=normalize)
    ga, gb = torch.autograd.grad(got * 3, (a, b))
    f = torch.nn.functional.normalize if normalize else (lambda x, dim: x)
    want = torch.nn.functional.cross_entropy((f(a[rows], dim=1) / 0.3) @ f(b[cols], dim=1).T, torch.arange(64))
    wa, wb = torch.autograd.grad(want * 3, (a, b))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)


def test_grouped_info_nce_takes_the_grouped_form_when_rows_repeat(monkeypatch):
    """With many repeats only the (U, V) logits are formed (the batch form is never called)."""
    from motor.backbones import losses

    def fail(*args):
        raise AssertionError("batch form used")

    a, b = torch.randn(5, 4), torch.randn(6, 4)
    index = torch.randint(0, 5, (100,))
    monkeypatch.setattr(losses, "info_nce", fail)
    assert torch.isfinite(losses.grouped_info_nce(a, b, index, index, 0.2))


def test_csr_mm_equals_dense_product_with_empty_rows_and_both_dtypes():
    from motor.sparse import csr_mm

    dense = torch.zeros(6, 5)
    dense[0, 1], dense[0, 4], dense[3, 0], dense[5, 4], dense[5, 2] = 0.5, -2.0, 3.0, 1.5, 0.25  # rows 1, 2, 4 empty
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, 5, dtype=dtype).T  # not contiguous
        got = csr_mm(dense.to_sparse_csr(), x)
        torch.testing.assert_close(got, dense.to(dtype) @ x)
        assert got.dtype == dtype and got[[1, 2, 4]].abs().sum() == 0
    a = dense.to_sparse_csr()
    x = torch.randn(5, 3)
    for scale in (0.5, 2.0, 0.5):  # scaled values are cached per (matrix, dtype, scale): no stale scale
        torch.testing.assert_close(csr_mm(a, x, scale), scale * (dense @ x))
    xg = x.clone().requires_grad_()
    csr_mm(a, xg).sum().backward()  # differentiable in x where grad mode is on
    torch.testing.assert_close(xg.grad, dense.sum(0)[:, None].expand(5, 3))


def test_bm3_cos_loss_equals_cosine_similarity_in_value_and_gradient():
    from motor.backbones.bm3 import cos_loss

    torch.manual_seed(0)
    a0, b = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    a, ref = a0.clone().requires_grad_(), a0.clone().requires_grad_()
    got = cos_loss(a, b)
    want = 1.0 - torch.nn.functional.cosine_similarity(ref, b.detach(), dim=-1).mean()
    (3.0 * got).backward()
    (3.0 * want).backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(a.grad, ref.grad)
    assert b.grad is None  # stop-gradient on the target


def test_layergcn_refine_equals_cosine_similarity_in_value_and_gradient():
    from motor.backbones.layergcn import refine

    torch.manual_seed(0)
    h, e = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64)
    h[2], e[4] = 0.0, 0.0  # clamped norms (an isolated node after edge dropout has h = 0)
    w = torch.randn(9, 5, dtype=torch.float64)
    ours = [h.clone().requires_grad_(), e.clone().requires_grad_()]
    ref = [h.clone().requires_grad_(), e.clone().requires_grad_()]
    got = refine(*ours)
    want = torch.nn.functional.cosine_similarity(*ref, dim=-1).unsqueeze(1) * ref[0]
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(got, want)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.autograd.gradcheck(refine, (torch.randn(6, 4, dtype=torch.float64, requires_grad=True),
                                             torch.randn(6, 4, dtype=torch.float64, requires_grad=True)))


def test_bpr_triplet_loss_equals_plain_bpr_in_value_and_gradient():
    from motor.backbones.losses import bpr_loss, bpr_triplet_loss

    torch.manual_seed(0)
    rows = [torch.randn(11, 6, dtype=torch.float64) * 3 for _ in range(3)]  # large scores: the stable branch
    ours = [r.clone().requires_grad_() for r in rows]
    ref = [r.clone().requires_grad_() for r in rows]
    got = bpr_triplet_loss(*ours)
    want = bpr_loss((ref[0] * ref[1]).sum(1), (ref[0] * ref[2]).sum(1))
    (2.0 * got).backward()
    (2.0 * want).backward()
    torch.testing.assert_close(got, want)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.autograd.gradcheck(bpr_triplet_loss, tuple(r[:4].clone().requires_grad_() for r in rows))


def test_normalize_rows_equals_f_normalize_in_value_and_gradient():
    from motor.backbones.losses import normalize_rows

    torch.manual_seed(0)
    x = torch.randn(8, 5, dtype=torch.float64)
    x[3] = 0.0  # a zero row and a tiny one: clamped norms
    x[5] = torch.tensor([3e-14, 0.0, -4e-14, 0.0, 0.0], dtype=torch.float64)
    w = torch.randn(8, 5, dtype=torch.float64)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = normalize_rows(ours), torch.nn.functional.normalize(ref, dim=1)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ours.grad, ref.grad)
    assert torch.autograd.gradcheck(normalize_rows, (torch.randn(6, 4, dtype=torch.float64, requires_grad=True),))
