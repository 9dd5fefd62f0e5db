"""LightGCN — He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020.

E^(l+1) = D^-1/2 A D^-1/2 E^(l); final embedding = mean over layers 0..L; BPR loss + L2 on the ego embeddings.
Defaults (MMRec): dim 64, n_layers 2, reg_weight 1e-4.
"""
import torch
from torch import nn

from .base import Backbone, bpr_loss, l2_reg
from .graph import normalized_adjacency, propagate


class LightGCN(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = 64, n_layers: int = 2, reg_weight: float = 1e-4):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.n_layers, self.reg_weight = n_layers, reg_weight
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)

    def ego(self):
        return torch.cat([self.user_emb, self.item_repr()])

    def embeddings(self):
        ego = self.ego()
        out = torch.stack(propagate(self.adj, ego, self.n_layers)).mean(0)
        return out[: self.n_users], out[self.n_users:]

    def loss(self, users, pos, neg):
        ego = self.ego()
        out = torch.stack(propagate(self.adj, ego, self.n_layers)).mean(0)
        u, i = out[: self.n_users], out[self.n_users:]
        ue, ie = ego[: self.n_users], ego[self.n_users:]
        base = bpr_loss((u[users] * i[pos]).sum(1), (u[users] * i[neg]).sum(1))
        return base + self.reg_weight * l2_reg(ue[users], ie[pos], ie[neg])
