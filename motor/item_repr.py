"""Item representations — the one seam MOTOR changes.

A backbone asks its item representation for item vectors: ``item_repr()`` -> (n_items, d) or
``item_repr(index)`` -> (len(index), d). Two interchangeable modules provide them:

* :class:`IDEmbedding` — the ID-based baseline: one free row per item (Xavier init), O(N d) parameters.
* :class:`TokenRepresentation` — MOTOR (sections 3.4-3.5): per token position a K x d table (random init, not the
  PQ centroids), then the Token Cross Network; O(D K d) parameters shared by all items.

Backbones never branch on which one they got.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sparse import spmm
from .tcn import CrossNetwork, cross_all_items, second_order  # noqa: F401 (re-exported)

CROSS_KINDS = ("ms", "ma", "mean", "linear")
ITEM_REPRS = ("id",) + CROSS_KINDS


class IDEmbedding(nn.Module):
    """Item-ID embedding table (n_items, d), Xavier-uniform init (the paper's and MMRec's default)."""

    def __init__(self, n_items: int, dim: int = 64):
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.weight = nn.Parameter(torch.empty(n_items, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.weight if index is None else self.weight.index_select(0, index)

    def n_parameters(self) -> int:
        return self.weight.numel()


class TokenRepresentation(nn.Module):
    """MOTOR's ID-free item representation from multimodal token ids.

    ``token_ids``: {modality: int array (n_items, D)} (from :func:`motor.tokenize`); ``n_centroids``: K (table rows);
    ``cross``: ``"ms"`` modal-specific (one cross network per modality, outputs summed, eq. 9), ``"ma"``
    modal-agnostic (one network over all tokens, eq. 10), ``"mean"`` (average of all token embeddings; ablation),
    ``"linear"`` (a linear map of their concatenation; ablation); ``modalities``: subset to use (default all).
    Token tables are Xavier-initialised like ID embeddings; one table per (modality, position), stored as one
    tensor of shape (P, K, d) so the lookup is a single gather.
    """

    def __init__(self, token_ids: Mapping[str, np.ndarray | torch.Tensor], n_centroids: int = 256, dim: int = 64,
                 cross: str = "ms", modalities: Sequence[str] | None = None, hidden: Sequence[int] = (),
                 activation: str = "tanh"):
        super().__init__()
        if cross not in CROSS_KINDS:
            raise ValueError(f"unknown cross {cross!r}; use one of {CROSS_KINDS}")
        mods = list(modalities) if modalities else sorted(token_ids)
        missing = [m for m in mods if m not in token_ids]
        if missing:
            raise KeyError(f"no token ids for modalities {missing}; have {sorted(token_ids)}")
        ids = [torch.as_tensor(np.asarray(token_ids[m]), dtype=torch.long) for m in mods]
        n_items = {t.shape[0] for t in ids}
        if len(n_items) != 1:
            raise ValueError(f"token id matrices disagree on the number of items: {n_items}")
        top = max(int(t.max()) for t in ids)
        if top >= n_centroids:
            raise ValueError(f"token id {top} >= n_centroids {n_centroids}")
        self.modalities, self.cross, self.dim, self.n_centroids = mods, cross, dim, n_centroids
        self.n_items = n_items.pop()
        self.widths = [t.shape[1] for t in ids]  # tokens per modality
        n_pos = sum(self.widths)
        offsets = torch.arange(n_pos) * n_centroids
        self.register_buffer("flat_ids", torch.cat(ids, dim=1) + offsets[None], persistent=False)
        # (item or (item, modality)) x (P*K) 0/1 incidence: representing every item is then one sparse product
        self.register_buffer("incidence", self._incidence(self.flat_ids, n_pos * n_centroids, cross == "ms"),
                             persistent=False)
        self.register_buffer("bag_offsets", self._offsets(self.n_items, cross == "ms"), persistent=False)
        self.tables = nn.Parameter(torch.empty(n_pos, n_centroids, dim))
        nn.init.xavier_uniform_(self.tables.view(n_pos * n_centroids, dim))
        if cross == "ms":
            self.nets = nn.ModuleList(CrossNetwork(w, dim, hidden, activation) for w in self.widths)
        elif cross == "ma":
            self.nets = nn.ModuleList([CrossNetwork(n_pos, dim, hidden, activation)])
        elif cross == "linear":
            self.linear = nn.Linear(n_pos * dim, dim)
            nn.init.xavier_uniform_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def token_embeddings(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(n, P, d) token embeddings of the items in ``index`` (all items if None)."""
        ids = self.flat_ids if index is None else self.flat_ids[index]
        return torch.nn.functional.embedding(ids, self.tables.view(-1, self.dim))

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        if index is None or 4 * index.numel() >= self.n_items:
            out = self._represent(None)  # cheaper to represent every item once than a large batch with repeats
            return out if index is None else out.index_select(0, index)
        if index.numel() > 64:
            # batches repeat items (popular ones often): represent each distinct item once
            uniq, inverse = torch.unique(index, return_inverse=True)
            if len(uniq) < index.numel():
                return self._represent(uniq).index_select(0, inverse)
        return self._represent(index)

    def _bag_starts(self, per_modality: bool) -> list[int]:
        return list(np.cumsum([0] + self.widths[:-1])) if per_modality else [0]

    def _incidence(self, flat_ids: torch.Tensor, n_cols: int, per_modality: bool) -> torch.Tensor:
        n, n_pos = flat_ids.shape
        bounds = self._bag_starts(per_modality) + [n_pos]
        bag_of_pos = torch.repeat_interleave(torch.arange(len(bounds) - 1), torch.as_tensor(np.diff(bounds)))
        rows = (torch.arange(n)[:, None] * (len(bounds) - 1) + bag_of_pos[None]).reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rows, flat_ids.reshape(-1)]), torch.ones(n * n_pos),
                                       (n * (len(bounds) - 1), n_cols)).coalesce()

    def _offsets(self, n: int, per_modality: bool, device=None) -> torch.Tensor:
        """Start of each item's (or (item, modality)'s) bag in the flattened (n, P) token-id matrix."""
        starts = torch.as_tensor(self._bag_starts(per_modality), device=device)
        return (torch.arange(n, device=device)[:, None] * sum(self.widths) + starts[None]).reshape(-1)

    def _gather_sum(self, index: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """Sum of ``rows`` (P*K, c) over each item's tokens -> (n, c), or over each (item, modality)'s tokens for
        ``ms`` -> (n * M, c). All items: one product with the cached incidence matrix; a subset: ``embedding_bag``."""
        if index is None:
            return spmm(self.incidence, rows)
        ids = self.flat_ids[index]
        return F.embedding_bag(ids.reshape(-1), rows, self._offsets(len(ids), self.cross == "ms", ids.device),
                               mode="sum")

    def _represent(self, index: torch.Tensor | None) -> torch.Tensor:
        """Item vectors from per-token tables and one gather-sum (see :mod:`motor.tcn`)."""
        n_pos, k, d = self.tables.shape
        if index is None and self.cross in ("ms", "ma"):
            return cross_all_items(self.nets, self.tables, self.widths if self.cross == "ms" else [n_pos],
                                   self.flat_ids, self.bag_offsets, self.incidence)
        if self.cross == "mean":
            return self._gather_sum(index, self.tables.view(-1, d)) / n_pos
        if self.cross == "linear":
            w = self.linear.weight.view(d, n_pos, d)
            proj = torch.einsum("pkd,hpd->pkh", self.tables, w).reshape(n_pos * k, d)
            return self._gather_sum(index, proj) + self.linear.bias
        if self.cross == "ma":
            net = self.nets[0]
            return net.finish(self._gather_sum(index, net.token_tables(self.tables).flatten(0, 1)))
        parts = torch.split(self.tables, self.widths, dim=0)
        rows = torch.cat([net.token_tables(t) for net, t in zip(self.nets, parts)]).flatten(0, 1)
        sums = self._gather_sum(index, rows).view(-1, len(self.widths), rows.shape[1])
        return sum(net.finish(sums[:, m]) for m, net in enumerate(self.nets))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_item_repr(kind: str, n_items: int, dim: int = 64, token_ids: Mapping[str, np.ndarray] | None = None,
                    n_centroids: int = 256, modalities: Sequence[str] | None = None, **tcn) -> nn.Module:
    """``kind`` in ``ITEM_REPRS``: ``"id"`` -> :class:`IDEmbedding`, else a :class:`TokenRepresentation`."""
    if kind == "id":
        return IDEmbedding(n_items, dim)
    if token_ids is None:
        raise ValueError(f"item_repr {kind!r} needs token_ids (motor.tokenize(dataset))")
    return TokenRepresentation(token_ids, n_centroids, dim, cross=kind, modalities=modalities, **tcn)


def item_parameter_fraction(item_repr: nn.Module, n_items: int, dim: int = 64) -> float:
    """Item-side parameters as a fraction of the ID table (n_items x d) they replace (paper: 10-20 %)."""
    return sum(p.numel() for p in item_repr.parameters()) / float(n_items * dim)
