"""Item neighbours: items sharing tokens, nearest learned vectors, text search, 2-D projections (UMAP, PCA)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def shared_token_neighbours(token_ids: dict[str, np.ndarray], item: int, top: int = 5,
                            modalities=None) -> pd.DataFrame:
    """Items sharing the most tokens with ``item`` (ties broken by item id): columns item, shared, per modality."""
    mods = modalities or sorted(token_ids)
    per = {m: (token_ids[m] == token_ids[m][item][None]).sum(1) for m in mods}
    total = sum(per.values())
    total[item] = -1
    order = np.lexsort((np.arange(len(total)), -total))[:top]
    return pd.DataFrame({"item": order, "shared": total[order], **{f"shared_{m}": per[m][order] for m in mods}})


def vector_neighbours(vectors: np.ndarray, item: int, top: int = 5) -> pd.DataFrame:
    """Nearest items by cosine similarity of learned item vectors."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v[item]
    sim[item] = -np.inf
    order = np.argsort(-sim, kind="stable")[:top]
    return pd.DataFrame({"item": order, "cosine": sim[order]})


def search_items(item_text: list[str] | None, query: str, limit: int = 20) -> list[int]:
    """Item ids whose text contains ``query`` as a phrase, else every word of it (case-insensitive); an integer
    query is an item id."""
    q = query.strip()
    if q.isdigit():
        return [int(q)]
    if not item_text or not q:
        return []
    low = [t.lower() for t in item_text]
    phrase = [i for i, t in enumerate(low) if q.lower() in t]
    if phrase:
        return phrase[:limit]
    words = q.lower().split()
    return [i for i, t in enumerate(low) if all(w in t for w in words)][:limit]


def case_study(ds, token_ids: dict[str, np.ndarray], n_queries: int = 4, seed: int = 0, top: int = 4,
               width: int = 100) -> pd.DataFrame:
    """Paper Fig. 5: ``n_queries`` random items (``seed``) and the ``top`` items sharing most tokens with each:
    columns query, item, shared, text (the query's own row has item = query and shared = NaN)."""
    text = ds.item_text or [f"item {j}" for j in ds.item_id(np.arange(ds.n_items))]
    rows = []
    for q in np.random.default_rng(seed).choice(ds.n_items, size=min(n_queries, ds.n_items), replace=False):
        qid = int(ds.item_id(q))  # the file's itemIDs, also for thinned (re-indexed) data
        rows.append({"query": qid, "item": qid, "shared": np.nan, "text": text[q][:width]})
        for r in shared_token_neighbours(token_ids, int(q), top=top).itertuples():
            rows.append({"query": qid, "item": int(ds.item_id(r.item)), "shared": r.shared,
                         "text": text[r.item][:width]})
    return pd.DataFrame(rows)


def shared_tokens_by_neighbours(token_ids: dict[str, np.ndarray], vectors: dict[str, np.ndarray],
                                top: int = 5) -> pd.DataFrame:
    """How many tokens (of all modalities' positions) an item shares on average with its ``top`` nearest items
    by cosine of each learned representation, and with a random other item (exact: over all pairs)."""
    codes = np.concatenate([token_ids[m] for m in sorted(token_ids)], axis=1)
    n, n_pos = codes.shape
    rows = []
    for name, v in vectors.items():
        unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argpartition(-sim, top - 1, axis=1)[:, :top]
        shared = (codes[nearest] == codes[:, None, :]).sum(-1)
        rows.append({"neighbours": f"{top} nearest by {name} vector", "mean_shared_tokens": float(shared.mean())})
    same = sum(int((c * (c - 1)).sum()) for c in (np.bincount(codes[:, p]) for p in range(n_pos)))
    rows.append({"neighbours": "a random other item", "mean_shared_tokens": same / (n * (n - 1))})
    out = pd.DataFrame(rows).set_index("neighbours")
    out["of_positions"] = n_pos
    return out


def umap_2d(vectors: np.ndarray, seed: int = 0, n_neighbors: int = 15, max_points: int | None = None) -> np.ndarray:
    """2-D UMAP of item vectors (cosine metric); ``max_points`` keeps it fast in CI (first call JITs ~40 s)."""
    import umap

    x = vectors if max_points is None else vectors[:max_points]
    # one job: a seeded UMAP runs single-threaded anyway and warns when asked for more
    return umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed, n_jobs=1).fit_transform(x)


def project_2d(vectors: dict[str, np.ndarray], method: str = "umap", seed: int = 0) -> dict[str, np.ndarray]:
    """2-D coordinates of each (n, d) array: ``"umap"`` (:func:`umap_2d`, cosine) or ``"pca"``
    (scores on the first two principal axes)."""
    if method == "pca":
        out = {}
        for k, v in vectors.items():
            x = v - v.mean(0)
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            out[k] = u[:, :2] * s[:2]
        return out
    if method == "umap":
        return {k: umap_2d(v, seed=seed) for k, v in vectors.items()}
    raise ValueError(f"unknown projection {method!r}; use 'umap' or 'pca'")
