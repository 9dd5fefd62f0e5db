"""The Token Cross Network (MOTOR eqs. 5-10) and its fast all-items form.

* :class:`CrossNetwork` — one network over P token embeddings: one-order ``sum_x w_x e_x``, second-order
  ``sum_{x<y} w_x w_y e_x * e_y`` and a high-order MLP over their concatenation (eq. 7).
* :func:`cross_all_items` — the same networks evaluated for every item at once. Every term is a sum over
  positions of something that depends on one token only (``w_x e_x``, ``(w_x e_x)^2`` and the first MLP layer's
  d-column block ``W_x e_x``), so they are computed once per *token* (P x K rows, :func:`token_rows`) and summed
  per item by one ``embedding_bag``; the hand-written backward scatters with one product by the transposed
  item-token incidence matrix and avoids the slice / concatenate bookkeeping that dominated autograd's version.
  For the default one-layer tanh networks on contiguous float32 CPU tensors, everything per item (gather, second
  order, tanh layer, sum over bags, and the backward's scatter) is one serial numba pass each way
  (:mod:`motor.kernels`), between the first layer's block products. Tested against the direct form in float64 and
  a naive loop, and for equal floats under 1 and 2 threads.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .perf import numba_kernels_apply
from .sparse import csr_mm, csr_pair

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def token_rows(tables: torch.Tensor, w: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """Per-token parts of eqs. 5-7 on the (P, K, d) tables: ``[w_x e | (w_x e)^2 | W_x e]`` -> (P, K, 2d + h).

    ``w`` (P,) position weights; ``w1`` (h, P, d) the first MLP layer's weight split into its d-column blocks (the
    layer applied to a concatenation is the sum of its blocks applied to the parts).
    """
    return torch.cat(token_parts(tables, w, w1), dim=-1)


def token_parts(tables: torch.Tensor, w: torch.Tensor, w1: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The three blocks of :func:`token_rows`, each contiguous: ``w_x e`` and ``(w_x e)^2`` (P, K, d), ``W_x e``
    (P, K, h)."""
    scaled = w[:, None, None] * tables
    return scaled, scaled * scaled, torch.bmm(tables, w1.permute(1, 2, 0))


class CrossNetwork(nn.Module):
    """Token Cross Network over P token embeddings (eqs. 5-8): one-order + second-order + high-order MLP.

    ``w`` (P,) learnable weights shared by the one- and second-order terms (init 1). The high-order MLP follows
    eq. 7: ``h_0 = concat(e_1..e_P)``, ``h_{l+1} = act(W_l h_l + b_l)``, output ``h_L`` of size d; ``hidden`` lists the
    widths of the layers before the last (default: none, i.e. one layer P*d -> d), ``activation`` default tanh
    (eq. 7 applies it on every layer, the last one included; tanh keeps signed outputs).
    """

    def __init__(self, n_positions: int, dim: int, hidden: Sequence[int] = (), activation: str = "tanh"):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n_positions))
        sizes = [n_positions * dim, *hidden, dim]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            lin = nn.Linear(a, b)
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
            layers += [lin, _ACTIVATIONS[activation]()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb`` (n, P, d) token embeddings -> (n, d) (the direct form; :meth:`token_tables` is the fast one)."""
        one = torch.matmul(self.w, emb)
        two = 0.5 * (one * one - torch.matmul(self.w * self.w, emb * emb))
        high = self.mlp(emb.reshape(emb.shape[0], -1))
        return one + two + high

    def token_tables(self, tables: torch.Tensor) -> torch.Tensor:
        """Per-token parts of eqs. 5-7, computed on the (P, K, d) tables instead of on every item: (P, K, 2d + h).

        Every term is a sum over positions of something that depends on one token only: ``w_x e_x`` (one-order),
        ``(w_x e_x)^2`` (for the second-order identity) and ``W_x e_x`` (the first MLP layer applied to the
        concatenation is the sum of its d-column blocks). An item's sums are then one gather-sum of these rows
        (:meth:`finish` completes the network), so the cost per item is O(P d) instead of O(P d h).
        """
        first = self.mlp[0]
        return token_rows(tables, self.w, first.weight.view(first.out_features, *tables.shape[::2]))

    def finish(self, sums: torch.Tensor) -> torch.Tensor:
        """(n, 2d + h) position-sums of :meth:`token_tables` rows -> (n, d) item vectors."""
        d = (sums.shape[1] - self.mlp[0].out_features) // 2
        one, sq, high = sums[:, :d], sums[:, d:2 * d], sums[:, 2 * d:]
        high = self.mlp[2:](self.mlp[1](high + self.mlp[0].bias))
        return one + 0.5 * (one * one - sq) + high


class _TokenSums(torch.autograd.Function):
    """Per bag (item, or (item, modality)): S1 = sum w_x e_x, S2 = sum (w_x e_x)^2, H = sum W_x e_x.

    ``tables`` (P, K, d); ``w`` (P,); ``w1`` (h, P, d) first-layer blocks; ``ids``/``offsets``: flat token ids
    and bag starts for the forward gather-sum (``embedding_bag``); ``inc_t``: CSR transpose of the bag x P*K
    incidence matrix for the backward scatter-sum (a CSR product is much faster than ``index_add`` on CPU).
    """

    @staticmethod
    def forward(ctx, tables, w, w1, ids, offsets, inc_t):
        n_pos, k, d = tables.shape
        rows = token_rows(tables, w, w1)
        sums = F.embedding_bag(ids, rows.view(n_pos * k, -1), offsets, mode="sum")
        ctx.save_for_backward(tables, w, w1, rows[..., :d])  # w_x e, for the backward of its square
        ctx.inc_t = inc_t
        return sums[:, :d], sums[:, d:2 * d], sums[:, 2 * d:]

    @staticmethod
    def backward(ctx, g1, g2, g3):
        tables, w, w1, scaled = ctx.saved_tensors
        parts = [torch.zeros_like(g) if g is None else g for g in (g1, g2, g3)]
        n_pos, k, d = tables.shape
        grad_rows = csr_mm(ctx.inc_t, torch.cat(parts, 1)).view(n_pos, k, -1)
        blocks = grad_rows[..., :d], grad_rows[..., d:2 * d], grad_rows[..., 2 * d:]
        return (*_token_parts_backward(*blocks, tables, w, w1, scaled), None, None, None)


def _token_parts_backward(g_one: torch.Tensor, g_sq: torch.Tensor, g_proj: torch.Tensor, tables: torch.Tensor,
                          w: torch.Tensor, w1: torch.Tensor,
                          scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``tables``, ``w`` and ``w1`` from those of the three :func:`token_parts` blocks (P, K, .);
    ``scaled`` = ``w_x e`` from the forward."""
    g_scaled = torch.addcmul(g_one, scaled, g_sq, value=2.0)
    g_tables = torch.bmm(g_proj, w1.permute(1, 0, 2)).add_(w[:, None, None] * g_scaled)
    g_w = (g_scaled * tables).sum((1, 2))
    g_w1 = torch.bmm(g_proj.transpose(1, 2), tables).permute(1, 0, 2)
    return g_tables, g_w, g_w1


class _TanhCross(torch.autograd.Function):
    """The whole all-items Token Cross Network for one-layer tanh networks (the default), forward and backward by
    hand: per bag (item, or (item, modality)) ``one + (one^2 - sq) / 2 + tanh(pre + b)`` from the :func:`token_rows`
    sums, summed over an item's bags. ``bias`` (M, d): each bag's network bias; ``item_ids`` (n, P) and ``starts``
    (M + 1,): each item's token rows and the positions of each bag; other arguments as :class:`_TokenSums`.

    On contiguous float32 CPU tensors the per-item work is fused (:func:`_fused_forward`, :func:`_fused_backward`):
    one serial numba pass over the items each way, around the first layer's block products (BLAS). Otherwise
    (float64, CUDA) the torch form below: the three sums are gathered, and their gradients scattered, as three
    contiguous (n, M, d) blocks (slices of one (n, M, 3d) block would make every elementwise pass strided)."""

    @staticmethod
    def forward(ctx, tables, w, w1, bias, ids, offsets, inc_t, item_ids, starts):
        ctx.fused = numba_kernels_apply(tables, w, w1, bias) and item_ids.is_contiguous()
        if ctx.fused:
            out, one, t = _fused_forward(tables, w, w1, bias, item_ids, starts)
            ctx.save_for_backward(tables, w, w1, one, t, item_ids, starts)
            return out
        n_pos, k, d = tables.shape
        n_bags = bias.shape[0]
        scaled, squared, proj = token_parts(tables, w, w1)

        def bag_sums(rows: torch.Tensor) -> torch.Tensor:  # (P, K, c) token rows -> (n, M, c) bag sums
            return F.embedding_bag(ids, rows.view(n_pos * k, -1), offsets, mode="sum").view(-1, n_bags, rows.shape[-1])

        one, sq, pre = bag_sums(scaled), bag_sums(squared), bag_sums(proj)
        # tanh(x) = 2 sigmoid(2x) - 1: equal up to float rounding, and faster than torch.tanh on CPU
        t = torch.sigmoid(pre.add_(bias).mul_(2.0)).mul_(2.0).sub_(1.0)
        out = torch.addcmul(one, one, one, value=0.5).sub_(sq, alpha=0.5).add_(t).sum(1)
        ctx.save_for_backward(tables, w, w1, scaled, one, t)
        ctx.inc_t = inc_t
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.fused:
            return (*_fused_backward(g, *ctx.saved_tensors), None, None, None, None, None)
        tables, w, w1, scaled, one, t = ctx.saved_tensors
        n, n_bags, d = t.shape
        g_sq = g[:, None, :] * -0.5  # d/d sq, the same for every bag of an item
        # g per bag as a contiguous (n, M, d) block: addcmul with a broadcast (stride-0) operand is ~10x slower
        g = g[:, None, :].expand(n, n_bags, d).contiguous()
        g_pre = torch.addcmul(g, g, t * t, value=-1.0)  # d/d pre: 1 - tanh^2
        g_one = torch.addcmul(g, g, one)  # d/d one: 1 + one

        def scatter(x: torch.Tensor) -> torch.Tensor:  # bag gradients -> token-row gradients (P, K, c)
            return csr_mm(ctx.inc_t, x.reshape(n * n_bags, -1)).view(*tables.shape[:2], -1)

        parts = [scatter(g_one), scatter(g_sq.expand(n, n_bags, d)), scatter(g_pre)]
        grads = _token_parts_backward(*parts, tables, w, w1, scaled)
        return (*grads, g_pre.sum(0), None, None, None, None, None)


def _fused_forward(tables: torch.Tensor, w: torch.Tensor, w1: torch.Tensor, bias: torch.Tensor,
                   item_ids: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_TanhCross` forward on float32 CPU tensors: the block products ``W_x e`` of every token (one BLAS
    ``bmm``), then :func:`motor.kernels.tcn_forward` (gather, second order, tanh layer and sum over bags in one
    pass). Returns the (n, d) item vectors and, for the backward, ``one`` and ``t`` (n, M, d)."""
    from . import kernels

    n_pos, k, d = tables.shape
    n, n_bags = item_ids.shape[0], bias.shape[0]
    proj = torch.bmm(tables, w1.permute(1, 2, 0))  # (P, K, h): W_x e for every token row
    one, t = torch.empty(n, n_bags, d), torch.empty(n, n_bags, d)
    out = torch.zeros(n, d)
    kernels.tcn_forward(*(kernels.as_array(x) for x in (tables.view(n_pos * k, d), w, proj.view(n_pos * k, -1),
                                                        bias, item_ids, starts, one, t, out)))
    return out, one, t


def _fused_backward(g: torch.Tensor, tables: torch.Tensor, w: torch.Tensor, w1: torch.Tensor, one: torch.Tensor,
                    t: torch.Tensor, item_ids: torch.Tensor,
                    starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_TanhCross` backward on float32 CPU tensors: :func:`motor.kernels.tcn_backward` scatters ``g`` (n, d)
    to the token rows (the gradients of ``w_x e`` and of ``W_x e``, and the bias's), two BLAS ``bmm`` take the
    latter through the first layer, and :func:`motor.kernels.tcn_token_grads` adds the former and sums the position
    weights' gradient. Returns the gradients of ``tables``, ``w``, ``w1`` and ``bias``."""
    from . import kernels

    n_pos, k, d = tables.shape
    rows = tables.view(n_pos * k, d)
    g_scaled, g_proj = torch.zeros(n_pos * k, d), torch.zeros(n_pos * k, w1.shape[0])
    g_bias, g_w = torch.zeros(starts.shape[0] - 1, d), torch.empty(n_pos)
    kernels.tcn_backward(*(kernels.as_array(x) for x in (rows, w, item_ids, starts, one, t, g.contiguous(),
                                                         g_scaled, g_proj, g_bias)))
    g_proj = g_proj.view(n_pos, k, -1)
    g_tables = torch.bmm(g_proj, w1.permute(1, 0, 2))  # through the first layer: (P, K, h) x (P, h, d)
    kernels.tcn_token_grads(*(kernels.as_array(x) for x in (rows, w, g_scaled, g_tables.view(n_pos * k, d), g_w)))
    g_w1 = torch.bmm(g_proj.transpose(1, 2), tables).permute(1, 0, 2)  # (P, h, d) -> (h, P, d)
    return g_tables, g_w, g_w1, g_bias


def cross_all_items(nets: Sequence[CrossNetwork], tables: torch.Tensor, widths: Sequence[int],
                    flat_ids: torch.Tensor, offsets: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
    """Item vectors of every item: ``nets[m]`` over the ``widths[m]`` positions of modality m, outputs summed
    (modal-specific, eq. 9; one net over all positions is modal-agnostic, eq. 10).

    ``flat_ids``: (n_items, P) ids into the flattened (P*K) tables; ``offsets``: start of each (item, modality) bag
    in ``flat_ids.reshape(-1)``; ``incidence``: the same bags as a sparse (n_items * M, P*K) 0/1 matrix, row
    ``i * M + m`` marking the tokens of item i in modality m. Equal to ``sum_m nets[m](tokens of modality m)``.
    """
    n_bags = len(nets)
    first = [net.mlp[0] for net in nets]
    w = torch.cat([net.w for net in nets])
    w1 = torch.cat([lin.weight.view(lin.out_features, wd, -1) for lin, wd in zip(first, widths)], 1)
    _, inc_t = csr_pair(incidence)
    bias = torch.stack([lin.bias for lin in first])
    if all(len(net.mlp) == 2 and type(net.mlp[1]) is nn.Tanh for net in nets):  # the default: fully fused
        starts = torch.as_tensor(np.cumsum([0, *widths]), dtype=torch.int64)
        return _TanhCross.apply(tables, w, w1, bias.contiguous(), flat_ids.reshape(-1), offsets, inc_t,
                                flat_ids.contiguous(), starts)
    sums = _TokenSums.apply(tables, w, w1, flat_ids.reshape(-1), offsets, inc_t)
    one, sq, high = (s.view(-1, n_bags, s.shape[1]) for s in sums)
    same_tail = all(len(net.mlp) == 2 and type(net.mlp[1]) is type(nets[0].mlp[1]) for net in nets)
    if same_tail:  # one activation over every modality at once
        high = nets[0].mlp[1](high + bias)
    else:
        high = torch.stack([net.mlp[2:](net.mlp[1](high[:, m] + bias[m])) for m, net in enumerate(nets)], 1)
    return (one + 0.5 * (one * one - sq) + high).sum(1)
