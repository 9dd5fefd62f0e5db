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
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")  # the parts of a split dataset (x_label 0, 1, 2)
SPLIT_SCHEMES = ("given", "random", "loo", "cold_item")  # how a run splits: the file's x_label, or resplit()
DEFAULT_DATASET = "scientific"  # what "no dataset named" means when it is under the data root
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


def resolve_dataset_name(name: str | None = None, verbose: bool = True, file=None) -> str:
    """The dataset a run uses. ``None`` or "" (nothing asked): :data:`DEFAULT_DATASET` when it is under the data
    root, else ``"synthetic"`` with one line (on ``file``, default stdout) saying so. A named dataset must exist:
    ``"synthetic"``, a folder path, or a folder under the data root; anything else raises :class:`DataError`
    listing the datasets found."""
    if not name:
        if DEFAULT_DATASET in available():
            return DEFAULT_DATASET
        if verbose:
            print(f"no dataset named and {DEFAULT_DATASET!r} is not under {data_root()} (set MOTOR_DATA): using the "
                  "built-in synthetic dataset.", file=file or sys.stdout, flush=True)
        return "synthetic"
    if name == "synthetic" or name in available() or Path(name).is_dir():
        return name
    found = available()
    raise DataError(f"dataset {name!r} not found under {data_root()} ($MOTOR_DATA); datasets found there: "
                    f"{', '.join(found) if found else 'none'} (and 'synthetic', built in). Fix: pick one of those, "
                    "or set MOTOR_DATA to the folder that holds it.")


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
    # valid/test rows left out of the splits because their user has no train row (columns user, item, label,
    # timestamp); resplit puts them back
    dropped_rows: pd.DataFrame | None = None
    # the userID / itemID each row has in the user's files, where rows were dropped and re-indexed (sparsify,
    # kcore); None: row i is id i (a loaded dataset: load requires dense 0-based ids)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @property
    def item_popularity(self) -> np.ndarray:
        """Train interactions per item, shape (n_items,)."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    @property
    def modalities(self) -> list[str]:
        return sorted(self.features)

    def item_id(self, index) -> np.ndarray:
        """The file's itemIDs of item rows ``index`` (int64 array; what every item leaving motor is named by)."""
        return _ids_of(self.item_ids, index)

    def user_id(self, index) -> np.ndarray:
        """The file's userIDs of user rows ``index``."""
        return _ids_of(self.user_ids, index)

    def item_index(self, ids) -> np.ndarray:
        """Item rows of the file's itemIDs ``ids``; a ValueError names the ids this dataset does not hold."""
        return _index_of(self.item_ids, ids, self.n_items, "item", self.name)

    def user_index(self, ids) -> np.ndarray:
        """User rows of the file's userIDs ``ids``; a ValueError names the ids this dataset does not hold."""
        return _index_of(self.user_ids, ids, self.n_users, "user", self.name)

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


def _ids_of(ids: np.ndarray | None, index) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    return index.copy() if ids is None else np.asarray(ids, dtype=np.int64)[index]


def _index_of(ids: np.ndarray | None, wanted, n: int, kind: str, name: str) -> np.ndarray:
    """Rows of ``wanted`` (ids of the user's file) in a dataset whose rows hold ``ids`` (None: row = id)."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if ids is None:
        rows, known = wanted, (wanted >= 0) & (wanted < n)
    else:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        pos = np.clip(np.searchsorted(ids, wanted, sorter=order), 0, max(len(ids) - 1, 0))
        rows = order[pos] if len(ids) else np.zeros_like(wanted)
        known = (ids[rows] == wanted) if len(ids) else np.zeros(wanted.shape, dtype=bool)
    if not known.all():
        bad = np.unique(wanted[~known])
        held = (f"ids 0..{n - 1}" if ids is None else
                f"{n:,} {kind}s (ids {int(ids.min())}..{int(ids.max())}; the others were dropped when the data was "
                "thinned)") if n else f"no {kind}s"
        raise ValueError(f"dataset {name!r} has no {kind} with {kind}ID {bad[:5].tolist()}"
                         f"{' ...' if len(bad) > 5 else ''}: it holds {held}. Fix: pass {kind}IDs of the "
                         f"dataset's .inter file that this run's data kept.")
    return rows.astype(np.int64)


# ----------------------------------------------------------------------------------------------- loading


def _resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """A plain name (no path separator) is a folder under the data root first, else a folder path; anything else
    is a folder path (so ``load("scientific")`` never picks up a ``scientific/`` in the working directory)."""
    p = Path(name_or_path).expanduser()
    candidate = data_root() / str(name_or_path)
    plain = isinstance(name_or_path, str) and os.sep not in name_or_path and name_or_path not in (".", "..")
    if plain and candidate.is_dir():
        return candidate
    if p.is_dir():
        return p.resolve()
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


_MAX_EXACT_ID = 2 ** 53  # ids above this do not survive a float and are never dense anyway


def _int_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Column ``col`` as int64 ids; a DataError names the file, the column and the row (file line) of the first
    value that is not a non-negative integer."""
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | ~np.isfinite(values) | (values != np.floor(values.fillna(0)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {col!r} row {row + 2} holds {df[col].iloc[row]!r}, not an integer id. "
                        f"Fix: ids must be 0-based integers.")
    if (values < 0).any():
        row = int(np.flatnonzero((values < 0).to_numpy())[0])
        raise DataError(f"{path}: column {col!r} row {row + 2} holds negative id {df[col].iloc[row]}. "
                        "Fix: ids must be 0-based non-negative integers.")
    if len(values) and values.max() >= _MAX_EXACT_ID:
        row = int(values.to_numpy().argmax())
        raise DataError(_sparse_ids_message(path, col, row, df[col].iloc[row], len(df)))
    return values.to_numpy(dtype=np.int64)


def _sparse_ids_message(path: Path, col: str, row: int, value, n_rows: int) -> str:
    return (f"{path}: column {col!r} row {row + 2} holds id {value}, but ids must be dense 0-based integers "
            f"(0 .. number of distinct ids - 1); max id {value} for {n_rows:,} rows. Fix: map the ids to "
            "0, 1, 2, ... (e.g. pandas.factorize) and keep the mapping next to the dataset.")


def _read_inter(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas parse errors, UnicodeDecodeError, empty file
        raise DataError(f"{path}: cannot be read as a tab-separated table ({type(exc).__name__}: {exc}). "
                        "Fix: write it as UTF-8 TSV with a header line and the same number of fields on every "
                        "line.") from exc
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
        if (df["timestamp"].str.strip() == "").all():
            warnings.warn(f"{path}: column 'timestamp' is empty in every row; read as absent (the 'loo' split "
                          "then breaks ties at random).", stacklevel=3)
            return out
        ts = pd.to_numeric(df["timestamp"], errors="coerce")
        bad = ts.isna() | ~np.isfinite(ts)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: column 'timestamp' row {row + 2} holds {df['timestamp'].iloc[row]!r}, not a "
                            f"number ({int(bad.sum()):,} such rows). Fix: numeric timestamps (e.g. Unix seconds) "
                            "in every row, or drop the column (the 'loo' split orders by it).")
        out["timestamp"] = ts.to_numpy(dtype=np.float64)
    return out


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes of array data the header promises) of a ``.npy`` file, read without loading it; a
    DataError names the file when it is empty, not a ``.npy``, an object (pickle) array or shorter than promised."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes). Fix: write it again with numpy.save.")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc}). Fix: write it with "
                        "numpy.save.") from exc
    if dtype.hasobject:
        raise DataError(f"{path}: not a plain numeric array (dtype {dtype}: it would need pickle to load, which "
                        "could run code). Fix: save it with numpy.save of a float matrix.")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size - offset < expected:
        raise DataError(f"{path}: truncated: its header promises shape {shape} of {dtype} ({expected:,} bytes of "
                        f"data) but the file holds {size - offset:,}. Fix: write it again with numpy.save.")
    return tuple(shape), dtype, expected


def _read_npy(path: Path) -> np.ndarray:
    _npy_header(path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc}). Fix: write it again with "
                        "numpy.save.") from exc


def _feature_rows(paths: list[Path]) -> int | None:
    """Row count shared by every feature file (None without any); a DataError names each file and its row count
    when they disagree, or a file that is not a 2-D numeric matrix."""
    rows = {}
    for path in paths:
        shape, dtype, _ = _npy_header(path)
        if len(shape) != 2 or not (np.issubdtype(dtype, np.number) and dtype.kind != "c"):
            raise DataError(f"{path}: expected a 2-D numeric matrix of real numbers (items x dims), got dtype "
                            f"{dtype} with shape {shape}. Fix: save a float matrix with one row per item.")
        rows[path] = shape[0]
    if len(set(rows.values())) > 1:
        listing = ", ".join(f"{p.name}: {r:,} rows" for p, r in rows.items())
        raise DataError(f"{paths[0].parent}: the feature files disagree on the number of items ({listing}). "
                        "Fix: one row per itemID in every <modality>_feat.npy.")
    return next(iter(rows.values()), None)


def _load_features(folder: Path, n_items: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    features, masks = {}, {}
    for path in sorted(folder.glob("*_feat.npy")):
        modality = path.name[: -len("_feat.npy")]
        arr = _read_npy(path)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr) or arr.ndim != 2:
            raise DataError(f"{path}: expected a 2-D numeric matrix of real numbers (items x dims), got dtype "
                            f"{arr.dtype} with shape {arr.shape}. Fix: save a float matrix with one row per item.")
        if arr.shape[0] != n_items:
            raise DataError(f"{path}: {arr.shape[0]} feature rows but the interactions use {n_items} items "
                            f"(max itemID + 1). Fix: one row per itemID, row i = item i.")
        finite = np.isfinite(arr)
        if not finite.all():
            row = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise DataError(f"{path}: NaN or inf in the features (first at row/item {row}). "
                            "Fix: impute the missing vectors (e.g. the modality mean) and record them in "
                            f"{modality}_mask.npy.")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise DataError(f"{path}: values beyond the float32 range (first at row/item {row}), which motor "
                            "computes in. Fix: rescale the features.")
        if len(arr) > 1 and (arr == arr[0]).all():
            warnings.warn(f"{path}: all {len(arr):,} rows are identical (constant features): this modality cannot "
                          "tell items apart (every item gets the same tokens).", stacklevel=3)
        features[modality] = np.ascontiguousarray(arr)
        mask_path = folder / f"{modality}_mask.npy"
        if mask_path.is_file():
            masks[modality] = _read_mask(mask_path, n_items)
    for mask_path in sorted(folder.glob("*_mask.npy")):
        if mask_path.name[: -len("_mask.npy")] not in features:
            warnings.warn(f"{mask_path}: no matching {mask_path.name.replace('_mask', '_feat')}; the mask is "
                          "ignored.", stacklevel=3)
    return features, masks


def _read_mask(path: Path, n_items: int) -> np.ndarray:
    """A ``<modality>_mask.npy``: bool, or numbers that are all 0/1, one per item."""
    mask = _read_npy(path)
    if mask.shape != (n_items,):
        raise DataError(f"{path}: shape {mask.shape}, expected ({n_items},). Fix: one bool per item.")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or np.iscomplexobj(mask):
            raise DataError(f"{path}: dtype {mask.dtype}; expected bool (True = real feature). Fix: save a bool "
                            "array.")
        bad = ~np.isin(mask, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: item {i} holds {mask[i].item()!r}; a mask holds only True/False (or 1/0), "
                            f"{int(bad.sum()):,} values are neither. Fix: save a bool array.")
    return mask.astype(bool)


def _load_item_text(folder: Path, n_items: int) -> list[str] | None:
    tsv, js = folder / "item_text.tsv", folder / "item_text.json"
    if tsv.is_file():
        return _item_text_tsv(tsv, n_items)
    if js.is_file():
        return _item_text_json(js, n_items)
    return None


def _utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 (byte {exc.start}, line {line}: {raw[exc.start:exc.start + 4]!r}). "
                        "Fix: save the file as UTF-8.") from exc


def _item_text_tsv(path: Path, n_items: int) -> list[str]:
    """``item_text.tsv``: a header naming ``itemID`` and ``text``, then one tab-separated line per item (quotes
    are text, not quoting; items without a line get "")."""
    lines = _utf8(path).splitlines()
    header = lines[0].split("\t") if lines else []
    if "itemID" not in header or "text" not in header:
        raise DataError(f"{path}: needs columns 'itemID' and 'text' (tab-separated header); found {header}.")
    c_id, c_text = header.index("itemID"), header.index("text")
    texts, seen = [""] * n_items, {}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(f"{path}: line {line_no} has {len(fields)} tab-separated fields, the header has "
                            f"{len(header)} (a tab inside a text?). Fix: replace tabs inside texts by spaces.")
        raw_id = fields[c_id].strip()
        if not raw_id.isdigit():
            raise DataError(f"{path}: line {line_no}, column 'itemID' holds {fields[c_id]!r}, not a 0-based "
                            "integer id.")
        i = int(raw_id)
        if i >= n_items:
            raise DataError(f"{path}: line {line_no} has itemID {i}, but the dataset has {n_items:,} items "
                            f"(ids 0..{n_items - 1}). Fix: drop the line or check the id mapping.")
        if i in seen:
            raise DataError(f"{path}: itemID {i} on lines {seen[i]} and {line_no}. Fix: one line per item.")
        seen[i] = line_no
        texts[i] = fields[c_text].strip()
    return texts


def _item_text_json(path: Path, n_items: int) -> list[str]:
    """``item_text.json``: a list of ``n_items`` strings, or an object {"itemID": text} (missing items get "")."""
    try:
        data = json.loads(_utf8(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
    if isinstance(data, dict):
        out = [""] * n_items
        for key, text in data.items():
            if not (key.isdigit() and int(key) < n_items):
                raise DataError(f"{path}: key {key!r} is not an itemID in 0..{n_items - 1}. Fix: keys are the "
                                "items' 0-based ids as strings.")
            out[int(key)] = text
        data = out
    if not isinstance(data, list) or len(data) != n_items:
        got = f"a list of {len(data)}" if isinstance(data, list) else type(data).__name__
        raise DataError(f"{path}: expected a list of {n_items} strings (one per itemID), got {got}.")
    bad = [i for i, t in enumerate(data) if not isinstance(t, str)]
    if bad:
        raise DataError(f"{path}: entry {bad[0]} is {type(data[bad[0]]).__name__} {data[bad[0]]!r}, not a string "
                        f"({len(bad):,} such entries). Fix: one string per item (\"\" for none).")
    return list(data)


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int], values=None) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32) if values is None else values
    m = sp.csr_matrix((data, (users, items)), shape=shape)
    m.sort_indices()
    return m


def from_interactions(name: str, users, items, labels, n_users: int, n_items: int, *,
                      features=None, feature_masks=None, item_text=None, timestamps=None,
                      split_name: str = "given", source: str = "interactions", user_ids=None,
                      item_ids=None) -> Dataset:
    """Build a :class:`Dataset` from parallel arrays (0-based ids; labels 0/1/2).

    Duplicate (user, item) pairs keep their first row (a warning gives the count); valid/test rows of users
    without any train row are left out of the splits (as MMRec does), counted in ``dataset.dropped`` and kept in
    ``dataset.dropped_rows``, so that :func:`resplit` draws its new split from every interaction.
    ``user_ids`` / ``item_ids``: the file's id of each row where rows were re-indexed (default: row = id).
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
    t_all = np.asarray(timestamps, dtype=np.float64)[keep] if timestamps is not None else None
    has_train = np.zeros(n_users, dtype=bool)
    has_train[users[labels == 0]] = True
    orphan = ~has_train[users]
    n_orphan = int(orphan.sum())
    dropped_rows = None
    if n_orphan:
        dropped_rows = pd.DataFrame({"user": users[orphan], "item": items[orphan], "label": labels[orphan],
                                     "timestamp": t_all[orphan] if t_all is not None else np.nan})
    users, items, labels, order = users[~orphan], items[~orphan], labels[~orphan], order[~orphan]
    if not (labels == 0).any():
        raise DataError(f"{source}: the train split is empty (no row with x_label 0). Fix: re-split the data, "
                        "e.g. motor.data.resplit(dataset, 'random').")
    shape = (n_users, n_items)
    splits = {s: _csr(users[labels == k], items[labels == k], shape) for k, s in enumerate(SPLITS)}
    ts = None
    if t_all is not None:
        ts = _csr(users, items, shape, values=t_all[~orphan] + 1.0)  # +1 so that a 0 timestamp is stored explicitly
    return Dataset(name=name, n_users=n_users, n_items=n_items, **splits, features=dict(features or {}),
                   feature_masks=dict(feature_masks or {}), item_text=item_text, timestamps=ts,
                   dropped={"duplicates": n_dup, "rows_of_users_without_train": n_orphan}, split_name=split_name,
                   dropped_rows=dropped_rows, user_ids=user_ids, item_ids=item_ids)


def load(name_or_path: str | os.PathLike) -> Dataset:
    """Read and validate an MMRec dataset folder (a path, or a folder name under :func:`data_root`).

    What is accepted, warned about and refused is listed in ``data/README.md``; every refusal is a
    :class:`DataError` naming the file, the row or column where there is one, and the fix."""
    folder = _resolve_folder(name_or_path)
    inter_path = _find_inter(folder)
    df = _read_inter(inter_path)
    if df.empty:
        raise DataError(f"{inter_path}: no interaction rows. Fix: add rows userID itemID rating timestamp x_label.")
    n_users = int(df["user"].max()) + 1
    n_items = int(df["item"].max()) + 1
    feature_rows = _feature_rows(sorted(folder.glob("*_feat.npy")))
    _check_dense(inter_path, df, "user", "userID", len(df))
    _check_dense(inter_path, df, "item", "itemID", max(len(df), feature_rows or 0))
    for col, name, n in (("user", "user", n_users), ("item", "item", n_items if feature_rows is None else 0)):
        unused = n - len(np.unique(df[col].to_numpy())) if n else 0
        if unused:  # ids with gaps: empty users / items without features or interactions, a table row each
            warnings.warn(f"{inter_path}: {unused:,} of the {name} ids 0..{n - 1} have no interaction (the ids are "
                          f"not dense); they are kept as {name}s without data. Fix: map the ids to 0, 1, 2, ...",
                          stacklevel=2)
    if feature_rows is not None and feature_rows > n_items:  # items without any interaction: catalogue items
        warnings.warn(f"{folder}: the feature files have {feature_rows:,} rows but {inter_path.name} uses items "
                      f"0..{n_items - 1} only: the other {feature_rows - n_items:,} items have no interaction and "
                      "are kept as catalogue items (they are ranked, never held out).", stacklevel=2)
        n_items = feature_rows
    features, masks = _load_features(folder, n_items)
    return from_interactions(folder.name, df["user"], df["item"], df["label"], n_users, n_items,
                             features=features, feature_masks=masks, item_text=_load_item_text(folder, n_items),
                             timestamps=df["timestamp"] if "timestamp" in df else None, source=str(inter_path))


def _check_dense(path: Path, df: pd.DataFrame, col: str, name: str, bound: int) -> None:
    """Refuse ids that cannot be dense: a max id >= ``bound`` (the row count, or the feature rows for items)
    means most ids in between are unused, and every id costs a row in every model table."""
    ids = df[col].to_numpy()
    row = int(ids.argmax())
    if ids[row] >= bound:
        raise DataError(_sparse_ids_message(path, name, row, int(ids[row]), len(df)))


# ----------------------------------------------------------------------------------------------- splitting


def _triples(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, timestamps) of all interactions, sorted by user then item."""
    allm = ds.all_interactions().tocoo()
    u, i = allm.row.astype(np.int64), allm.col.astype(np.int64)
    if ds.timestamps is not None:
        t = np.asarray(ds.timestamps[u, i]).ravel() - 1.0
    else:
        t = np.zeros(len(u))
    if ds.dropped_rows is not None and len(ds.dropped_rows):  # rows the current split left out: drawn again
        d = ds.dropped_rows
        u = np.concatenate([u, d["user"].to_numpy(np.int64)])
        i = np.concatenate([i, d["item"].to_numpy(np.int64)])
        t = np.concatenate([t, np.nan_to_num(d["timestamp"].to_numpy(np.float64))])
    order = np.lexsort((i, u))
    return u[order], i[order], t[order]


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
                            split_name=f"{scheme}(seed={seed})", source=f"resplit({ds.name})",
                            user_ids=ds.user_ids, item_ids=ds.item_ids)
    return out


def kcore(ds: Dataset, k: int) -> Dataset:
    """Keep the largest sub-dataset where every user and item has >= k interactions (all splits); re-indexes
    users and items to 0-based ids and subsets features and text accordingly. Rows the split left out
    (``ds.dropped_rows``: users without a train row) are not counted and not carried over."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"kcore: k must be an integer >= 1, got {k!r}")
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
        if not users.any() or not items.any():
            raise DataError(f"kcore({ds.name}, k={k}): no user and item have {k} or more interactions each, so "
                            "nothing is left. Fix: a smaller k.")
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
                             timestamps=ts, split_name=f"{ds.split_name}+{k}core", source=f"kcore({ds.name})",
                             user_ids=ds.user_id(np.flatnonzero(users)), item_ids=ds.item_id(np.flatnonzero(items)))


def with_features(ds: Dataset, **features: np.ndarray) -> Dataset:
    """Copy of ``ds`` with some modality features replaced (handy for tests and what-if analyses)."""
    return replace(ds, features={**ds.features, **features})


def sparsify(ds: Dataset, keep: float, seed: int = 0) -> Dataset:
    """Keep a random ``keep`` fraction of each user's interactions (all splits together), for sparsity studies.

    A user with n interactions keeps ``max(1, sround(keep * n))`` of them (``sround`` rounds up with probability
    equal to the fractional part, seeded, so the kept share is ``keep`` in expectation), chosen uniformly at random;
    at least one kept row is a train row, so every user keeps a train interaction and a "given" split stays usable.
    Kept rows keep their split label; re-split the result as usual (``resplit``). Items left without
    interactions (and users that had none) are dropped and ids are re-indexed 0-based in their old order; features,
    feature masks, item text and timestamps follow their items, and ``user_ids`` / ``item_ids`` keep the file's
    ids of the rows (``ds.item_id(row)``). ``keep=1`` keeps every interaction.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"sparsify: keep must be in (0, 1], got {keep!r}. Fix: pass the fraction of each user's "
                         "interactions to keep, e.g. 0.4.")
    rng = np.random.default_rng(seed)
    parts = [ds.split(s).tocoo() for s in SPLITS]
    u = np.concatenate([p.row for p in parts]).astype(np.int64)
    i = np.concatenate([p.col for p in parts]).astype(np.int64)
    lab = np.concatenate([np.full(p.nnz, k, dtype=np.int64) for k, p in enumerate(parts)])
    order = np.lexsort((i, u))  # canonical row order: the draw depends on the data, not on the CSR layout
    u, i, lab = u[order], i[order], lab[order]
    counts = np.bincount(u, minlength=ds.n_users)
    n_keep = np.maximum(1, _stochastic_round(counts * float(keep), rng))
    rank = _rank_within_user(u, rng.random(len(u)))
    kept = rank < n_keep[u]
    # a user whose kept rows hold no train row swaps its last kept row for its first-ranked train row
    big = np.iinfo(np.int64).max
    first_train = np.full(ds.n_users, big)
    np.minimum.at(first_train, u[lab == 0], rank[lab == 0])
    has_kept_train = np.zeros(ds.n_users, dtype=bool)
    has_kept_train[u[kept & (lab == 0)]] = True
    swap = (~has_kept_train) & (first_train < big)
    kept[swap[u] & (rank == n_keep[u] - 1)] = False
    kept[swap[u] & (lab == 0) & (rank == first_train[u])] = True
    u, i, lab = u[kept], i[kept], lab[kept]
    users = np.zeros(ds.n_users, dtype=bool)
    users[u] = True
    items = np.zeros(ds.n_items, dtype=bool)
    items[i] = True
    umap = np.cumsum(users) - 1
    imap = np.cumsum(items) - 1
    ts = None
    if ds.timestamps is not None:
        ts = np.asarray(ds.timestamps[u, i]).ravel() - 1.0
    old_items = np.flatnonzero(items)
    return from_interactions(ds.name, umap[u], imap[i], lab, int(users.sum()), int(items.sum()),
                             features={m: f[items] for m, f in ds.features.items()},
                             feature_masks={m: f[items] for m, f in ds.feature_masks.items()},
                             item_text=[ds.item_text[j] for j in old_items] if ds.item_text is not None else None,
                             timestamps=ts, split_name=f"{ds.split_name}+keep{keep:g}(seed={seed})",
                             source=f"sparsify({ds.name})", user_ids=ds.user_id(np.flatnonzero(users)),
                             item_ids=ds.item_id(old_items))
