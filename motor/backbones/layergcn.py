"""LayerGCN — Zhou et al., "Layer-refined Graph Convolutional Networks for Recommendation", ICDE 2023.

Each propagated layer is refined by its cosine similarity to the ego layer, E^(l+1) <- cos(A E^(l), E^0) * A E^(l);
the output is the sum of the refined layers 1..L. Training uses degree-sensitive edge dropout: each epoch keeps a
(1 - dropout) sample of the edges drawn with weight 1/sqrt(d_u d_i). BPR loss + L2 on the ego embeddings.
Defaults (MMRec): dim 64, n_layers 4, dropout 0.1, reg_weight 1e-4 (MMRec grid 1e-2..1e-5).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, joint_bpr_loss, joint_rows
from .graph import PrunedAdjacency, spmm


class LayerGCN(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = 64, n_layers: int = 4, dropout: float = 0.1,
                 reg_weight: float = 1e-4):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.n_layers, self.dropout, self.reg_weight = n_layers, dropout, reg_weight
        self.graph = PrunedAdjacency(dataset.train, dropout)

    def on_epoch_start(self, generator):
        self.graph.resample(generator)

    def _forward(self, adj):
        ego = torch.cat([self.user_emb, self.item_repr()])
        h, layers = ego, []
        for _ in range(self.n_layers):
            h = spmm(adj, h)
            h = F.cosine_similarity(h, ego, dim=-1).unsqueeze(1) * h  # layer refinement
            layers.append(h)
        return ego, sum(layers[1:], layers[0])

    def embeddings(self):
        _, out = self._forward(self.graph.full)
        return out[: self.n_users], out[self.n_users:]

    def loss(self, users, pos, neg):
        ego, out = self._forward(self.graph.pruned)
        rows = joint_rows(self.n_users, users, pos, neg)
        return joint_bpr_loss(out.index_select(0, rows), ego.index_select(0, rows), self.reg_weight)
