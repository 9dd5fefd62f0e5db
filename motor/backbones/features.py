"""How backbones read the dataset's modality features, and project them (frozen data by default; FREEDOM, BM3 and MGCN
can train them, ``train_features``)."""
import numpy as np
import torch
import torch.nn.functional as F


def modality_features(dataset) -> dict[str, torch.Tensor]:
    """{modality: float32 tensor (n_items, d_m)} for every modality of ``dataset`` (a run's dataset holds only the
    run's ``modalities``), in sorted modality order."""
    if not dataset.modalities:
        raise ValueError(f"dataset {dataset.name!r} has no modality features; this backbone needs them")
    return {m: torch.as_tensor(np.ascontiguousarray(dataset.features[m]), dtype=torch.float32)
            for m in dataset.modalities}


def stacked_features(dataset) -> torch.Tensor:
    """Concatenation of all modality features, (n_items, sum d_m)."""
    return torch.cat(list(modality_features(dataset).values()), dim=1)


class _FrozenLinear(torch.autograd.Function):
    """``x W^T + b`` for a constant ``x`` (frozen modality features): the weight gradient is computed as
    ``(x^T g)^T``. Autograd's ``g^T x`` is the same product in the other orientation, which the CPU BLAS runs
    slower for d = 64 outputs."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g_weight = torch.mm(x.t(), g).t() if ctx.needs_input_grad[1] else None
        g_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, g_weight, g_bias


def project(linear: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """``linear(features)`` for frozen (constant) modality features; same values and gradients, faster weight
    gradient (see :class:`_FrozenLinear`)."""
    if features.requires_grad or features.dim() != 2:
        return linear(features)
    return _FrozenLinear.apply(features, linear.weight, linear.bias)


def project_rows(linear: torch.nn.Module, features: torch.Tensor, index: torch.Tensor,
                 all_rows_above: float = 0.8) -> torch.Tensor:
    """``linear(features[index])`` computed once per distinct row: only the distinct rows of ``index``, or every
    row (one product, no gather) when the distinct rows are more than ``all_rows_above`` of the catalogue.

    The product is compute-bound and the gather memory-bound: a batch's item indices repeat popular items, so
    projecting only the distinct ones is cheaper than projecting one row per index."""
    rows, (local,) = distinct_rows(features.shape[0], index, all_rows_above=all_rows_above)
    return project_distinct(linear, features, rows).index_select(0, local)


def distinct_rows(n_rows: int, *indices: torch.Tensor, all_rows_above: float = 0.8):
    """The rows a batch reads, once each: ``(rows, remapped)`` with ``rows`` the distinct values of ``indices``
    (None: every row, when they are more than ``all_rows_above`` of the ``n_rows``) and each index tensor
    re-mapped to positions in ``rows``. For losses that read rows of a projected matrix themselves
    (:func:`motor.backbones.losses.bpr_table_loss`); one ``unique`` serves every modality."""
    distinct, inverse = torch.unique(torch.cat(indices), return_inverse=True)
    if len(distinct) > all_rows_above * n_rows:
        return None, indices
    return distinct, inverse.split([len(i) for i in indices])


def project_distinct(linear: torch.nn.Module, features: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``linear(features[rows])`` (every row when ``rows`` is None; see :func:`distinct_rows`)."""
    return project(linear, features if rows is None else features.index_select(0, rows))
