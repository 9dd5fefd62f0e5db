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
from torch import nn

CROSS_KINDS = ("ms", "ma", "mean", "linear")
ITEM_REPRS = ("id",) + CROSS_KINDS
_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class IDEmbedding(nn.Module):
    """Item-ID embedding table (n_items, d), Xavier-uniform init (the paper's and MMRec's default)."""

    def __init__(self, n_items: int, dim: int = 64):
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.weight = nn.Parameter(torch.empty(n_items, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.weight if index is None else self.weight[index]

    def n_parameters(self) -> int:
        return self.weight.numel()


def second_order(weighted: torch.Tensor) -> torch.Tensor:
    """Sum over pairs x<y of (w_x e_x) * (w_y e_y), in O(P d): 1/2 [(sum w e)^2 - sum (w e)^2].

    ``weighted``: (n, P, d) -> (n, d).
    """
    s = weighted.sum(1)
    return 0.5 * (s * s - (weighted * weighted).sum(1))


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
        """``emb`` (n, P, d) token embeddings -> (n, d)."""
        # one-order sum_x w_x e_x and second-order 1/2[(sum w e)^2 - sum w^2 e^2] as batched vector-matrix
        # products: two reductions instead of several full-size elementwise passes (same maths as second_order)
        one = torch.matmul(self.w, emb)
        two = 0.5 * (one * one - torch.matmul(self.w * self.w, emb * emb))
        high = self.mlp(emb.reshape(emb.shape[0], -1))
        return one + two + high


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
        if index is not None and index.numel() > 64:
            # batches repeat items (popular ones often): run the cross network once per distinct item
            uniq, inverse = torch.unique(index, return_inverse=True)
            if len(uniq) < index.numel():
                return self._represent(uniq)[inverse]
        return self._represent(index)

    def _represent(self, index: torch.Tensor | None) -> torch.Tensor:
        emb = self.token_embeddings(index)
        if self.cross == "ms":
            parts = torch.split(emb, self.widths, dim=1)
            return sum(net(p) for net, p in zip(self.nets, parts))
        if self.cross == "ma":
            return self.nets[0](emb)
        if self.cross == "mean":
            return emb.mean(1)
        return self.linear(emb.reshape(emb.shape[0], -1))

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
