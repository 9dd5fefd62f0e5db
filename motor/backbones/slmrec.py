"""SLMRec — Tao et al., "Self-supervised Learning for Multimedia Recommendation", IEEE TMM 2022.

One LightGCN branch per view over the same user embeddings: the item representation (the "ID" branch) and each
modality m, whose L2-normalised features are projected to d (items_m = W_m x_i). Each branch outputs the mean of
layers 0..L; user and item vectors are the concatenation of all branches, fused by one linear layer each.

Main task: in-batch softmax (InfoNCE) between normalised user and positive-item vectors with temperature ``temp``
(MMRec's ``infonce``; no sampled negatives). Self-supervised task (weight ``ssl_alpha``), one of
* ``"FAC"`` (fine-and-coarse, MMRec's default): the ID branch of the batch's items is aligned with the first
  modality in a fine space (d), then mapped on to a coarse space (d/2) and aligned with every further modality;
  each alignment is an InfoNCE with temperature ``ssl_temp``;
* ``"FD"`` (feature dropout): two views with dropout after every propagation layer, InfoNCE between the views'
  normalised users and items;
* ``"FM"`` (feature masking): two views, each with one randomly chosen branch's item input zeroed, same InfoNCE.

The ID branch's item embedding is ``item_repr``.
Defaults (MMRec ``SLMRec.yaml``): recdim 64, layer_num 3, ssl_task FAC, temp 0.2, dropout_rate 0.3, fusion concat,
adjacency D^-1/2 A D^-1/2 ("pre"), Adam weight_decay 1e-4 (declared in ``trainer_defaults``, which the trainer applies),
ssl_alpha grid {0.01, 0.05, 0.1, 0.5, 1.0} and ssl_temp grid {0.1, 0.2, 0.5, 1.0} (we default to 0.1 / 0.2).
Deviation: modalities are taken in the dataset's (sorted) order, so with image + text the FAC hierarchy is
image (fine) then text (coarse), as in MMRec; MMRec's unused audio stage (a linear map composed with the next
linear map) is folded into one linear layer.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import DIM
from .base import MultimodalBackbone
from .features import project
from .graph import layer_mean, normalized_adjacency, propagate
from .losses import grouped_info_nce, info_nce_rows

SSL_TASKS = ("FAC", "FD", "FM")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(lin.weight)
    return lin


# Search space (``motor.tune``): MMRec ``SLMRec.yaml`` has 4 x 4 x 5 x 4 = 320 points over learning_rate, ssl_temp,
# ssl_alpha and ``reg``; its SLMRec model never reads ``reg`` (its L2 comes from Adam's weight_decay 1e-4), so the
# 4 values of ``reg`` repeat identical trainings and have no motor equivalent: 4 x 4 x 5 = 80 points here.
# ``learning_rate`` is the run's ``lr`` (a RunConfig field).
SEARCH_SPACE = {"lr": [1e-4, 1e-3, 1e-2, 1e-1], "ssl_temp": [0.1, 0.2, 0.5, 1.0],
                "ssl_alpha": [0.01, 0.05, 0.1, 0.5, 1.0]}


class SLMRec(MultimodalBackbone):
    trainer_defaults = {"weight_decay": 1e-4}  # MMRec SLMRec.yaml: Adam weight_decay 1e-4

    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, n_layers: int = 3, temp: float = 0.2,
                 ssl_task: str = "FAC", ssl_alpha: float = 0.1, ssl_temp: float = 0.2, dropout_rate: float = 0.3):
        if ssl_task not in SSL_TASKS:
            raise ValueError(f"unknown ssl_task {ssl_task!r}; use one of {SSL_TASKS}")
        super().__init__(dataset, item_repr, dim, transform=lambda f: F.normalize(f, dim=1))
        self.n_layers, self.temp, self.ssl_task = n_layers, temp, ssl_task
        self.ssl_alpha, self.ssl_temp, self.dropout_rate = ssl_alpha, ssl_temp, dropout_rate
        self.dense = nn.ModuleDict()
        for m in self.modalities:
            self.dense[m] = _linear(self.features(m).shape[1], dim)
        n_branches = len(self.modalities) + 1
        self.user_fusion = _linear(n_branches * dim, dim)
        self.item_fusion = _linear(n_branches * dim, dim)
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)
        if ssl_task == "FAC":
            # fine space (d): ID <-> first modality; coarse space (d/2): ID chain <-> each further modality
            dims = [dim] + [dim // 2] * (len(self.modalities) - 1)
            self.fac_chain = nn.ModuleList(_linear(a, b) for a, b in zip([dim] + dims[:-1], dims))
            self.fac_modal = nn.ModuleList(_linear(dim, b) for b in dims)

    # --- LightGCN branches -------------------------------------------------------------------------------------
    def branch_items(self) -> list[torch.Tensor]:
        """Item inputs of the branches: [item representation, W_m x for each modality m]."""
        return [self.item_repr()] + [project(self.dense[m], self.features(m)) for m in self.modalities]

    def branch(self, items: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """LightGCN over [users; items]: mean of layers 0..L (dropout after each layer for FD views)."""
        h = torch.cat([self.user_emb, items])
        if dropout <= 0:
            return layer_mean(self.adj, h, self.n_layers)
        layers = [h]
        for _ in range(self.n_layers):
            layers.append(F.dropout(propagate(self.adj, layers[-1], 1)[-1], dropout, self.training))
        return torch.stack(layers).mean(0)

    def fuse(self, branches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat(branches, dim=1)
        return self.user_fusion(z[: self.n_users]), self.item_fusion(z[self.n_users:])

    def embeddings(self):
        return self.fuse([self.branch(x) for x in self.branch_items()])

    # --- losses ------------------------------------------------------------------------------------------------
    def loss(self, users, pos, neg=None):
        items_in = self.branch_items()
        branches = [self.branch(x) for x in items_in]
        u, i = self.fuse(branches)
        main = info_nce_rows(u, i, users, pos, self.temp, normalize=True)
        if self.ssl_task == "FAC":
            distinct, inverse = torch.unique(pos, return_inverse=True)
            ssl = self.fac([b.index_select(0, distinct + self.n_users) for b in branches], inverse)
        elif self.ssl_task == "FD":
            ssl = self.contrast_views(users, pos, [self.branch(x, self.dropout_rate) for x in items_in],
                                      [self.branch(x, self.dropout_rate) for x in items_in])
        else:  # FM: each view zeroes the item input of a different random branch
            a, b = torch.randperm(len(items_in))[:2].tolist()
            ssl = self.contrast_views(users, pos, self.masked_view(branches, a), self.masked_view(branches, b))
        return main + self.ssl_alpha * ssl

    def masked_view(self, branches: list[torch.Tensor], k: int) -> list[torch.Tensor]:
        """The branches with branch k recomputed from zeroed item inputs (feature masking)."""
        zeros = torch.zeros(self.n_items, self.dim, device=self.user_emb.device)
        return [self.branch(zeros) if j == k else b for j, b in enumerate(branches)]

    def fac(self, item_branches: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Fine-and-coarse alignment of the ID branch with each modality branch over the batch items
        ``rows[index]``, where ``item_branches`` hold the distinct batch items' rows (maps applied once each)."""
        z, total = item_branches[0], 0.0
        for chain, modal, x in zip(self.fac_chain, self.fac_modal, item_branches[1:]):
            z = chain(z)
            total = total + grouped_info_nce(z, modal(x), index, index, self.ssl_temp)
        return total

    def contrast_views(self, users, pos, view1: list[torch.Tensor], view2: list[torch.Tensor]) -> torch.Tensor:
        """InfoNCE between two views' normalised fused users (batch users) and items (batch positives)."""
        (u1, i1), (u2, i2) = self.fuse(view1), self.fuse(view2)
        return (info_nce_rows(u1, u2, users, users, self.ssl_temp, normalize=True)
                + info_nce_rows(i1, i2, pos, pos, self.ssl_temp, normalize=True))
