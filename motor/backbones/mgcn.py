"""MGCN — Yu et al., "Multi-View Graph Convolutional Network for Multimedia Recommendation", ACM MM 2023.

1. Behaviour-guided purifier: per modality m, the projected features gate the item representation,
   e^m_i = e_i * sigmoid(W_g (W_m x^m_i + b_m) + b_g).
2. User-item view: LightGCN (mean of layers 0..L_ui) over [users; items] -> content vectors E^id.
3. Item-item views: per modality a frozen kNN graph S_m (top-k cosine neighbours, weighted by their cosine
   similarity, D^-1/2 S D^-1/2): e^m <- S_m^L e^m; users aggregate their items, u^m = R_norm e^m.
4. Behaviour-aware fuser: attention weights beta_m = softmax_m(q^T tanh(W_q e^m + b)) give the common part
   E^c = sum_m beta_m E^m; modality-specific parts are gated by the user-item view,
   E^s_m = sigmoid(W_p^m E^id + b) * (E^m - E^c); side = (E^c + sum_m E^s_m) / (M + 1).
5. Final = E^id + side. Loss: BPR + reg_weight * (1/2)(||u||^2 + ||i+||^2 + ||i-||^2) / batch on the final vectors +
   cl_loss * [InfoNCE(side_i, E^id_i) over the batch positives + InfoNCE(side_u, E^id_u) over the batch users],
   temperature 0.2.

The item-ID embedding e_i is ``item_repr``.
Defaults (MMRec ``MGCN.yaml``): dim 64, n_ui_layers 2, n_layers (item-item) 1, knn_k 10, reg_weight 1e-4,
cl_loss grid {0.001, 0.01, 0.1} -> 0.01, InfoNCE temperature 0.2, lr 1e-3 with MMRec's learning_rate_scheduler
(0.96, 50): lr x 0.96 ** (epoch / 50) (declared in ``trainer_defaults``, which the trainer applies).
Deviations: motor's default freezes the raw feature matrices (buffers) and trains only the projections;
``train_features=True`` is MMRec's behaviour (``nn.Embedding.from_pretrained(freeze=False)``): the matrices train
too, through the projections W_m x^m_i that feed the purifier (the kNN graphs are built once from the original
features either way). The kNN graph excludes each item itself (MMRec's top-k includes the item with similarity 1)
and its edges come from the shared, disk-cached ``graph.cached_knn_graph``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import DIM
from .base import MultimodalBackbone
from .features import project
from .graph import bipartite_edges, cached_knn_graph, layer_mean, normalized_adjacency, propagate, spmm
from .losses import bpr_triplet_loss, info_nce_rows, take


def weighted_knn_graph(features: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k cosine graph with similarity weights, D^-1/2 S D^-1/2 (D = weighted row sums), as MMRec's MGCN.
    A constant: built from the features' values, never differentiated (trainable features do not move it)."""
    features = features.detach()
    edges = cached_knn_graph(features, k, normalize="none").indices()
    x = F.normalize(features, dim=1)
    r, c = edges
    sim = (x[r] * x[c]).sum(1)
    deg = torch.zeros(len(x)).index_add(0, r, sim)
    inv = deg.clamp_min(1e-12).rsqrt()
    return torch.sparse_coo_tensor(edges, inv[r] * sim * inv[c], (len(x), len(x)), check_invariants=False).coalesce()


def user_item_matrix(train, n_users: int, n_items: int) -> torch.Tensor:
    """The user-item block R_norm = D_u^-1/2 R D_i^-1/2 of the normalised bipartite adjacency."""
    u, i = bipartite_edges(train)
    du = torch.bincount(u, minlength=n_users).float().clamp_min(1)
    di = torch.bincount(i, minlength=n_items).float().clamp_min(1)
    vals = du[u].rsqrt() * di[i].rsqrt()
    return torch.sparse_coo_tensor(torch.stack([u, i]), vals, (n_users, n_items), check_invariants=False).coalesce()


def _gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


# Search space (``motor.tune``): MMRec ``MGCN.yaml``, 3 points.
SEARCH_SPACE = {"cl_loss": [0.001, 0.01, 0.1]}


class MGCN(MultimodalBackbone):
    trainer_defaults = {"lr_schedule": (0.96, 50)}  # MMRec MGCN.yaml: learning_rate_scheduler [0.96, 50]

    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, n_ui_layers: int = 2, n_layers: int = 1,
                 knn_k: int = 10, reg_weight: float = 1e-4, cl_loss: float = 0.01, tau: float = 0.2,
                 train_features: bool = False):
        super().__init__(dataset, item_repr, dim, train_features=train_features)
        self.n_ui_layers, self.n_layers = n_ui_layers, n_layers
        self.reg_weight, self.cl_loss, self.tau = reg_weight, cl_loss, tau
        self.projections = nn.ModuleDict()
        self.purifier_gates = nn.ModuleDict()
        self.preference_gates = nn.ModuleDict()
        for m in self.modalities:
            f = self.features(m)
            self.register_buffer(f"item_graph_{m}", weighted_knn_graph(f, knn_k), persistent=False)
            self.projections[m] = nn.Linear(f.shape[1], dim)
            self.purifier_gates[m] = _gate(dim)
            self.preference_gates[m] = _gate(dim)
        self.query_common = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)
        self.register_buffer("user_item", user_item_matrix(dataset.train, self.n_users, self.n_items),
                             persistent=False)

    def forward_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_users + n_items, d) user-item view E^id and fused item-item side view; final = E^id + side."""
        items = self.item_repr()
        # user-item view
        content = layer_mean(self.adj, torch.cat([self.user_emb, items]), self.n_ui_layers)
        # item-item views of the purified modality features
        views = []
        for m in self.modalities:
            h = items * self.purifier_gates[m](project(self.projections[m], self.features(m)))
            h = propagate(getattr(self, f"item_graph_{m}"), h, self.n_layers)[-1]
            views.append(torch.cat([spmm(self.user_item, h), h]))
        # behaviour-aware fuser
        beta = torch.softmax(torch.cat([self.query_common(v) for v in views], dim=1), dim=1)
        common = sum(beta[:, j:j + 1] * v for j, v in enumerate(views))
        specific = [self.preference_gates[m](content) * (v - common) for m, v in zip(self.modalities, views)]
        side = (common + sum(specific)) / (len(views) + 1)
        return content, side

    def embeddings(self):
        content, side = self.forward_views()
        out = content + side
        return out[: self.n_users], out[self.n_users:]

    def loss(self, users, pos, neg):
        content, side = self.forward_views()
        out = content + side
        u_all, i_all = out[: self.n_users], out[self.n_users:]
        u = u_all.index_select(0, users)
        p, n = take(i_all, pos, neg)
        base = bpr_triplet_loss(u, p, n)
        reg = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(users)
        rows = pos + self.n_users
        cl = (info_nce_rows(side, content, rows, rows, self.tau, normalize=True)
              + info_nce_rows(side, content, users, users, self.tau, normalize=True))
        return base + self.reg_weight * reg + self.cl_loss * cl
