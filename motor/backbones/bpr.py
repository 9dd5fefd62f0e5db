"""BPR-MF — Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.

y_ui = e_u . r_i with r_i from the item representation; loss = BPR + reg * (|e_u|^2 + |r_i|^2 + |r_j|^2) / B.
Defaults (MMRec): dim 64, reg_weight 1e-4.
Deviation: ``reg_form`` chooses the L2 term. "motor" (default): the sum of squared row norms over B, as above.
"mmrec": MMRec's ``EmbLoss``, the unsquared Frobenius norms of the three (B, d) batch matrices added and divided by
B (``losses.emb_loss``), a far weaker penalty at the same reg_weight; ``reg_form="mmrec"`` reproduces MMRec's loss
(up to its BPR's 1e-10 inside the log). MMRec's reg_weight values (its grid, SEARCH_SPACE below) are on MMRec's
scale: use them with ``reg_form="mmrec"``. At MMRec's reg_weight 0.1 on ml100k (split "given", seed 0;
``benchmarks/parity_mmrec.py``) the "motor" form stops at epoch 2 with test Recall@20 0.0859 / NDCG@20 0.0737
(MMRec: 0.1574 / 0.1164), the "mmrec" form gets 0.1590 / 0.1158.
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import Backbone
from .losses import bpr_table_loss, check_reg_form, emb_loss, l2_reg

# Search space (``motor.tune``): MMRec ``BPR.yaml``, 7 points. The values are on MMRec's scale (its penalty,
# ``reg_form="mmrec"``); with the default "motor" form equal values are not equal regularisation.
SEARCH_SPACE = {"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}


class BPR(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, reg_weight: float = 1e-4,
                 reg_form: str = "motor"):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, dim)))
        self.reg_weight = reg_weight
        self.penalty = emb_loss if check_reg_form("BPR", reg_form) == "mmrec" else l2_reg

    def embeddings(self):
        return self.user_emb, self.item_repr()

    def loss(self, users, pos, neg):
        items, (p, n) = self.item_repr.rows(pos, neg)  # the item vectors this batch needs, and where they are
        return bpr_table_loss(self.user_emb, items, users, p, n, self.reg_weight, self.penalty)
