"""The small shared helpers the backbones are built from: each one equals its plain definition."""
import torch

from motor.backbones.base import dropout, take
from motor.backbones.features import project_rows
from motor.backbones.graph import layer_mean, propagate
from motor.perf import keep_freed_memory


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
    for index in (torch.tensor([3, 3, 7]), torch.randint(0, 40, (30,))):  # few rows (unique path), many (all rows)
        torch.testing.assert_close(project_rows(lin, feats, index), lin(feats[index]))


def test_keep_freed_memory_is_idempotent():
    first = keep_freed_memory()
    assert keep_freed_memory() == first


def test_info_nce_equals_cross_entropy_in_value_and_gradient():
    from motor.backbones.base import info_nce

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


def test_csr_mm_equals_dense_product_with_empty_rows_and_both_dtypes():
    from motor.sparse import csr_mm

    dense = torch.zeros(6, 5)
    dense[0, 1], dense[0, 4], dense[3, 0], dense[5, 4], dense[5, 2] = 0.5, -2.0, 3.0, 1.5, 0.25  # rows 1, 2, 4 empty
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, 5, dtype=dtype).T  # not contiguous
        got = csr_mm(dense.to_sparse_csr(), x)
        torch.testing.assert_close(got, dense.to(dtype) @ x)
        assert got.dtype == dtype and got[[1, 2, 4]].abs().sum() == 0
