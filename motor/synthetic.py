"""The embedded default dataset: a synthetic multimodal recommendation problem that always works offline.

Planted item clusters drive both user preferences and two modalities of item features; text features are
more informative about the cluster than image features (as in the paper); item popularity follows a power law,
so there is a real long tail of items with 0-5 train interactions.
"""
from __future__ import annotations

import numpy as np

from .data import Dataset, from_interactions, resplit

_WORDS = ("amber basalt cedar delta ember fjord garnet harbor indigo jasper kelp lumen marble nectar onyx pebble "
          "quartz raven sierra tundra umber velvet willow xenon yarrow zephyr copper silver cobalt coral").split()
_WORDS_PER_CLUSTER = 3  # the words an item's text shares with its cluster (plus one random word)
_ACTIVITY_SHAPE = 2.0  # Pareto shape of user activity: a few heavy users, most light, finite mean
_OVERDRAW, _OVERDRAW_GROWTH, _MAX_DRAWS = 1.2, 1.5, 6  # duplicate pairs are dropped: draw more, up to 6 times
_LATENT_DIM = 32  # cluster centres and item noise live here before the projection to dims[m]
_FEATURE_JITTER = 0.05  # small noise after the projection, so features are full rank (the projection has rank 32)


def synthetic(n_users: int = 800, n_items: int = 500, n_interactions: int = 8000, n_clusters: int = 16,
              dims: dict[str, int] | None = None, noise: dict[str, float] | None = None, zipf: float = 1.1,
              focus: float = 0.8, seed: int = 0, name: str = "synthetic") -> Dataset:
    """Generate a dataset with planted structure; split per user at random 8:1:1 (see ``data.resplit``).

    Each user prefers one cluster (with probability ``focus``) and otherwise picks clusters uniformly; within a
    cluster items are drawn by a Zipf(``zipf``) popularity weight. Features per modality = cluster centre +
    per-item noise (``noise[m]`` relative to the centres' scale), mapped through a random linear projection to
    ``dims[m]`` dimensions. Defaults: text 96-d with noise 0.6, image 128-d with noise 1.2.

    Baby scale: :func:`baby_scale`; the paper's Baby 1-core scale: :func:`paper_scale`.
    """
    dims = dims or {"text": 96, "image": 128}
    noise = noise or {"text": 0.6, "image": 1.2}
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, size=n_items)
    # power-law popularity: a random rank per item, weight 1 / rank^zipf
    ranks = rng.permutation(n_items) + 1
    weight = 1.0 / ranks ** zipf
    # per-cluster cumulative weights for vectorised sampling
    order = np.lexsort((-weight, item_cluster))
    sorted_cluster = item_cluster[order]
    starts = np.searchsorted(sorted_cluster, np.arange(n_clusters))
    ends = np.searchsorted(sorted_cluster, np.arange(n_clusters), side="right")
    cum = np.cumsum(weight[order])
    base = np.r_[0.0, cum][starts]
    totals = np.r_[0.0, cum][ends] - base

    user_cluster = rng.integers(0, n_clusters, size=n_users)
    # every user gets >= 1 interaction; the rest follow a skewed activity distribution
    activity = rng.pareto(_ACTIVITY_SHAPE, size=n_users) + 1.0
    empty = starts == ends
    nonempty = np.flatnonzero(~empty)

    def draw(n_draws: int) -> tuple[np.ndarray, np.ndarray]:
        extra = rng.multinomial(max(0, n_draws - n_users), activity / activity.sum())
        u = np.repeat(np.arange(n_users), 1 + extra)
        focused = rng.random(len(u)) < focus
        c = np.where(focused, user_cluster[u], rng.integers(0, n_clusters, size=len(u)))
        if empty.any():  # a cluster without items: fall back to any non-empty cluster
            c = np.where(empty[c], rng.choice(nonempty, size=len(u)), c)
        r = base[c] + rng.random(len(u)) * totals[c]
        pos = np.clip(np.searchsorted(cum, r, side="right"), starts[c], ends[c] - 1)
        return u, order[pos]

    key = np.empty(0, dtype=np.int64)
    factor = _OVERDRAW
    for _ in range(_MAX_DRAWS):  # duplicates are discarded: draw more until the target is reached
        u_new, i_new = draw(int(n_interactions * factor))
        key = np.unique(np.r_[key, u_new * n_items + i_new])
        if len(key) >= n_interactions:
            break
        factor *= _OVERDRAW_GROWTH
    users, items = key // n_items, key % n_items
    # trim to the requested size, keeping every user's first interaction
    if len(users) > n_interactions:
        first = np.r_[True, users[1:] != users[:-1]]
        rest = np.flatnonzero(~first)
        drop = rng.choice(rest, size=min(len(rest), len(users) - n_interactions), replace=False)
        keep = np.ones(len(users), dtype=bool)
        keep[drop] = False
        users, items = users[keep], items[keep]

    features = {}
    for m, d in dims.items():
        centres = rng.normal(size=(n_clusters, _LATENT_DIM))
        z = centres[item_cluster] + noise.get(m, 1.0) * rng.normal(size=(n_items, _LATENT_DIM))
        proj = rng.normal(size=(_LATENT_DIM, d)) / np.sqrt(_LATENT_DIM)  # keeps the scale of z
        features[m] = (z @ proj + _FEATURE_JITTER * rng.normal(size=(n_items, d))).astype(np.float32)

    words = np.array(_WORDS)
    cluster_words = [rng.choice(words, size=_WORDS_PER_CLUSTER, replace=False) for _ in range(n_clusters)]
    item_text = [f"item {j}: {' '.join(cluster_words[c])} {rng.choice(words)} (cluster {c})"
                 for j, c in enumerate(item_cluster)]
    ts = rng.random(len(users))
    ds = from_interactions(name, users, items, np.zeros(len(users), dtype=np.int64), n_users, n_items,
                           features=features, item_text=item_text, timestamps=ts, source="synthetic")
    out = resplit(ds, "random", seed=seed)
    out.split_name = "random(seed=%d)" % seed
    return out


def baby_scale(seed: int = 0) -> Dataset:
    """Synthetic data at the scale of Amazon Baby used by MMRec benchmarks: 19,445 users, 7,050 items, 160k."""
    return synthetic(19_445, 7_050, 160_000, n_clusters=64, dims={"text": 384, "image": 4096}, seed=seed,
                     name="synthetic-baby")


def paper_scale(seed: int = 0) -> Dataset:
    """Synthetic data at the scale of the paper's Baby 1-core setting: 139,722 users, 28,795 items, 501,717
    interactions, 4,096-d image and 384-d text features (for speed and memory benchmarks)."""
    return synthetic(139_722, 28_795, 501_717, n_clusters=256, dims={"text": 384, "image": 4096}, seed=seed,
                     name="synthetic-paper")
