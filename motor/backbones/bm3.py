"""BM3 — Zhou et al., "Bootstrap Latent Representations for Multi-modal Recommendation", WWW 2023.

Online encoder: LightGCN over [users; items] (mean of layers 0..L), plus the ego item vector on the item side
(h_i = LightGCN_i + e_i); each modality is projected to d by a linear layer (h^m_i = W_m x^m_i). A shared linear
predictor p(.) maps online vectors into the prediction space. Target views are the online vectors with dropout,
under stop-gradient (no target network, no negative sampling). Losses on a batch of (user, positive item) pairs,
with cos-loss(a, b) = 1 - cos(a, b):

* graph: cos-loss(p(h_u), sg(drop(h_i))) + cos-loss(p(h_i), sg(drop(h_u)));
* per modality m (weight ``cl_weight``): alignment cos-loss(p(h^m_i), sg(drop(h_i))) and masked-feature
  reconstruction cos-loss(p(h^m_i), sg(drop(h^m_i)));
* reg_weight * (||H_U|| + ||H_I||) / n_items on the full online matrices (MMRec's EmbLoss: unsquared norms).

Scores are p(h_u) . p(h_i). The item-ID embedding e_i is ``item_repr``.
Defaults (MMRec ``BM3.yaml``, first grid values): dim 64, n_layers 1 (grid {1, 2}), dropout 0.5 (grid {0.3, 0.5}),
reg_weight 0.1 (grid {0.1, 0.01}), cl_weight 2.0, ``use_neg_sampling: False``.
Deviation: MMRec trains the raw feature matrices (``nn.Embedding.from_pretrained(freeze=False)``); they are frozen
buffers here and only the projections W_m train (Adam + backward on the raw matrices is a large share of MMRec's
epoch). Projections are computed once per distinct batch item (the same values and gradients as projecting every
item, as MMRec does).

Known behaviour with MOTOR: BM3's objective has no negatives, so mapping every item and user to one direction is a
minimum it must avoid by its training dynamics alone. With an ID table every item moves on its own; with token
tables and a shared cross network one Adam step moves all items together, and the ID-free model collapses within a
few epochs (scientific, ms: mean pairwise cosine of the item vectors 0.15 after epoch 1, 0.96 by epoch 11; best
valid Recall@20 0.076 at epoch 3 vs 0.23 for IDs). Freezing the MLP bias, and BM3's other grid values (dropout 0.3,
reg_weight 0.01, n_layers 2), collapse the same way (valid Recall@20 0.075-0.103). So do the token ablations
without a cross network, and a 10x smaller learning rate (scientific, seed 0, test Recall@20: mean of token
embeddings 0.137, linear map 0.063, ms with lr 1e-4 0.063): the collapse comes from items sharing token rows under
a negative-free objective, not from the cross network or the step size. Nor is it this file's frozen features:
training the raw feature matrices as MMRec does gives the same curve (scientific, ms, n_layers 2, dropout 0.3,
lr 2e-3, valid Recall@20 over epochs 1-6: trained 0.090 0.105 0.098 0.090 0.090 0.089, frozen 0.090 0.106 0.100
0.091 0.092 0.090; current dropout masks). Reported as measured (the figures before this last one were taken
with the dropout masks before 2026-11-25; the registry's BM3 runs were re-made with the current ones).
"""
import torch
from torch import nn

from .base import Backbone, dropout
from .features import modality_features, project_rows
from .graph import layer_mean, normalized_adjacency


class _CosLoss(torch.autograd.Function):
    """1 - mean_i cos(a_i, b_i) with b under stop-gradient, forward and backward by hand: d cos / d a =
    (b_hat - cos * a_hat) / |a|. Same value as ``F.cosine_similarity`` (norms clamped at 1e-8); about a third of
    the element-wise passes of autograd's version, which were a large share of a BM3 step (six losses a batch)."""

    @staticmethod
    def forward(ctx, a, b):
        a_norm = a.norm(dim=1, keepdim=True).clamp_min_(1e-8)
        b_hat = b / b.norm(dim=1, keepdim=True).clamp_min_(1e-8)
        cos = (a * b_hat).sum(1, keepdim=True).div_(a_norm)
        ctx.save_for_backward(a, a_norm, b_hat, cos)
        return 1.0 - cos.mean()

    @staticmethod
    def backward(ctx, g):
        a, a_norm, b_hat, cos = ctx.saved_tensors
        scale = -g / (a.shape[0] * a_norm)  # (B, 1)
        return (b_hat - a * (cos / a_norm)) * scale, None


def cos_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity; the target is never differentiated (stop-gradient)."""
    return _CosLoss.apply(online, target.detach())


class BM3(Backbone):
    needs_negatives = False

    def __init__(self, dataset, item_repr: nn.Module, dim: int = 64, n_layers: int = 1, dropout: float = 0.5,
                 reg_weight: float = 0.1, cl_weight: float = 2.0, modalities=None):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        feats = modality_features(dataset, modalities)
        self.modalities = list(feats)
        self.n_layers, self.dropout, self.reg_weight, self.cl_weight = n_layers, dropout, reg_weight, cl_weight
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, dim)))
        self.predictor = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = nn.ModuleDict()
        for m, f in feats.items():
            self.register_buffer(f"features_{m}", f, persistent=False)
            self.projections[m] = nn.Linear(f.shape[1], dim)
            nn.init.xavier_normal_(self.projections[m].weight)
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Online (n_users, d) users and (n_items, d) items: LightGCN mean + ego item vector."""
        items = self.item_repr()
        out = layer_mean(self.adj, torch.cat([self.user_emb, items]), self.n_layers)
        return out[: self.n_users], out[self.n_users:] + items

    def embeddings(self):
        u, i = self.online()
        return self.predictor(u), self.predictor(i)

    def loss(self, users, pos, neg=None):
        u_all, i_all = self.online()
        u, i = u_all.index_select(0, users), i_all.index_select(0, pos)
        with torch.no_grad():  # target views: dropout of the online vectors, stop-gradient
            u_target, i_target = dropout(u, self.dropout), dropout(i, self.dropout)
        graph = cos_loss(self.predictor(u), i_target) + cos_loss(self.predictor(i), u_target)
        modal = 0.0
        for m in self.modalities:
            h = project_rows(self.projections[m], getattr(self, f"features_{m}"), pos)
            with torch.no_grad():
                h_target = dropout(h, self.dropout)
            h_online = self.predictor(h)
            modal = modal + cos_loss(h_online, i_target) + cos_loss(h_online, h_target)
        reg = (u_all.norm() + i_all.norm()) / self.n_items
        return graph + self.reg_weight * reg + self.cl_weight * modal
