"""FREEDOM — Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023.

1. Frozen item-item graph (built once, before training): per modality the top-k cosine kNN graph of the raw
   features, D^-1/2 A D^-1/2 normalised; the graphs are summed with weights (image 0.1 / text 0.9 in MMRec;
   equal weights when the dataset's modalities are not exactly image + text).
2. Denoised user-item graph: every epoch keeps a (1 - dropout) sample of the interaction edges drawn with
   probability proportional to 1/sqrt(d_u d_i) (degree-sensitive edge pruning), re-normalised; evaluation uses
   the full graph.
3. h_i = S^{L_mm} e_i on the item-item graph; LightGCN (mean of layers 0..L_ui) on the pruned user-item graph;
   item vector = LightGCN_i + h_i, user vector = LightGCN_u.
4. Loss: BPR(u, i+, i-) + reg_weight * sum_m BPR(u, W_m x^m_{i+}, W_m x^m_{i-}) (modality-projection BPR terms).

The item-ID embedding e_i is ``item_repr``.
Defaults (MMRec ``FREEDOM.yaml``): dim 64, feat_embed_dim 64, knn_k 10, mm_image_weight 0.1, n_mm_layers 1,
n_ui_layers 2, dropout (edge-pruning ratio) grid {0.8, 0.9} -> 0.8 (20 % of the edges kept each epoch),
reg_weight grid {0, 1e-5, 1e-4, 1e-3} -> 1e-4 (untuned mid-grid value).
Deviations: (i) motor's default freezes the raw feature matrices (buffers) and trains only the projections W_m,
applied once per distinct item of the batch (Adam + backward on the raw matrices is a large share of MMRec's
epoch); ``train_features=True`` is MMRec's behaviour (``nn.Embedding.from_pretrained(freeze=False)``): the
matrices are trained too, through the projections in the modality BPR terms, their only use (the kNN graph is
built once from the original features either way). (ii) The kNN graph excludes
each item itself (MMRec's top-k includes it with similarity 1); it comes from the shared, disk-cached
``graph.cached_knn_graph``.
Option (not in FREEDOM): ``item_graph=False`` drops the h_i term, so the item vector is LightGCN_i alone (the
modality BPR terms stay). With MOTOR tokens e_i is already built from the item's content, which is what the
frozen kNN graph adds to an ID model; the option measures whether the two are redundant (reports/README.md).
"""
import torch
from torch import nn

from ..defaults import DIM
from .base import MultimodalBackbone
from .features import distinct_rows, project_distinct
from .graph import PrunedAdjacency, cached_knn_graph, layer_mean, propagate
from .losses import bpr_table_loss


def modality_weights(modalities: list[str], image_weight: float) -> dict[str, float]:
    """MMRec's image/text mix when the modalities are exactly image + text, else equal weights."""
    if sorted(modalities) == ["image", "text"]:
        return {"image": image_weight, "text": 1.0 - image_weight}
    return {m: 1.0 / len(modalities) for m in modalities}


# Search space (``motor.tune``): MMRec ``FREEDOM.yaml``, 2 x 4 = 8 points.
SEARCH_SPACE = {"dropout": [0.8, 0.9], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3]}


class FREEDOM(MultimodalBackbone):
    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM, knn_k: int = 10, mm_image_weight: float = 0.1,
                 n_mm_layers: int = 1, n_ui_layers: int = 2, dropout: float = 0.8, reg_weight: float = 1e-4,
                 train_features: bool = False, item_graph: bool = True):
        super().__init__(dataset, item_repr, dim, train_features=train_features)
        self.n_mm_layers, self.n_ui_layers, self.use_item_graph = n_mm_layers, n_ui_layers, bool(item_graph)
        self.dropout, self.reg_weight = dropout, reg_weight
        self.projections = nn.ModuleDict()
        for m in self.modalities:
            self.projections[m] = nn.Linear(self.features(m).shape[1], dim)
        weights = modality_weights(self.modalities, mm_image_weight)
        graphs = [weights[m] * cached_knn_graph(self.features(m), knn_k) for m in self.modalities]
        item_graph = graphs[0]
        for g in graphs[1:]:
            item_graph = item_graph + g
        self.register_buffer("item_graph", item_graph.coalesce(), persistent=False)
        self.graph = PrunedAdjacency(dataset.train, dropout)

    def on_epoch_start(self, generator):
        """Degree-sensitive edge pruning, drawn from ``generator`` (on CPU, then moved to the model's device)."""
        self.graph.resample(generator)

    def forward_graphs(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = self.item_repr()
        out = layer_mean(adj, torch.cat([self.user_emb, items]), self.n_ui_layers)
        users, item_vectors = out[: self.n_users], out[self.n_users:]
        if self.use_item_graph:
            item_vectors = item_vectors + propagate(self.item_graph, items, self.n_mm_layers)[-1]  # frozen kNN graph
        return users, item_vectors

    def embeddings(self):
        return self.forward_graphs(self.graph.full)

    def loss(self, users, pos, neg):
        u_all, i_all = self.forward_graphs(self.graph.pruned)
        base = bpr_table_loss(u_all, i_all, users, pos, neg)
        modal = 0.0
        rows, (p, n) = distinct_rows(self.n_items, pos, neg)  # each modality projects only these items
        for m in self.modalities:
            proj = project_distinct(self.projections[m], self.features(m), rows)
            modal = modal + bpr_table_loss(u_all, proj, users, p, n)
        return base + self.reg_weight * modal
