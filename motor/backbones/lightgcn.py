"""LightGCN — He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020.

E^(l+1) = D^-1/2 A D^-1/2 E^(l); final embedding = mean over layers 0..L; BPR loss + L2 on the ego embeddings.
Defaults (MMRec): dim 64, n_layers 2, reg_weight 1e-4.
Deviation: ``reg_form`` chooses the L2 term on the batch's ego rows. "motor" (default): the sum of squared row
norms over B (``losses.l2_reg``). "mmrec": MMRec's ``EmbLoss``, the unsquared Frobenius norms of the three (B, d)
ego batch matrices added and divided by B (``losses.emb_loss``), far weaker at the same reg_weight;
``reg_form="mmrec"`` reproduces MMRec's loss (up to its BPR's 1e-10 inside the log). MMRec's reg_weight values
(its grid, SEARCH_SPACE below) are on MMRec's scale: use them with ``reg_form="mmrec"``.
Parity with MMRec (``benchmarks/parity_mmrec.py``: ml100k, split "given", n_layers 1, reg_weight 1e-2,
``reg_form="mmrec"``): test Recall@20 / NDCG@20 0.1597 / 0.1176 (mean of seeds 0-2, best epochs 160-219) against
MMRec's single run 0.1483 / 0.1096 (+7.7 % / +7.3 %). The model is MMRec's: on an ml100k batch the loss and its
gradients equal a re-derivation of MMRec's LightGCN (mean of layers 0..L, D^-1/2 A D^-1/2 with MMRec's 1e-7, EmbLoss
on the ego rows) to 1e-11. The trainer differs from MMRec's in two details: negatives are drawn from all items, MMRec's
from the items with a training interaction (1,612 of ml100k's 1,682), and training stops after 20 evaluations
without improvement, MMRec's after 21. Neither explains the gap: with MMRec's negative pool and stopping rule (seed
0) the run stops at best epoch 193 with 0.1600 / 0.1210 (0.1596 / 0.1190 without). Test Recall@20 rises slowly
over ~200 epochs (seed 0: 0.138 at epoch 50, 0.146 at 100, 0.160 at 193) and first reaches MMRec's value at epoch
93, so MMRec's number matches a run stopped at about half motor's training length; the likely cause is where early
stopping fell in MMRec's one run (its best epoch is not recorded here), not a difference in the model.
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import Backbone
from .graph import layer_mean, layer_mean_rows, normalized_adjacency
from .losses import check_reg_form, emb_loss, joint_bpr_loss, joint_rows, l2_reg

# Search space (``motor.tune``): MMRec ``LightGCN.yaml``, 4 x 5 = 20 points. The reg_weight values are on MMRec's
# scale (its ``EmbLoss``, ``reg_form="mmrec"``); with the default "motor" form equal values are not equal
# regularisation (measured for BPR, see bpr.py).
SEARCH_SPACE = {"n_layers": [1, 2, 3, 4], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]}


class LightGCN(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, n_layers: int = 2, reg_weight: float = 1e-4,
                 reg_form: str = "motor"):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.n_layers, self.reg_weight = n_layers, reg_weight
        self.penalty = emb_loss if check_reg_form("LightGCN", reg_form) == "mmrec" else l2_reg
        self.register_buffer("adj", normalized_adjacency(dataset.train), persistent=False)

    def ego(self):
        return torch.cat([self.user_emb, self.item_repr()])

    def embeddings(self):
        out = layer_mean(self.adj, self.ego(), self.n_layers)
        return out[: self.n_users], out[self.n_users:]

    def loss(self, users, pos, neg):
        rows = joint_rows(self.n_users, users, pos, neg)  # only the batch rows of the layer mean are formed
        out_rows, ego_rows = layer_mean_rows(self.adj, self.ego(), self.n_layers, rows)
        return joint_bpr_loss(out_rows, ego_rows, self.reg_weight, self.penalty)
