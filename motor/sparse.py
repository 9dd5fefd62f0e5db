"""Sparse-times-dense products with a fixed sparse matrix (graph adjacencies, token incidence matrices).

:func:`spmm` keeps CSR copies of the matrix and of its transpose (built once per tensor, dropped when it is
freed), so the forward and the backward pass are each one CSR product: torch's COO backward transposes and
re-sorts the matrix on every call (about 4x slower on CPU) and accumulates non-deterministically.
"""
from __future__ import annotations

import weakref

import torch


_CSR_CACHE: dict[int, tuple] = {}


def csr_pair(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR copies of ``a`` and of its transpose, built once per adjacency tensor (dropped when it is freed)."""
    key = id(a)
    hit = _CSR_CACHE.get(key)
    if hit is not None and hit[0]() is a:
        return hit[1], hit[2]
    coo = a.coalesce()
    pair = (coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())
    _CSR_CACHE[key] = (weakref.ref(a, lambda _, k=key: _CSR_CACHE.pop(k, None)), *pair)
    return pair


class _CSRMatmul(torch.autograd.Function):
    """y = A x with A fixed: forward with CSR(A), backward with the cached CSR(A^T). torch's COO backward
    transposes and re-sorts A on every call (about 4x slower on CPU) and accumulates non-deterministically."""

    @staticmethod
    def forward(ctx, a_csr, a_t_csr, x):
        ctx.a_t_csr = a_t_csr
        return torch.sparse.mm(a_csr, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.a_t_csr, grad.contiguous())


def spmm(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (fixed, COO) matrix times dense ``x``; differentiable in ``x`` (and in ``a`` if its values need it)."""
    if a.requires_grad:
        return torch.sparse.mm(a, x)
    a_csr, a_t_csr = csr_pair(a)
    return _CSRMatmul.apply(a_csr, a_t_csr, x)
