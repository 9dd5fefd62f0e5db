"""Sparse-times-dense products with a fixed sparse matrix (graph adjacencies, token incidence matrices).

:func:`spmm` keeps CSR copies of the matrix and of its transpose (built once per tensor, dropped when it is
freed), so the forward and the backward pass are each one CSR product: torch's COO backward transposes and
re-sorts the matrix on every call (about 4x slower on CPU) and accumulates non-deterministically.

:func:`csr_mm` is that CSR product. On CPU it runs as a weighted ``embedding_bag`` (row r of A is a bag of the
rows of x named by its column indices, weighted by its values), which uses torch's FBGEMM gather-sum kernel,
several times faster than ``torch.sparse.mm`` on CPU for graph-sized products. Other devices use
``torch.sparse.mm`` (cuSPARSE).
"""
from __future__ import annotations

import contextlib
import warnings
import weakref

import torch
import torch.nn.functional as F

_CACHE: dict[tuple, tuple] = {}


def _kept_while_alive(owner: torch.Tensor, key: tuple, build):
    """``build()``, computed once per (``owner`` tensor, ``key``) and dropped when ``owner`` is freed."""
    key = (id(owner), *key)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is owner:
        return hit[1]
    value = build()
    # the callback holds the dict itself: at interpreter exit the module global may already be None
    _CACHE[key] = (weakref.ref(owner, lambda _, k=key, cache=_CACHE: cache.pop(k, None)), value)
    return value


@contextlib.contextmanager
def quiet_csr():
    """Silence torch's "Sparse CSR tensor support is in beta" warning inside the block only (the CSR tensors here
    are internal: every product they take part in is tested against a dense reference)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield


def csr_pair(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR copies of ``a`` and of its transpose, built once per adjacency tensor (dropped when it is freed)."""
    def build():
        coo = a.coalesce()
        with quiet_csr():
            return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()

    return _kept_while_alive(a, ("csr",), build)


def csr_mm(a_csr: torch.Tensor, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * (a_csr @ x)`` for a sparse CSR matrix and a dense 2-D ``x`` (as ``torch.sparse.mm``); on CPU the
    scale is folded into the matrix values, so it costs no pass over the output."""
    if a_csr.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        out = torch.sparse.mm(a_csr, x)
        return out if scale == 1.0 else out.mul_(scale)
    crow, col = a_csr.crow_indices(), a_csr.col_indices()
    if crow.dtype != col.dtype:
        crow = crow.to(col.dtype)
    if not torch.is_grad_enabled():  # else embedding_bag takes its slower autograd path for a table needing grad
        x = x.detach()
    return F.embedding_bag(col, x.contiguous(), crow, mode="sum",
                           per_sample_weights=_weights(a_csr, x.dtype, scale), include_last_offset=True)


def _weights(a_csr: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """``scale *`` the values of ``a_csr`` in ``dtype``, kept while the matrix lives (the products in a training
    step reuse the same few matrices and scales)."""
    values = a_csr.values()
    if values.dtype == dtype and scale == 1.0:
        return values
    return _kept_while_alive(a_csr, ("weights", dtype, scale), lambda: values.to(dtype) * scale)


class _CSRMatmul(torch.autograd.Function):
    """y = A x with A fixed: forward with CSR(A), backward with the cached CSR(A^T). torch's COO backward
    transposes and re-sorts A on every call (about 4x slower on CPU) and accumulates non-deterministically."""

    @staticmethod
    def forward(ctx, a_csr, a_t_csr, x):
        ctx.a_t_csr = a_t_csr
        return csr_mm(a_csr, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, csr_mm(ctx.a_t_csr, grad)


def spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (fixed, COO) matrix times dense ``x``; differentiable in ``x`` (and in ``a`` if its values need it)."""
    if a.requires_grad:
        return torch.sparse.mm(a, x)
    a_csr, a_t_csr = csr_pair(a)
    return _CSRMatmul.apply(a_csr, a_t_csr, x)
