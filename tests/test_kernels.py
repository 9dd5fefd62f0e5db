"""The numba kernels (motor.kernels) against the torch expressions they replace: values and gradients."""
import numpy as np
import pytest
import torch

from motor.backbones.losses import bpr_loss, bpr_table_loss, bpr_triplet_loss, emb_loss, l2_reg


def _plain_bpr(u, p, n):
    return bpr_loss((u * p).sum(1), (u * n).sum(1))


def test_bpr_rows_kernel_equals_plain_bpr_in_float32():
    torch.manual_seed(0)
    rows = [torch.randn(300, 64) * s for s in (1.0, 2.0, 2.0)]  # scores up to ~|40|: both softplus branches
    ours = [r.clone().requires_grad_() for r in rows]
    ref = [r.double().requires_grad_() for r in rows]
    got = bpr_triplet_loss(*ours)
    want = _plain_bpr(*ref)
    (3.0 * got).backward()
    (3.0 * want).backward()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: numba kernel; float64: torch
@pytest.mark.parametrize("penalty,reg", [(l2_reg, 1e-2), (emb_loss, 0.3), (None, 0.0)])
def test_bpr_table_loss_equals_gathered_expression(dtype, penalty, reg):
    """Loss and table gradients, with repeated users and items (gradients accumulate on repeated rows)."""
    torch.manual_seed(1)
    users = torch.randint(0, 7, (50,))
    pos, neg = torch.randint(0, 9, (50,)), torch.randint(0, 9, (50,))
    tabs = [torch.randn(7, 10, dtype=dtype), torch.randn(9, 10, dtype=dtype)]
    ours = [t.clone().requires_grad_() for t in tabs]
    ref = [t.double().requires_grad_() for t in tabs]
    got = bpr_table_loss(ours[0], ours[1], users, pos, neg, reg, penalty)
    u, p, n = ref[0][users], ref[1][pos], ref[1][neg]
    want = _plain_bpr(u, p, n) + (reg * penalty(u, p, n) if penalty else 0.0)
    (0.5 * got).backward()
    (0.5 * want).backward()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(got.double(), want, **tol)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad.double(), b.grad, **tol)


def test_bpr_table_loss_gradcheck_on_the_torch_path():
    torch.manual_seed(2)
    users, pos, neg = torch.randint(0, 4, (6,)), torch.randint(0, 5, (6,)), torch.randint(0, 5, (6,))
    tabs = (torch.randn(4, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(5, 3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda a, b: bpr_table_loss(a, b, users, pos, neg, 0.1, l2_reg), tabs)


def test_tanh32_is_within_a_few_float32_ulps_of_tanh():
    """The fused TCN's branch-free tanh: within 4e-7 of tanh everywhere (saturating to +-1), odd, NaN stays NaN."""
    from motor import kernels

    x = np.concatenate([np.linspace(-12, 12, 400_001), [0.0, 1e-30, 3.9e-4, 4e-4, 4.1e-4, 7.9, 8.0, 50.0, 1e30]])
    x = np.concatenate([x, -x]).astype(np.float32)
    out = np.empty_like(x)
    kernels.tanh_array(x, out)
    assert np.abs(out - np.tanh(x.astype(np.float64))).max() < 4e-7
    assert np.array_equal(out[: len(x) // 2], -out[len(x) // 2:])
    assert np.abs(out).max() <= 1.0
    special = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    kernels.tanh_array(special, out[:3])
    assert np.isnan(out[0]) and out[1] == 1.0 and out[2] == -1.0


def test_topk_masked_equals_torch_topk_with_the_mask_applied():
    """Distinct scores: the same lists as torch.topk after setting masked entries to -inf."""
    from scipy import sparse as sp

    from motor import kernels

    rng = np.random.default_rng(4)
    scores = rng.standard_normal((40, 300)).astype(np.float32)
    mask = sp.random(40, 300, density=0.2, format="csr", random_state=5)
    mask.sort_indices()
    out = np.empty((40, 20), dtype=np.int64)
    kernels.topk_masked(scores, 20, mask.indptr.astype(np.int64), mask.indices.astype(np.int64), out)
    t = torch.from_numpy(scores.copy())
    coo = mask.tocoo()
    t[coo.row, coo.col] = -float("inf")
    assert np.array_equal(out, t.topk(20, dim=1).indices.numpy())


def test_topk_masked_orders_ties_by_item_and_fills_short_rows_with_masked_items():
    from motor import kernels

    scores = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.5],  # ties at 3.0: items 1, 2, 4 in that order
                       [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]], dtype=np.float32)
    indptr = np.array([0, 1, 5], dtype=np.int64)
    indices = np.array([2, 0, 1, 2, 3], dtype=np.int64)  # row 0 masks item 2; row 1 masks items 0-3
    out = np.empty((2, 4), dtype=np.int64)
    kernels.topk_masked(scores, 4, indptr, indices, out)
    assert out[0].tolist() == [1, 4, 3, 0]
    assert out[1].tolist() == [4, 5, 0, 1]  # two unmasked items, then masked ones in item order


def test_compiled_kernels_are_cached_in_motors_cache_folder_not_the_package(tmp_path):
    """A copy of the package in a read-only folder: the kernels compile and cache under MOTOR_CACHE/numba and
    nothing is written next to the source; another package's numba cache setting is left as it was."""
    import os
    import shutil
    import stat
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "motor"
    pkg = tmp_path / "site" / "motor"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [pkg, *pkg.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    code = ("import numpy as np, numba; import motor.kernels as k\n"
            "out = np.zeros((1, 2), dtype=np.int64)\n"
            "k.topk_masked(np.array([[0.1, 0.3, 0.2]], dtype=np.float32), 2, np.array([0, 0]), "
            "np.zeros(0, dtype=np.int64), out)\n"
            "print(out.tolist(), repr(numba.config.CACHE_DIR))\n")
    env = {**os.environ, "MOTOR_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(pkg.parent),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("NUMBA_CACHE_DIR", None)
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[[1, 2]] ''"  # ranked; numba's own setting restored
        assert list((tmp_path / "cache" / "numba").rglob("kernels.topk_masked*.nbi"))
        assert not [p for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc")]
    finally:
        for p in [pkg, *pkg.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
