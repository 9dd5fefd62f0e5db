"""Full-ranking evaluation (the field's protocol, as in MMRec).

For every user with held-out items in the evaluated split, all items are scored, the user's **training** items are
masked (set to -inf; validation items are *not* masked when testing — MMRec's behaviour, kept for comparable
numbers; pass ``mask=("train", "valid")`` to mask them too), and the top-K list is compared with the held-out set:

* Recall@K = hits@K / |held-out items of the user|
* NDCG@K   = sum_{r<K, hit} 1/log2(r+2) / sum_{r<min(K, |held-out|)} 1/log2(r+2)   (binary gains)
* Precision@K = hits@K / K;  Hit@K = 1[hits@K > 0]

Tied scores never decide a result (``ties="expected"``, the default): every metric is its expected value when
tied items are ordered uniformly at random (McSherry & Najork, ECIR 2008). For a tie group of g items that starts
after a items and holds r held-out items, each of them is in the top K with probability clip((K - a) / g, 0, 1)
and contributes the mean of the discounts 1/log2(p+2) over the group's positions p < K; Hit@K is 1 minus the
hypergeometric chance that none of the r lands in the K - a kept positions. Relabelling items therefore never
changes a metric. ``ties="first"`` (lower item id first, the rule before tie-aware metrics) is kept for
comparison only.

Metrics are means over evaluated users; per-user values are kept so results can be sliced (popularity buckets,
paired significance tests).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .defaults import COLD

DEFAULT_KS = (10, 20)
DEFAULT_BUCKETS = (5, 10, 20, 50)  # upper edges -> [0-5], [6-10], [11-20], [21-50], >50
TIES = ("expected", "first")


@dataclass
class EvalResult:
    """``metrics``: {"recall@20": mean, ...}; ``per_user``: one row per evaluated user; ``buckets``: per-bucket;
    ``hit_profile``: expected hits per user at each rank position, by popularity bucket (:func:`hit_profile`)."""

    split: str
    metrics: dict[str, float]
    per_user: pd.DataFrame
    buckets: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    hit_profile: pd.DataFrame = field(default_factory=pd.DataFrame)

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


@dataclass
class HeldRanks:
    """Where each evaluated user's held-out items rank (see :func:`motor.kernels.held_ranks`).

    ``users`` (n,); held entries in CSR form over them: ``indptr`` (n + 1,), ``items``, ``above`` (items ranked
    strictly higher, -1 = beyond the top k), ``tied`` (size of the item's tie group), ``first`` (rank when ties
    go to the lower id, -1 beyond k); ``top_scores`` (n, k + 1): each user's k + 1 best unmasked scores.
    """

    users: np.ndarray
    indptr: np.ndarray
    items: np.ndarray
    above: np.ndarray
    tied: np.ndarray
    first: np.ndarray
    top_scores: np.ndarray

    def tie_at(self, k: int) -> np.ndarray:
        """Per user: whether the k-th and (k+1)-th best scores are equal (a tie straddles the cut-off)."""
        a, b = self.top_scores[:, k - 1], self.top_scores[:, k]
        return (a == b) & np.isfinite(a)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}: expected one of {', '.join(map(repr, TIES))} ('expected' averages over "
                         "every order of tied scores; 'first' puts the lower item id first, for comparison only).")


def _empty_ranks(k: int) -> HeldRanks:
    z = np.zeros(0, np.int64)
    return HeldRanks(z, np.zeros(1, np.int64), z, z, z, z, np.zeros((0, k + 1), np.float32))


def _ranks_of_rows(scores: np.ndarray, users: np.ndarray, held: sp.csr_matrix, mask: sp.csr_matrix,
                   k: int) -> HeldRanks:
    """:class:`HeldRanks` for score rows ``scores`` (len(users), m); ``held``/``mask``: the same rows as CSR."""
    from . import kernels

    held, mask = held.tocsr(), mask.tocsr()
    held.sort_indices()
    mask.sort_indices()
    held_ptr, held_idx = held.indptr.astype(np.int64), held.indices.astype(np.int64)
    above, tied, first = (np.empty(held.nnz, np.int64) for _ in range(3))
    top_scores = np.empty((len(users), k + 1), dtype=scores.dtype)
    kernels.held_ranks(scores, k, mask.indptr.astype(np.int64), mask.indices.astype(np.int64), held_ptr, held_idx,
                       top_scores, above, tied, first)
    return HeldRanks(np.asarray(users, np.int64), held_ptr, held_idx, above, tied, first, top_scores)


def _concat_ranks(parts: list[HeldRanks], k: int) -> HeldRanks:
    if not parts:
        return _empty_ranks(k)
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.indptr[-1] for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + o for p, o in zip(parts, offsets)])
    cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "above", "tied", "first")}
    return HeldRanks(indptr=indptr, top_scores=np.concatenate([p.top_scores for p in parts]), **cat)


def rank_held(model, users: np.ndarray, held: sp.csr_matrix, mask: sp.csr_matrix, k: int,
              batch_users: int = 4096, device: str | torch.device = "cpu",
              columns: np.ndarray | None = None) -> HeldRanks:
    """Score ``users`` with ``model`` (call inside ``model.evaluating()``) and rank their ``held`` items among the
    items not in ``mask`` (both CSR over all users). ``columns``: rank only these items (held and mask are then
    restricted to them and ``items`` are positions in ``columns``)."""
    cols_t = None if columns is None else torch.as_tensor(np.asarray(columns, np.int64), device=device)
    if columns is not None:
        held, mask = held[:, columns].tocsr(), mask[:, columns].tocsr()
    parts = []
    for s in range(0, len(users), batch_users):
        ub = users[s:s + batch_users]
        scores = model.score(torch.as_tensor(ub, device=device)).float()
        if cols_t is not None:
            scores = scores.index_select(1, cols_t)
        scores = scores.cpu().contiguous().numpy()  # the ranking kernel runs on CPU (a no-op copy there)
        parts.append(_ranks_of_rows(scores, ub, held[ub], mask[ub], k))
    return _concat_ranks(parts, k)


def ranks_from_scores(scores: np.ndarray, held: sp.csr_matrix, k: int, exclude: sp.csr_matrix | None = None,
                      users: np.ndarray | None = None) -> HeldRanks:
    """:class:`HeldRanks` of a dense score matrix (users x items) for the rows with held-out items."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"scores: expected a 2-d float array (users x items), got shape {scores.shape} and dtype "
                         f"{scores.dtype}.")
    held = sp.csr_matrix(held)
    exclude = sp.csr_matrix(held.shape, dtype=np.float32) if exclude is None else sp.csr_matrix(exclude)
    for name, m in (("held", held), ("exclude", exclude)):
        if m.shape != scores.shape:
            raise ValueError(f"{name}: shape {m.shape} differs from scores {scores.shape}; both are users x items.")
    if users is None:
        users = np.flatnonzero(np.diff(held.indptr) > 0)
    rows = np.ascontiguousarray(scores[users])
    return _ranks_of_rows(rows, users, held[users], exclude[users], k)


def metrics_from_ranks(ranks: HeldRanks, ks=DEFAULT_KS, ties: str = "expected",
                       item_mask: np.ndarray | None = None) -> pd.DataFrame:
    """Per-user Recall/NDCG/Precision/Hit@K from :class:`HeldRanks` (one row per user with held-out items).

    ``ties="expected"``: expected values over random orders of tied scores (module docstring); ``"first"``: the
    lower item id first. ``item_mask`` (bool per item) restricts the held-out set (popularity buckets); users
    whose restricted set is empty are left out.
    """
    _check_ties(ties)
    n = len(ranks.users)
    row = np.repeat(np.arange(n), np.diff(ranks.indptr))
    sel = np.ones(len(row), bool) if item_mask is None else np.asarray(item_mask, bool)[ranks.items]
    n_held = np.bincount(row[sel], minlength=n)
    keep = n_held > 0
    if ties == "first":
        a, g = ranks.first, (ranks.first >= 0).astype(np.int64)
    else:
        a, g = ranks.above, ranks.tied
    reach = sel & (a >= 0)
    row, a, g = row[reach], a[reach], g[reach]
    data = {"user": ranks.users[keep], "n_held": n_held[keep].astype(np.int64)}
    for k in ks:
        if k > ranks.top_scores.shape[1] - 1:
            raise ValueError(f"ks={tuple(ks)}: K={k} is deeper than the ranking ({ranks.top_scores.shape[1] - 1}).")
        cum = np.concatenate([[0.0], np.cumsum(_dcg_discounts(k))])  # cum[p] = discount sum of positions < p
        lo, hi = np.minimum(a, k), np.minimum(a + g, k)
        p_in = (hi - lo) / g  # share of the tie group's positions that fall inside the top k
        e_disc = (cum[hi] - cum[lo]) / g  # mean discount over those positions (0 outside)
        hits = np.bincount(row, weights=p_in, minlength=n)
        dcg = np.bincount(row, weights=e_disc, minlength=n)
        # Hit@K: certain when a held item's whole group is inside; else 1 - P(none of the straddling group's r
        # held items lands in its k - a kept positions), the hypergeometric zero.
        certain = np.bincount(row[a + g <= k], minlength=n) > 0
        straddle = (a < k) & (a + g > k)
        r_cnt = np.bincount(row[straddle], minlength=n)
        g_row = np.ones(n)
        m_row = np.zeros(n)
        g_row[row[straddle]] = g[straddle]
        m_row[row[straddle]] = k - a[straddle]
        p_none = np.ones(n)
        for j in range(int(r_cnt.max()) if n else 0):
            on = j < r_cnt  # rows whose group still has a j-th held item
            p_none[on] *= np.clip((g_row[on] - m_row[on] - j) / (g_row[on] - j), 0.0, 1.0)
        hit = np.where(certain, 1.0, np.where(r_cnt > 0, 1.0 - p_none, 0.0))
        idcg = np.cumsum(_dcg_discounts(k))[np.minimum(n_held, k) - 1]
        data[f"recall@{k}"] = hits[keep] / n_held[keep]
        data[f"ndcg@{k}"] = dcg[keep] / idcg[keep]
        data[f"precision@{k}"] = hits[keep] / k
        data[f"hit@{k}"] = hit[keep]
    return pd.DataFrame(data)


def hit_profile(ranks: HeldRanks, k: int, groups: list[tuple[str, np.ndarray]], ties: str = "expected") -> pd.DataFrame:
    """Where in the top ``k`` the hits land: for each (group label, position p < k) the expected number of held-out
    items at rank p per evaluated user, over the held items of that group (``groups``: (label, bool item mask)).

    Summed over positions, a group's hits per user; weighted by the discounts, its share of DCG. Columns: bucket,
    position, hits.
    """
    _check_ties(ties)
    a, g = (ranks.first, (ranks.first >= 0).astype(np.int64)) if ties == "first" else (ranks.above, ranks.tied)
    n_users = max(len(ranks.users), 1)
    frames = []
    for label, item_mask in groups:
        sel = (a >= 0) & np.asarray(item_mask, bool)[ranks.items] & (a < k)
        lo, hi, w = a[sel], np.minimum(a[sel] + g[sel], k), 1.0 / g[sel]
        # each held item is at every position of its tie group with probability 1/g: a difference array
        delta = np.bincount(lo, weights=w, minlength=k + 1) - np.bincount(hi, weights=w, minlength=k + 1)
        frames.append(pd.DataFrame({"bucket": label, "position": np.arange(k),
                                    "hits": np.cumsum(delta)[:k] / n_users}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["bucket", "position", "hits"])


def tie_shares(ranks: HeldRanks, ks=DEFAULT_KS) -> dict[str, float]:
    """``{"tie_share@K": share of ranked users whose K-th and (K+1)-th best scores are equal}``."""
    n = len(ranks.users)
    return {f"tie_share@{k}": float(ranks.tie_at(k).mean()) if n else float("nan") for k in ks}


def metrics_from_scores(scores: np.ndarray, held, ks=DEFAULT_KS, exclude=None, ties: str = "expected") -> dict:
    """Mean Recall/NDCG/Precision/Hit@K over the users (rows) with held-out items, from any score matrix.

    ``scores``: dense (users x items) float array; ``held`` and ``exclude`` (optional): sparse or dense 0/1
    matrices of the same shape (held-out items; items never ranked, e.g. training items). ``ties``: "expected"
    (tied scores in random order, the default) or "first" (lower item id first). Returns e.g.
    ``{"recall@20": ..., "ndcg@20": ..., "precision@20": ..., "hit@20": ..., "n_users": ...}``.
    """
    _check_ties(ties)
    ks = tuple(int(k) for k in ks)
    ranks = ranks_from_scores(scores, held, max(ks), exclude)
    per_user = metrics_from_ranks(ranks, ks, ties)
    out = per_user.drop(columns=["user", "n_held"]).mean().to_dict() if len(per_user) else {}
    out["n_users"] = float(len(per_user))
    return out


def evaluate(model, dataset, split: str = "valid", ks=DEFAULT_KS, mask=("train",), buckets=DEFAULT_BUCKETS,
             batch_users: int = 4096, device: str | torch.device = "cpu", ties: str = "expected") -> EvalResult:
    """Full-ranking evaluation of ``model`` on ``dataset.<split>``; popularity buckets and cold items included.

    ``metrics`` also holds ``tie_share@K``: the share of evaluated users with a tie across the K-th position."""
    _check_ties(ties)
    t0 = time.perf_counter()
    held = dataset.split(split)
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    full_mask = dataset.train
    for s in mask:
        if s != "train":
            full_mask = full_mask + dataset.split(s)
    with model.evaluating():
        ranks = rank_held(model, users, held, full_mask.tocsr(), max(ks), batch_users, device)
    per_user = metrics_from_ranks(ranks, ks, ties)
    metrics = per_user.drop(columns=["user", "n_held"]).mean().to_dict() if len(per_user) else {}
    metrics["n_users"] = float(len(per_user))
    metrics.update(tie_shares(ranks, ks))
    pop = dataset.item_popularity
    brows = []
    profile = pd.DataFrame()
    if buckets:
        labels = bucket_labels(buckets)
        which = item_buckets(pop, buckets)
        groups = [(lab, which == b) for b, lab in enumerate(labels)]
        if (pop == 0).any():
            groups.append((COLD, pop == 0))
        profile = hit_profile(ranks, max(ks), [("all", np.ones(len(pop), bool))] + groups, ties)
        n_test_items = np.asarray(held.sum(0)).ravel()
        for lab, item_mask in groups:
            pu = metrics_from_ranks(ranks, ks, ties, item_mask)
            row = {"bucket": lab, "n_items": int(item_mask.sum()), "n_heldout": int(n_test_items[item_mask].sum()),
                   "n_users": len(pu)}
            for k in ks:
                for m in ("recall", "ndcg"):
                    row[f"{m}@{k}"] = float(pu[f"{m}@{k}"].mean()) if len(pu) else float("nan")
            brows.append(row)
    return EvalResult(split, metrics, per_user, pd.DataFrame(brows), time.perf_counter() - t0, profile)


def cold_candidates(dataset, split: str = "test") -> np.ndarray:
    """Item ids without train interactions that are held out in ``split`` (a cold_item split's cold test items)."""
    held_per_item = np.asarray(dataset.split(split).sum(0)).ravel()
    return np.flatnonzero((dataset.item_popularity == 0) & (held_per_item > 0))


def evaluate_cold_candidates(model, dataset, split: str = "test", ks=DEFAULT_KS, candidates: np.ndarray | None = None,
                             batch_users: int = 4096, device: str | torch.device = "cpu",
                             ties: str = "expected") -> EvalResult:
    """Cold-start papers' protocol: rank only the candidate items (default :func:`cold_candidates`).

    Users with at least one held-out candidate are evaluated; each user's scores over all candidates are ranked in
    full (no warm item competes; candidates among the user's train items are excluded), and Recall/NDCG@K are
    computed against the user's held-out candidates. ``metrics`` holds recall/ndcg@K, ``n_users`` and
    ``n_candidates``. Compare :func:`evaluate`'s "cold (0)" bucket, where cold items compete with every item.
    """
    _check_ties(ties)
    t0 = time.perf_counter()
    held = dataset.split(split)
    cand = np.asarray(cold_candidates(dataset, split) if candidates is None else candidates, dtype=np.int64)
    users = np.flatnonzero(np.diff(held[:, cand].tocsr().indptr) > 0) if len(cand) else np.zeros(0, np.int64)
    if len(users):
        with model.evaluating():
            ranks = rank_held(model, users, held, dataset.train, max(ks), batch_users, device, columns=cand)
    else:
        ranks = _empty_ranks(max(ks))
    per_user = metrics_from_ranks(ranks, ks, ties)
    metrics = {f"{m}@{k_}": float(per_user[f"{m}@{k_}"].mean()) if len(per_user) else float("nan")
               for k_ in ks for m in ("recall", "ndcg")}
    metrics["n_users"] = float(len(per_user))
    metrics["n_candidates"] = float(len(cand))
    return EvalResult(split, metrics, per_user, seconds=time.perf_counter() - t0)
