"""LayerGCN — Zhou et al., "Layer-refined Graph Convolutional Networks for Recommendation", ICDE 2023.

Each propagated layer is refined by its cosine similarity to the ego layer, E^(l+1) <- cos(A E^(l), E^0) * A E^(l);
the output is the sum of the refined layers 1..L. Training uses degree-sensitive edge dropout: each epoch keeps a
(1 - dropout) sample of the edges drawn with weight 1/sqrt(d_u d_i). BPR loss + L2 on the ego embeddings.
Defaults (MMRec): dim 64, n_layers 4, dropout 0.1, reg_weight 1e-4 (MMRec grid 1e-2..1e-5).
Deviation: ``reg_form`` chooses the loss's form. "motor" (default): BPR averaged over the batch + reg_weight x the
sum of squared ego row norms over B (``losses.l2_reg``). "mmrec": MMRec's LayerGCN loss, BPR summed over the batch
+ reg_weight x half the sum of squares of the ego rows, not divided by B (its ``L2Loss``,
``losses.half_squared_l2``); ``reg_form="mmrec"`` reproduces it. The "mmrec" loss is B times the "motor" loss at
half the reg_weight, so under Adam (nearly invariant to the loss's scale) MMRec's reg_weight r acts about like r / 2
in the "motor" form. MMRec's reg_weight values (its grid, SEARCH_SPACE below) are on MMRec's scale: use them with
``reg_form="mmrec"``.
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import Backbone
from .graph import PrunedAdjacency, spmm
from .losses import check_reg_form, half_squared_l2, joint_bpr_loss, joint_rows

_EPS = 1e-8  # F.cosine_similarity's default: each norm is clamped at eps


class _Refine(torch.autograd.Function):
    """y = cos(h, e) * h per row (``F.cosine_similarity(h, e, dim=-1).unsqueeze(1) * h``) with a hand-written
    backward: with c = h.e / (|h| |e|) and dc = dy.h, dh = c dy + dc (e / (|h| |e|) - c h / |h|^2) and
    de = dc (h / (|h| |e|) - c e / |e|^2), a clamped norm being a constant. ``e_norm`` (n, 1) = |e| (unclamped),
    computed once for every layer. Autograd's version of the same (norms, clamps, divisions and their backward)
    was about three quarters of a LayerGCN step."""

    @staticmethod
    def forward(ctx, h, e, e_norm):
        nh_raw = h.norm(dim=1, keepdim=True)
        nh, ne = nh_raw.clamp_min(_EPS), e_norm.clamp_min(_EPS)
        c = (h * e).sum(1, keepdim=True).div_(nh * ne)
        ctx.save_for_backward(h, e, nh, ne, c, nh_raw > _EPS, e_norm > _EPS)
        return h * c

    @staticmethod
    def backward(ctx, dy):
        h, e, nh, ne, c, h_free, e_free = ctx.saved_tensors
        dc = (dy * h).sum(1, keepdim=True)
        k = dc / (nh * ne)
        kc = dc * c
        dh = torch.addcmul(dy * c, e, k).addcmul_(h, kc / (nh * nh) * h_free, value=-1.0)
        de = torch.addcmul(h * k, e, kc / (ne * ne) * e_free, value=-1.0) if ctx.needs_input_grad[1] else None
        return dh, de, None


def refine(h: torch.Tensor, ego: torch.Tensor, ego_norm: torch.Tensor | None = None) -> torch.Tensor:
    """LayerGCN's layer refinement: each row of ``h`` scaled by its cosine similarity to the same row of ``ego``
    (``ego_norm``: its row norms, (n, 1), when already computed)."""
    if ego_norm is None:
        ego_norm = ego.detach().norm(dim=1, keepdim=True)
    return _Refine.apply(h, ego, ego_norm)


# Search space (``motor.tune``): MMRec ``LayerGCN.yaml``, 1 x 3 x 4 = 12 points. The reg_weight values are on
# MMRec's scale (``reg_form="mmrec"``); in the default "motor" form a value acts about like twice that value in
# MMRec's (see the deviation above).
SEARCH_SPACE = {"n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]}


class LayerGCN(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, n_layers: int = 4, dropout: float = 0.1,
                 reg_weight: float = 1e-4, reg_form: str = "motor"):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.n_layers, self.dropout, self.reg_weight = n_layers, dropout, reg_weight
        self.mmrec_loss = check_reg_form("LayerGCN", reg_form) == "mmrec"
        self.graph = PrunedAdjacency(dataset.train, dropout)

    def on_epoch_start(self, generator):
        self.graph.resample(generator)

    def _forward(self, adj):
        ego = torch.cat([self.user_emb, self.item_repr()])
        h, layers = ego, []
        ego_norm = ego.detach().norm(dim=1, keepdim=True)
        for _ in range(self.n_layers):
            h = refine(spmm(adj, h), ego, ego_norm)
            layers.append(h)
        return ego, sum(layers[1:], layers[0])

    def embeddings(self):
        _, out = self._forward(self.graph.full)
        return out[: self.n_users], out[self.n_users:]

    def loss(self, users, pos, neg):
        ego, out = self._forward(self.graph.pruned)
        rows = joint_rows(self.n_users, users, pos, neg)
        if self.mmrec_loss:  # MMRec's: summed BPR + reg_weight x half the squared norms
            return joint_bpr_loss(out.index_select(0, rows), ego.index_select(0, rows), self.reg_weight,
                                  half_squared_l2, bpr_sum=True)
        return joint_bpr_loss(out.index_select(0, rows), ego.index_select(0, rows), self.reg_weight)
