"""VBPR — He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.

Item vector = [r_i || W f_i] where r_i comes from the item representation and f_i = concat of the item's modality
features (text, image, ...); the user vector is twice as wide ([gamma_u || theta_u]), as in MMRec. BPR loss + L2.
Defaults (MMRec): dim 64 (item representation) + 64 (content projection), reg_weight 1e-4.
Deviation: ``reg_form`` chooses the L2 term on the batch's user and (full, concatenated) item vectors. "motor"
(default): the sum of squared row norms over B (``losses.l2_reg``). "mmrec": MMRec's ``EmbLoss``, the unsquared
Frobenius norms of the three (B, 2d) batch matrices added and divided by B (``losses.emb_loss``), far weaker at the
same reg_weight; ``reg_form="mmrec"`` reproduces MMRec's loss (up to its BPR's 1e-10 inside the log). MMRec's
reg_weight values (its grid, SEARCH_SPACE below) are on MMRec's scale: use them with ``reg_form="mmrec"``.
Smaller differences from MMRec's VBPR: the projection's bias starts from torch's default uniform(+-1/sqrt(d_in))
(MMRec: zero; both draw the weight with variance 2 / (d_in + d)), and the features are concatenated in sorted
modality order (image, text; MMRec: text, image), which changes nothing but the column order of W.
Parity with MMRec (``benchmarks/parity_mmrec.py``: ml100k, split "given", reg_weight 2.0, ``reg_form="mmrec"``):
test Recall@20 / NDCG@20 0.1406 / 0.1014 (mean of seeds 0-2: 0.1375, 0.1385, 0.1458; best epochs 28, 36, 84)
against MMRec's single run 0.1524 / 0.1087 (-7.7 % / -6.7 %). The loss and its gradients equal a re-derivation of
MMRec's VBPR on an ml100k batch up to float rounding. The gap comes from early stopping:
valid Recall@20 stalls near 0.18 between epochs 20 and 60 with epoch-to-epoch swings of about 0.005, then rises
again, and two of the three seeds stopped on that plateau. A seed-0 run with MMRec's negative pool (items with a
training interaction), zero bias and 21-epoch stopping rule did not stop there (its valid curve tracks the default
run's, mean difference 0.001 over the first 49 epochs): test Recall@20 0.141 at epoch 44, 0.149 at 76, and at its
best valid epoch so far (117, cut by a time limit) 0.1474 / 0.1094, -3.3 % / +0.6 % from MMRec's. A single
VBPR run's result depends mostly on whether it survives the plateau; compare seeds (or a longer patience), not one
run.
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import Backbone
from .features import distinct_rows, project, project_distinct, project_rows, stacked_features
from .losses import bpr_table_loss, check_reg_form, emb_loss, l2_reg

# Search space (``motor.tune``): MMRec ``VBPR.yaml``, 7 points. The values are on MMRec's scale (its ``EmbLoss``,
# ``reg_form="mmrec"``); with the default "motor" form equal values are not equal regularisation (measured for
# BPR, see bpr.py).
SEARCH_SPACE = {"reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}


class VBPR(Backbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, reg_weight: float = 1e-4,
                 reg_form: str = "motor"):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dataset.n_users, 2 * dim)))
        self.register_buffer("features", stacked_features(dataset), persistent=False)
        self.proj = nn.Linear(self.features.shape[1], dim)
        nn.init.xavier_uniform_(self.proj.weight)
        self.reg_weight = reg_weight
        self.penalty = emb_loss if check_reg_form("VBPR", reg_form) == "mmrec" else l2_reg

    def items(self, index=None):
        content = project(self.proj, self.features) if index is None else project_rows(self.proj, self.features, index)
        return torch.cat([self.item_repr(index), content], dim=1)

    def embeddings(self):
        return self.user_emb, self.items()

    def loss(self, users, pos, neg):
        rows, (p, n) = distinct_rows(self.n_items, pos, neg)  # the items this batch reads (None: all), once each
        ids = self.item_repr() if rows is None else self.item_repr(rows)
        items = torch.cat([ids, project_distinct(self.proj, self.features, rows)], dim=1)
        return bpr_table_loss(self.user_emb, items, users, p, n, self.reg_weight, self.penalty)
