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
Deviation: motor's default freezes the raw feature matrices (buffers) and trains only the projections W_m (Adam +
backward on the raw matrices is a large share of MMRec's epoch); ``train_features=True`` is MMRec's behaviour
(``nn.Embedding.from_pretrained(freeze=False)``): the matrices train too, through the projections h^m_i.
Projections are computed once per distinct batch item (the same values and gradients as projecting every item, as
MMRec does).
Parity with MMRec (``benchmarks/parity_mmrec.py``: ml100k, split "given", n_layers 1, reg_weight 0.1, dropout 0.5):
with ``train_features=True`` test Recall@20 / NDCG@20 0.1230 / 0.0895 (mean of seeds 0-2) against MMRec's single
run 0.1196 / 0.0885 (+2.8 % / +1.1 %); with the frozen default 0.1167 / 0.0842 (-2.4 % / -4.9 %).

Known behaviour with MOTOR: BM3's objective has no negatives, so mapping every item and user to one direction is a
minimum it must avoid by its training dynamics alone. With an ID table every item moves on its own; with token
tables shared by many items one Adam step moves them together, and the ID-free model collapses (its item vectors
converge to one direction within a few epochs; CHANGELOG.md has the diagnosis and what was tried).

Options against this collapse, not in BM3 (all off by default, so the default is BM3's objective):

* ``bpr_weight`` > 0 adds that weight times BPR on the scores ``p(h_u) . p(h_i)`` with the trainer's sampled
  negative item: the negatives BM3 has none of;
* ``uniformity`` > 0 adds that weight times Wang & Isola's uniformity term (:func:`uniformity_loss`) on the batch's
  distinct users and items after the predictor, which keeps the vectors spread over the sphere;
* ``center_items``: the item representation's vectors minus their mean over all items, before propagation, which
  removes the direction all items share (the one shared token tables grow; an ID table's mean is near zero).

``bpr_weight=1.0``, or ``center_items=True`` with ``uniformity=0.1``, bring the ID-free model to within 5 % of the
ID model on scientific; ``bpr_weight`` costs less time (the uniformity term is quadratic in the batch's items).
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import MultimodalBackbone
from .features import project_rows
from .graph import layer_mean, normalized_adjacency
from .losses import bpr_triplet_loss, dropout


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


def uniformity_loss(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity, log mean_{i != j} exp(-t |z_i - z_j|^2) over the L2-normalised rows z of ``x``:
    lowest when the rows spread over the sphere, 0 when they all point one way."""
    z = torch.nn.functional.normalize(x, dim=1)
    n = len(z)
    if n < 2:
        return x.new_zeros(())
    sq = (2.0 - 2.0 * (z @ z.T)).clamp_min(0.0)  # squared distances of unit vectors
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return torch.logsumexp(-t * sq[off], dim=0) - torch.log(torch.tensor(float(n * (n - 1)), device=x.device))


# Search space (``motor.tune``): MMRec ``BM3.yaml``, 2 x 2 x 2 = 8 points.
SEARCH_SPACE = {"n_layers": [1, 2], "reg_weight": [0.1, 0.01], "dropout": [0.3, 0.5]}


class BM3(MultimodalBackbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, n_layers: int = 1, dropout: float = 0.5,
                 reg_weight: float = 0.1, cl_weight: float = 2.0, uniformity: float = 0.0,
                 center_items: bool = False, bpr_weight: float = 0.0, train_features: bool = False):
        super().__init__(dataset, item_repr, dim, train_features=train_features)
        self.n_layers, self.dropout, self.reg_weight, self.cl_weight = n_layers, dropout, reg_weight, cl_weight
        # not in BM3 (see the module docstring): options against the collapse of negative-free training with
        # shared token tables; their defaults leave BM3's objective
        if not (uniformity >= 0 and bpr_weight >= 0):
            raise ValueError(f"BM3: uniformity and bpr_weight must be >= 0 (RunConfig.hparams), got {uniformity!r} "
                             f"and {bpr_weight!r}")
        self.uniformity, self.center_items, self.bpr_weight = uniformity, bool(center_items), bpr_weight
        self.predictor = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = nn.ModuleDict()
        for m in self.modalities:
            self.projections[m] = nn.Linear(self.features(m).shape[1], dim)
            nn.init.xavier_normal_(self.projections[m].weight)
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Online (n_users, d) users and (n_items, d) items: LightGCN mean + ego item vector."""
        items = self.item_repr()
        if self.center_items:
            items = items - items.mean(0, keepdim=True)
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
        u_pred, i_pred = self.predictor(u), self.predictor(i)
        graph = cos_loss(u_pred, i_target) + cos_loss(i_pred, u_target)
        modal = 0.0
        for m in self.modalities:
            h = project_rows(self.projections[m], self.features(m), pos)
            with torch.no_grad():
                h_target = dropout(h, self.dropout)
            h_online = self.predictor(h)
            modal = modal + cos_loss(h_online, i_target) + cos_loss(h_online, h_target)
        reg = (u_all.norm() + i_all.norm()) / self.n_items
        loss = graph + self.reg_weight * reg + self.cl_weight * modal
        if self.uniformity:
            spread = (uniformity_loss(self.predictor(i_all.index_select(0, torch.unique(pos))))
                      + uniformity_loss(self.predictor(u_all.index_select(0, torch.unique(users)))))
            loss = loss + self.uniformity * spread
        if self.bpr_weight:
            if neg is None:
                raise ValueError("BM3 with bpr_weight > 0 needs the sampled negatives: loss(users, pos, neg)")
            neg_pred = self.predictor(i_all.index_select(0, neg))
            loss = loss + self.bpr_weight * bpr_triplet_loss(u_pred, i_pred, neg_pred)
        return loss
