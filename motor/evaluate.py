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
        sub = mask[ub]
        if scores.device.type == "cpu" and scores.is_contiguous():
            # one numba pass per row: masking and selection together, ties in item order (kernels.topk_masked)
            from . import kernels

            sub.sort_indices()
            top = np.empty((len(ub), kk), dtype=np.int64)
            kernels.topk_masked(scores.numpy(), kk, sub.indptr.astype(np.int64), sub.indices.astype(np.int64), top)
            out[s:s + len(ub), :kk] = top
            continue
        sub = sub.tocoo()
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


def cold_candidates(dataset, split: str = "test") -> np.ndarray:
    """Item ids without train interactions that are held out in ``split`` (a cold_item split's cold test items)."""
    held_per_item = np.asarray(dataset.split(split).sum(0)).ravel()
    return np.flatnonzero((dataset.item_popularity == 0) & (held_per_item > 0))


def evaluate_cold_candidates(model, dataset, split: str = "test", ks=DEFAULT_KS, candidates: np.ndarray | None = None,
                             batch_users: int = 4096, device: str | torch.device = "cpu") -> EvalResult:
    """Cold-start papers' protocol: rank only the candidate items (default :func:`cold_candidates`).

    Users with at least one held-out candidate are evaluated; each user's scores over all candidates are ranked in
    full (no warm item competes; candidates among the user's train items are excluded), and Recall/NDCG@K are
    computed against the user's held-out candidates. ``metrics`` holds recall/ndcg@K, ``n_users`` and
    ``n_candidates``. Compare :func:`evaluate`'s "cold (0)" bucket, where cold items compete with every item.
    """
    import time

    t0 = time.perf_counter()
    held = dataset.split(split)
    cand = np.asarray(cold_candidates(dataset, split) if candidates is None else candidates, dtype=np.int64)
    is_cand = np.zeros(dataset.n_items, dtype=bool)
    is_cand[cand] = True
    users = np.flatnonzero(np.diff(held[:, cand].tocsr().indptr) > 0) if len(cand) else np.zeros(0, np.int64)
    k = max(ks)
    top = np.full((len(users), k), -1, dtype=np.int64)
    kk = min(k, len(cand))
    if len(users):
        cand_t = torch.as_tensor(cand, device=device)
        train_cand = dataset.train[:, cand].tocsr()
        with model.evaluating():
            for s in range(0, len(users), batch_users):
                ub = users[s:s + batch_users]
                scores = model.score(torch.as_tensor(ub, device=device)).float().index_select(1, cand_t)
                sub = train_cand[ub].tocoo()
                scores[torch.as_tensor(sub.row, device=scores.device),
                       torch.as_tensor(sub.col, device=scores.device)] = -float("inf")
                top[s:s + len(ub), :kk] = cand[scores.topk(kk, dim=1).indices.cpu().numpy()]
    per_user = metrics_from_topk(top, held, users, ks, item_mask=is_cand)
    metrics = {f"{m}@{k_}": float(per_user[f"{m}@{k_}"].mean()) if len(per_user) else float("nan")
               for k_ in ks for m in ("recall", "ndcg")}
    metrics["n_users"] = float(len(per_user))
    metrics["n_candidates"] = float(len(cand))
    return EvalResult(split, metrics, per_user, seconds=time.perf_counter() - t0)
