"""BPR-MF — Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.

y_ui = e_u . r_i with r_i from the item representation; loss = BPR + reg * (|e_u|^2 + |r_i|^2 + |r_j|^2) / B.
Defaults (MMRec): dim 64, reg_weight 1e-4.
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import Backbone
from .losses import bpr_triplet_loss, l2_reg

# Search space (``motor.tune``): MMRec ``BPR.yaml``, 7 points.
SEARCH_SPACE = {"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}


class BPR(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, reg_weight: float = 1e-4):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.reg_weight = reg_weight

    def embeddings(self):
        return self.user_emb, self.item_repr()

    def loss(self, users, pos, neg):
        u = self.user_emb.index_select(0, users)
        items = self.item_repr(torch.cat([pos, neg]))  # only the rows this batch needs
        ip, ineg = items[: len(pos)], items[len(pos):]
        return bpr_triplet_loss(u, ip, ineg) + self.reg_weight * l2_reg(u, ip, ineg)
