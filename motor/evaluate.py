"""Full-ranking evaluation (the field's protocol, as in MMRec).

For every user with held-out items in the evaluated split, all items are scored, the user's **training** items are
masked (set to -inf; validation items are *not* masked when testing — MMRec's behaviour, kept for comparable
numbers; pass ``mask=("train", "valid")`` to mask them too), and the top-K list is compared with the held-out set:

* Recall@K = hits@K / |held-out items of the user|
* NDCG@K   = sum_{r<K, hit} 1/log2(r+2) / sum_{r<min(K, |held-out|)} 1/log2(r+2)   (binary gains)
* Precision@K = hits@K / K;  Hit@K = 1[hits@K > 0]

Metrics are means over evaluated users; per-user values are kept so results can be sliced (popularity buckets,
paired significance tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

DEFAULT_KS = (10, 20)
DEFAULT_BUCKETS = (5, 10, 20, 50)  # upper edges -> [0-5], [6-10], [11-20], [21-50], >50


@dataclass
class EvalResult:
    """``metrics``: {"recall@20": mean, ...}; ``per_user``: one row per evaluated user; ``buckets``: per-bucket."""

    split: str
    metrics: dict[str, float]
    per_user: pd.DataFrame
    buckets: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def bucket_labels(edges=DEFAULT_BUCKETS) -> list[str]:
    lo = [0] + [e + 1 for e in edges]
    return [f"{a}-{b}" for a, b in zip(lo, edges)] + [f">{edges[-1]}"]


def item_buckets(item_popularity: np.ndarray, edges=DEFAULT_BUCKETS) -> np.ndarray:
    """Bucket index per item from its train interaction count (0 = [0-edges[0]], ..., len(edges) = above)."""
    return np.searchsorted(np.asarray(edges), item_popularity, side="left")


def _dcg_discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def topk_items(model, users: np.ndarray, train: sp.csr_matrix, k: int, mask_extra: sp.csr_matrix | None = None,
               batch_users: int = 4096, device: str | torch.device = "cpu") -> np.ndarray:
    """Top-k item ids (len(users), k) with each user's masked items excluded. Call inside ``model.evaluating()``."""
    out = np.full((len(users), k), -1, dtype=np.int64)  # -1 pads lists when k > n_items
    kk = min(k, train.shape[1])
    mask = train if mask_extra is None else (train + mask_extra).tocsr()
    for s in range(0, len(users), batch_users):
        ub = users[s:s + batch_users]
        scores = model.score(torch.as_tensor(ub, device=device)).float()
        sub = mask[ub].tocoo()
        scores[torch.as_tensor(sub.row, device=scores.device), torch.as_tensor(sub.col, device=scores.device)] = \
            -float("inf")
        out[s:s + len(ub), :kk] = scores.topk(kk, dim=1).indices.cpu().numpy()
    return out


def metrics_from_topk(top: np.ndarray, held: sp.csr_matrix, users: np.ndarray, ks=DEFAULT_KS,
                      item_mask: np.ndarray | None = None) -> pd.DataFrame:
    """Per-user metrics from top-K lists. ``item_mask`` (bool per item) restricts the held-out set (buckets).

    Users whose (restricted) held-out set is empty are left out.
    """
    rows = held[users].tocsr()
    if item_mask is not None:
        rows = rows.multiply(item_mask[None, :].astype(np.float32)).tocsr()
        rows.eliminate_zeros()
    rows.sort_indices()
    n_held = np.diff(rows.indptr)
    keep = n_held > 0
    users, top, rows, n_held = users[keep], top[keep], rows[keep], n_held[keep]
    hits = _membership(rows, top)
    disc = _dcg_discounts(top.shape[1])
    data = {"user": users, "n_held": n_held.astype(np.int64)}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        idcg = np.cumsum(disc[:k])[np.minimum(n_held, k).astype(int) - 1]
        data[f"recall@{k}"] = n_hit / n_held
        data[f"ndcg@{k}"] = (h * disc[:k]).sum(1) / idcg
        data[f"precision@{k}"] = n_hit / k
        data[f"hit@{k}"] = (n_hit > 0).astype(float)
    return pd.DataFrame(data)


def _membership(rows: sp.csr_matrix, top: np.ndarray) -> np.ndarray:
    """hits[r, j] = top[r, j] is in row r of ``rows`` (vectorised with one searchsorted)."""
    n_cols = rows.shape[1]
    keys = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr)) * n_cols + rows.indices
    query = np.arange(len(top), dtype=np.int64)[:, None] * n_cols + top
    pos = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
    return ((keys[pos] == query) & (top >= 0)) if len(keys) else np.zeros(top.shape, bool)


def evaluate(model, dataset, split: str = "valid", ks=DEFAULT_KS, mask=("train",), buckets=DEFAULT_BUCKETS,
             batch_users: int = 4096, device: str | torch.device = "cpu") -> EvalResult:
    """Full-ranking evaluation of ``model`` on ``dataset.<split>``; popularity buckets and cold items included."""
    import time

    t0 = time.perf_counter()
    held = dataset.split(split)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    extra = None
    for s in mask:
        if s != "train":
            extra = dataset.split(s) if extra is None else extra + dataset.split(s)
    with model.evaluating():
        top = topk_items(model, users, dataset.train, max(ks), extra, batch_users, device)
    per_user = metrics_from_topk(top, held, users, ks)
    metrics = per_user.drop(columns=["user", "n_held"]).mean().to_dict() if len(per_user) else {}
    metrics["n_users"] = float(len(per_user))
    pop = dataset.item_popularity
    brows = []
    if buckets:
        labels = bucket_labels(buckets)
        which = item_buckets(pop, buckets)
        groups = [(lab, which == b) for b, lab in enumerate(labels)]
        if (pop == 0).any():
            groups.append(("cold (0)", pop == 0))
        n_test_items = np.asarray(held.sum(0)).ravel()
        for lab, item_mask in groups:
            pu = metrics_from_topk(top, held, users, ks, item_mask)
            row = {"bucket": lab, "n_items": int(item_mask.sum()), "n_heldout": int(n_test_items[item_mask].sum()),
                   "n_users": len(pu)}
            for k in ks:
                for m in ("recall", "ndcg"):
                    row[f"{m}@{k}"] = float(pu[f"{m}@{k}"].mean()) if len(pu) else float("nan")
            brows.append(row)
    return EvalResult(split, metrics, per_user, pd.DataFrame(brows), time.perf_counter() - t0)
