"""Datasets: read MMRec folders, validate them loudly, split and filter them.

A dataset folder (MMRec format) holds

* ``<name>.inter`` — TSV with columns ``userID itemID rating timestamp x_label`` (0-based ids;
  ``x_label`` 0/1/2 = train/valid/test; ``rating`` and ``timestamp`` are optional);
* ``<modality>_feat.npy`` — one float matrix per modality, row = itemID (e.g. ``image``, ``text``);
* optionally ``<modality>_mask.npy`` (bool per item: the feature is real, not imputed) and item text
  (``item_text.tsv`` with columns ``itemID ... text`` or ``item_text.json``, a list of strings).

Data flows one way: files -> :class:`Dataset` -> tokens -> models. Nothing here imports the rest of motor.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names file, field and fix."""


def data_root() -> Path:
    """Folder holding dataset folders: ``$MOTOR_DATA`` if set, else ``data/`` in the repository."""
    env = os.environ.get("MOTOR_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


def available() -> list[str]:
    """Names of the dataset folders under :func:`data_root` that contain an ``.inter`` file."""
    root = data_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.inter")))


@dataclass
class Dataset:
    """Interactions (user x item CSR per split) plus per-item modality features and text.

    ``train``/``valid``/``test`` are ``scipy.sparse.csr_matrix`` of shape (n_users, n_items) with 1.0 entries;
    ``features`` maps modality -> float32 array (n_items, d); ``item_text`` is a list of n_items strings or None.
    """

    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_masks: dict[str, np.ndarray] = field(default_factory=dict)
    item_text: list[str] | None = None
    timestamps: sp.csr_matrix | None = None  # user x item, same pattern as all splits together
    dropped: dict[str, int] = field(default_factory=dict)
    split_name: str = "given"

    @property
    def item_popularity(self) -> np.ndarray:
        """Train interactions per item, shape (n_items,)."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    @property
    def modalities(self) -> list[str]:
        return sorted(self.features)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; use one of {SPLITS}")
        return getattr(self, name)

    def all_interactions(self) -> sp.csr_matrix:
        """Union of the three splits (user x item, binary)."""
        m = (self.train + self.valid + self.test).tocsr()
        m.data[:] = 1.0
        return m

    def summary(self) -> dict:
        """Counts, density, feature dims and train-popularity quantiles as a plain dict."""
        n_int = {s: int(self.split(s).nnz) for s in SPLITS}
        total = sum(n_int.values())
        pop = self.item_popularity
        q = np.quantile(pop, [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]) if len(pop) else np.zeros(6)
        return {
            "name": self.name,
            "split": self.split_name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            **{f"{s}_interactions": n_int[s] for s in SPLITS},
            "density": total / max(1, self.n_users * self.n_items),
            "features": {m: tuple(f.shape) for m, f in self.features.items()},
            "item_popularity_quantiles": dict(zip(["min", "25%", "50%", "75%", "90%", "max"], q.tolist())),
            "items_without_train": int((pop == 0).sum()),
            "dropped": dict(self.dropped),
        }

    def __repr__(self) -> str:
        s = self.summary()
        feats = ", ".join(f"{m} {d}" for m, d in s["features"].items()) or "none"
        q = s["item_popularity_quantiles"]
        lines = [
            f"Dataset {s['name']!r} (split: {s['split']})",
            f"  users {s['users']:,} · items {s['items']:,} · interactions {s['interactions']:,} "
            f"(train {s['train_interactions']:,} / valid {s['valid_interactions']:,} / test {s['test_interactions']:,})"
            f" · density {s['density']:.4%}",
            f"  features: {feats}" + (" · item text" if self.item_text is not None else ""),
            f"  train popularity per item: median {q['50%']:.0f}, 90% {q['90%']:.0f}, max {q['max']:.0f};"
            f" {s['items_without_train']:,} items without train interactions",
        ]
        if any(self.dropped.values()):
            lines.append("  dropped on load: " + ", ".join(f"{k} {v:,}" for k, v in self.dropped.items() if v))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- loading


def _resolve_folder(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p.resolve()
    candidate = data_root() / str(name_or_path)
    if candidate.is_dir():
        return candidate
    found = ", ".join(available()) or "none"
    raise DataError(
        f"dataset {str(name_or_path)!r} not found: no folder {p} and no {candidate} "
        f"(datasets under the data root {data_root()}: {found}). "
        "Fix: pass a folder path, or set MOTOR_DATA to the folder that contains the dataset folders."
    )


def _find_inter(folder: Path) -> Path:
    own = folder / f"{folder.name}.inter"
    if own.is_file():
        return own
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:
        return inters[0]
    if not inters:
        raise DataError(f"{folder}: missing file {folder.name}.inter. Fix: add the interaction TSV "
                        "(columns userID itemID rating timestamp x_label).")
    raise DataError(f"{folder}: several .inter files ({', '.join(p.name for p in inters)}) and none named "
                    f"{folder.name}.inter. Fix: keep one, or name the one to use after the folder.")


def _int_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | (values != np.floor(values.fillna(0)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {col!r} row {row + 2} holds {df[col].iloc[row]!r}, not an integer id. "
                        f"Fix: ids must be 0-based integers.")
    arr = values.to_numpy(dtype=np.int64)
    if (arr < 0).any():
        row = int(np.flatnonzero(arr < 0)[0])
        raise DataError(f"{path}: column {col!r} row {row + 2} holds negative id {arr[row]}. "
                        "Fix: ids must be 0-based non-negative integers.")
    return arr


def _read_inter(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:  # pragma: no cover - pandas parse errors vary
        raise DataError(f"{path}: cannot be read as a tab-separated table ({exc}). Fix: write it as TSV "
                        "with a header line.") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
                        "Fix: the header must name userID, itemID and x_label (tab-separated).")
    out = pd.DataFrame({"user": _int_column(df, "userID", path), "item": _int_column(df, "itemID", path)})
    labels = pd.to_numeric(df["x_label"], errors="coerce")
    bad = ~labels.isin([0, 1, 2])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column 'x_label' row {row + 2} holds {df['x_label'].iloc[row]!r}; "
                        "allowed values are 0 (train), 1 (valid), 2 (test). Fix the label or re-split the data.")
    out["label"] = labels.to_numpy(dtype=np.int64)
    if "timestamp" in df.columns:
        ts = pd.to_numeric(df["timestamp"], errors="coerce")
        out["timestamp"] = ts.fillna(0).to_numpy(dtype=np.float64)
    return out


def _load_features(folder: Path, n_items: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    features, masks = {}, {}
    for path in sorted(folder.glob("*_feat.npy")):
        modality = path.name[: -len("_feat.npy")]
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{path}: not a plain numeric array (it would need pickle to load, which could run "
                            "code). Fix: save it with numpy.save of a float matrix.") from exc
        if not np.issubdtype(arr.dtype, np.number) or arr.ndim != 2:
            raise DataError(f"{path}: expected a 2-D numeric matrix (items x dims), got dtype {arr.dtype} with "
                            f"shape {arr.shape}. Fix: save a float matrix with one row per item.")
        if arr.shape[0] != n_items:
            raise DataError(f"{path}: {arr.shape[0]} feature rows but the interactions use {n_items} items "
                            f"(max itemID + 1). Fix: one row per itemID, row i = item i.")
        arr = arr.astype(np.float32, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            row = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise DataError(f"{path}: NaN or inf in the features (first at row/item {row}). "
                            "Fix: impute the missing vectors (e.g. the modality mean) and record them in "
                            f"{modality}_mask.npy.")
        features[modality] = np.ascontiguousarray(arr)
        mask_path = folder / f"{modality}_mask.npy"
        if mask_path.is_file():
            mask = np.load(mask_path, allow_pickle=False)
            if mask.shape != (n_items,):
                raise DataError(f"{mask_path}: shape {mask.shape}, expected ({n_items},). Fix: one bool per item.")
            masks[modality] = mask.astype(bool)
    return features, masks


def _load_item_text(folder: Path, n_items: int) -> list[str] | None:
    tsv, js = folder / "item_text.tsv", folder / "item_text.json"
    if tsv.is_file():
        df = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        if "itemID" not in df.columns or "text" not in df.columns:
            raise DataError(f"{tsv}: needs columns 'itemID' and 'text'; found {list(df.columns)}.")
        ids = _int_column(df, "itemID", tsv)
        texts = [""] * n_items
        for i, t in zip(ids, df["text"]):
            if i < n_items:
                texts[i] = t.strip()
        return texts
    if js.is_file():
        with open(js, encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict):
            data = [data.get(str(i), "") for i in range(n_items)]
        if not isinstance(data, list) or len(data) != n_items:
            raise DataError(f"{js}: expected a list of {n_items} strings (one per itemID).")
        return [str(t) for t in data]
    return None


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int], values=None) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32) if values is None else values
    m = sp.csr_matrix((data, (users, items)), shape=shape)
    m.sort_indices()
    return m


def from_interactions(name: str, users, items, labels, n_users: int, n_items: int, *,
                      features=None, feature_masks=None, item_text=None, timestamps=None,
                      split_name: str = "given", source: str = "interactions") -> Dataset:
    """Build a :class:`Dataset` from parallel arrays (0-based ids; labels 0/1/2).

    Duplicate (user, item) pairs keep their first row (a warning gives the count); valid/test rows of users
    without any train row are dropped (as MMRec does) and counted in ``dataset.dropped``.
    """
    users, items, labels = (np.asarray(a, dtype=np.int64) for a in (users, items, labels))
    order = np.arange(len(users))
    key = users * n_items + items
    _, first = np.unique(key, return_index=True)
    n_dup = len(users) - len(first)
    if n_dup:
        warnings.warn(f"{source}: dropped {n_dup:,} duplicate (user, item) rows (kept the first of each).",
                      stacklevel=2)
    keep = np.sort(first)
    users, items, labels, order = users[keep], items[keep], labels[keep], order[keep]
    has_train = np.zeros(n_users, dtype=bool)
    has_train[users[labels == 0]] = True
    orphan = ~has_train[users]
    n_orphan = int(orphan.sum())
    users, items, labels, order = users[~orphan], items[~orphan], labels[~orphan], order[~orphan]
    if not (labels == 0).any():
        raise DataError(f"{source}: the train split is empty (no row with x_label 0). Fix: re-split the data, "
                        "e.g. motor.data.resplit(dataset, 'random').")
    shape = (n_users, n_items)
    splits = {s: _csr(users[labels == k], items[labels == k], shape) for k, s in enumerate(SPLITS)}
    ts = None
    if timestamps is not None:
        t = np.asarray(timestamps, dtype=np.float64)[keep][~orphan]
        ts = _csr(users, items, shape, values=t + 1.0)  # +1 so that a 0 timestamp is stored explicitly
    return Dataset(name=name, n_users=n_users, n_items=n_items, **splits, features=dict(features or {}),
                   feature_masks=dict(feature_masks or {}), item_text=item_text, timestamps=ts,
                   dropped={"duplicates": n_dup, "rows_of_users_without_train": n_orphan}, split_name=split_name)


def load(name_or_path: str | os.PathLike) -> Dataset:
    """Read and validate an MMRec dataset folder (a path, or a folder name under :func:`data_root`)."""
    folder = _resolve_folder(name_or_path)
    inter_path = _find_inter(folder)
    df = _read_inter(inter_path)
    if df.empty:
        raise DataError(f"{inter_path}: no interaction rows. Fix: add rows userID itemID rating timestamp x_label.")
    n_users = int(df["user"].max()) + 1
    n_items = int(df["item"].max()) + 1
    feats = sorted(folder.glob("*_feat.npy"))
    if feats:  # items without any interaction still have a feature row: trust the feature files for n_items
        n_items = max(n_items, _feature_rows(feats[0]))
    features, masks = _load_features(folder, n_items)
    return from_interactions(folder.name, df["user"], df["item"], df["label"], n_users, n_items,
                             features=features, feature_masks=masks, item_text=_load_item_text(folder, n_items),
                             timestamps=df["timestamp"] if "timestamp" in df else None, source=str(inter_path))


def _feature_rows(path: Path) -> int:
    """Row count of a plain 2-D ``.npy`` (header only, via mmap); 0 when it is not one — the full load then
    reports the problem with the file name."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return arr.shape[0] if arr.ndim == 2 else 0
    except Exception:
        return 0


# ----------------------------------------------------------------------------------------------- splitting


def _triples(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, timestamps) of all interactions, sorted by user then item."""
    allm = ds.all_interactions().tocoo()
    u, i = allm.row.astype(np.int64), allm.col.astype(np.int64)
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    if ds.timestamps is not None:
        t = np.asarray(ds.timestamps[u, i]).ravel() - 1.0
    else:
        t = np.zeros(len(u))
    return u, i, t


def _rank_within_user(users: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each row within its user when rows are ordered by ``key``."""
    order = np.lexsort((key, users))
    u_sorted = users[order]
    start = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1]
    counts = np.diff(np.r_[start, len(u_sorted)])
    ranks_sorted = np.arange(len(u_sorted)) - np.repeat(start, counts)
    ranks = np.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks


def _stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = np.floor(x)
    return (base + (rng.random(len(x)) < (x - base))).astype(np.int64)


def resplit(ds: Dataset, scheme: str = "random", seed: int = 0, ratios=(0.8, 0.1, 0.1),
            cold_fraction: float = 0.2) -> Dataset:
    """Re-split all interactions of ``ds``; returns a new Dataset (features and text shared).

    Schemes:

    * ``"random"`` — the paper's per-user random 8:1:1. A user with n interactions gets
      ``n_valid = sround(n * r_valid)`` and ``n_test = sround(n * r_test)`` where ``sround`` rounds up with
      probability equal to the fractional part (seeded), so the overall proportions are 8:1:1 in expectation
      even for users with 1-9 interactions; if that would leave no train interaction, test and then valid are
      reduced so that **every user keeps at least one train interaction** (a 1-interaction user is train only).
    * ``"loo"`` — leave-one-out by timestamp: last -> test, second-to-last -> valid (users with 2 interactions:
      last -> test; with 1: train only). Ties are broken by a seeded random order.
    * ``"cold_item"`` — item cold-start: a seeded ``cold_fraction`` of the items that have interactions becomes
      cold; all their interactions go to valid (half of the cold items) or test (the other half), so cold items
      have zero train interactions. The warm interactions are split per user at random with ``ratios``.
    """
    rng = np.random.default_rng(seed)
    u, i, t = _triples(ds)
    n = len(u)
    counts = np.bincount(u, minlength=ds.n_users)
    labels = np.zeros(n, dtype=np.int64)
    if scheme in ("random", "cold_item"):
        warm = np.ones(n, dtype=bool)
        if scheme == "cold_item":
            if not 0 < cold_fraction < 1:
                raise ValueError(f"cold_fraction must be in (0, 1), got {cold_fraction}")
            items_with = np.unique(i)
            n_cold = max(2, int(round(cold_fraction * len(items_with))))
            cold = rng.choice(items_with, size=n_cold, replace=False)
            cold_valid, cold_test = cold[: n_cold // 2], cold[n_cold // 2:]
            labels[np.isin(i, cold_valid)] = 1
            labels[np.isin(i, cold_test)] = 2
            warm = labels == 0
        uw = u[warm]
        cw = np.bincount(uw, minlength=ds.n_users)
        r_train, r_valid, r_test = (r / sum(ratios) for r in ratios)
        n_test = _stochastic_round(cw * r_test, rng)
        n_valid = _stochastic_round(cw * r_valid, rng)
        over = np.maximum(0, n_test + n_valid - (cw - 1))  # keep >= 1 train row per user
        cut = np.minimum(over, n_test)
        n_test -= cut
        n_valid -= np.minimum(over - cut, n_valid)
        rank = _rank_within_user(uw, rng.random(len(uw)))
        lw = np.zeros(len(uw), dtype=np.int64)
        lw[rank < n_test[uw]] = 2
        lw[(rank >= n_test[uw]) & (rank < n_test[uw] + n_valid[uw])] = 1
        labels[warm] = lw
    elif scheme == "loo":
        rank_from_end = _rank_within_user(u, -t + rng.random(n) * 1e-9 * (np.abs(t).max() + 1))
        labels[(rank_from_end == 0) & (counts[u] >= 2)] = 2
        labels[(rank_from_end == 1) & (counts[u] >= 3)] = 1
    else:
        raise ValueError(f"unknown split scheme {scheme!r}; use 'random', 'loo' or 'cold_item'")
    out = from_interactions(ds.name, u, i, labels, ds.n_users, ds.n_items, features=ds.features,
                            feature_masks=ds.feature_masks, item_text=ds.item_text,
                            timestamps=t if ds.timestamps is not None else None,
                            split_name=f"{scheme}(seed={seed})", source=f"resplit({ds.name})")
    return out


def kcore(ds: Dataset, k: int) -> Dataset:
    """Keep the largest sub-dataset where every user and item has >= k interactions (all splits); re-indexes
    users and items to 0-based ids and subsets features and text accordingly."""
    allm = ds.all_interactions()
    users = np.ones(ds.n_users, dtype=bool)
    items = np.ones(ds.n_items, dtype=bool)
    while True:
        sub = allm[users][:, items]
        du = np.asarray(sub.sum(axis=1)).ravel()
        di = np.asarray(sub.sum(axis=0)).ravel()
        bad_u, bad_i = du < k, di < k
        if not bad_u.any() and not bad_i.any():
            break
        users[np.flatnonzero(users)[bad_u]] = False
        items[np.flatnonzero(items)[bad_i]] = False
    umap = np.full(ds.n_users, -1)
    umap[users] = np.arange(users.sum())
    imap = np.full(ds.n_items, -1)
    imap[items] = np.arange(items.sum())
    parts_u, parts_i, parts_l = [], [], []
    for label, s in enumerate(SPLITS):
        coo = ds.split(s).tocoo()
        keep = users[coo.row] & items[coo.col]
        parts_u.append(umap[coo.row[keep]])
        parts_i.append(imap[coo.col[keep]])
        parts_l.append(np.full(int(keep.sum()), label))
    uu, ii, ll = np.concatenate(parts_u), np.concatenate(parts_i), np.concatenate(parts_l)
    ts = None
    if ds.timestamps is not None:
        old_u, old_i = np.flatnonzero(users)[uu], np.flatnonzero(items)[ii]
        ts = np.asarray(ds.timestamps[old_u, old_i]).ravel() - 1.0
    return from_interactions(f"{ds.name}", uu, ii, ll, int(users.sum()), int(items.sum()),
                             features={m: f[items] for m, f in ds.features.items()},
                             feature_masks={m: f[items] for m, f in ds.feature_masks.items()},
                             item_text=[ds.item_text[j] for j in np.flatnonzero(items)] if ds.item_text else None,
                             timestamps=ts, split_name=f"{ds.split_name}+{k}core", source=f"kcore({ds.name})")


def with_features(ds: Dataset, **features: np.ndarray) -> Dataset:
    """Copy of ``ds`` with some modality features replaced (handy for tests and what-if analyses)."""
    return replace(ds, features={**ds.features, **features})
