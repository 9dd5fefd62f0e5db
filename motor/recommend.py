"""Use a trained run: top-k recommendations for users, and scores for brand-new items from their features alone.

``recommend(run, users, k)`` ranks every item for each user (the user's training items masked, as in evaluation)
and returns a tidy DataFrame. ``score_new_items(run, features)`` is MOTOR's point: a new item's features are turned
into tokens by the tokenizer the run was trained with, its vector comes from the trained token tables and Token
Cross Network, and every user gets a score for it, with no retraining. An ID model cannot do that: it has one
trained row per known item and none for an unseen one.

``run`` is a :class:`motor.experiment.RunResult` (its model in memory, as ``motor.run`` returns it, or read with
``motor.load_run(folder)``) or a run id. A saved run is rebuilt from its config and the weights saved with it
(``model_state.npz``, written by ``motor.run`` unless ``save_model=False``; ``python -m motor train`` saves them too)
and its stored tokenizer and token ids (``tokenizer.npz``): nothing is fitted again. Rebuilding needs the run's
dataset under the data root. A run saved before tokenizers were stored refits its tokenizer and checks that it gives
the run's token ids.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import runs
from .config import config_from_dict
from .experiment import (
    build_model,
    get_dataset,
    read_tokenizers,
    run_tokenizers,
    weights_description,
    with_modalities,
)
from .tokenizer import disambiguate_codes, n_centroids_of


def recommend(run, users: int | Sequence[int], k: int = 20, exclude_seen: bool = True,
              device: str | None = None) -> pd.DataFrame:
    """Top-``k`` items for each of ``users``: one row per (user, rank) with columns ``user``, ``rank`` (1 = best),
    ``item``, ``score``, ``text`` (when the dataset has item text) and ``held_out`` ("valid" / "test" when the item
    is in that held-out split of the user, else "").

    ``users`` and the ``user`` / ``item`` columns are the ids of the dataset's ``.inter`` file, also for a run
    whose data was thinned (``keep < 1``) and re-indexed.

    ``exclude_seen`` masks the user's training items (what evaluation masks too), so held-out hits can show up.
    """
    k = _check_k(k)
    model, ds = _model_and_data(run, device)
    users = _user_rows(users, ds)
    dev = _device_of(model)
    with model.evaluating():
        scores = model.score(torch.as_tensor(users, device=dev)).float().cpu().numpy()
    if exclude_seen:
        seen = ds.train[users]
        scores[seen.nonzero()] = -np.inf
    k = min(k, ds.n_items)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    rows = np.repeat(users, k), top.ravel()  # dataset rows; the table speaks the file's ids
    found = np.isfinite(top_scores.ravel())  # fewer unseen items than k
    u_rows, i_rows = rows[0][found], rows[1][found]
    out = pd.DataFrame({"user": ds.user_id(u_rows), "rank": np.tile(np.arange(1, k + 1), len(users))[found],
                        "item": ds.item_id(i_rows), "score": top_scores.ravel()[found]})
    if ds.item_text is not None:
        out["text"] = [ds.item_text[i] for i in i_rows]
    held = np.full(len(out), "", dtype=object)
    for split in ("valid", "test"):
        m = ds.split(split)
        held[np.asarray(m[u_rows, i_rows]).ravel() > 0] = split
    out["held_out"] = held
    return out


def score_new_items(run, features: Mapping[str, np.ndarray], users: int | Sequence[int] | None = None,
                    device: str | None = None) -> pd.DataFrame:
    """Scores of brand-new items for users, without retraining: a DataFrame indexed by ``user`` (the file's
    userIDs; default: every user) with one column per new item (0 .. n_new - 1), comparable with the scores of the
    known items.

    ``features``: {modality: (n_new, d_m) array} for every modality the run uses (``RunConfig.modalities``, default
    all of the dataset's; others are ignored), in the same feature space as the dataset's
    ``<modality>_feat.npy``. The items are tokenized with the run's fitted tokenizer; graph
    backbones see them as items without interactions. Raises for an ID model, which has no vector for an unseen
    item."""
    model, ds = _model_and_data(run, device)
    users = np.arange(ds.n_users) if users is None else _user_rows(users, ds)
    user_vecs, item_vecs, n_new = _with_new_items(model, ds, run, features)
    scores = (user_vecs[torch.as_tensor(users, device=user_vecs.device)] @ item_vecs.T).float().cpu().numpy()
    return pd.DataFrame(scores, index=pd.Index(ds.user_id(users), name="user"),
                        columns=pd.RangeIndex(n_new, name="new_item"))


def new_item_vectors(run, features: Mapping[str, np.ndarray], device: str | None = None) -> np.ndarray:
    """(n_new, d) item vectors of brand-new items (what a user vector is multiplied with to score them)."""
    model, ds = _model_and_data(run, device)
    return _with_new_items(model, ds, run, features)[1].float().cpu().numpy()


def new_item_tokens(run, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{modality: (n_new, D) token ids} of brand-new items under the run's fitted tokenizer."""
    cfg = _config(run)
    _refuse_id_model(cfg)
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    return _encode(cfg, ds, _checked_features(ds, features, cfg.modalities), _stored_tokens(run))


# ----------------------------------------------------------------------------------------------- internals


def _config(run):
    if isinstance(run, str):
        return config_from_dict(runs.read(run)["config"])
    return config_from_dict(run.config)


def _refuse_id_model(cfg) -> None:
    if cfg.item_repr == "id":
        raise ValueError("this run is an ID model (item_repr='id'): an ID model has one trained vector per item it "
                         "was trained on and no vector for an unseen item, so it cannot score new items without "
                         "retraining. Use a MOTOR run (item_repr 'ms' or 'ma'), whose item vectors come from "
                         "feature tokens.")


def _model_and_data(run, device: str | None):
    """(model in eval-ready state, the run's dataset) for a RunResult with a model, else rebuilt from the registry."""
    cfg = _config(run)
    model = None if isinstance(run, str) else getattr(run, "model", None)
    if model is None:
        folder = _folder(run)
        model = _saved_model(str(folder), _mtime(folder))
        model.to(device or "cpu")
    elif device is not None:
        model.to(device)
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    return model, ds


def _folder(run) -> Path:
    """The folder a saved run is read from: the RunResult's own (``motor.load_run``), else its id's in the registry."""
    folder = None if isinstance(run, str) else getattr(run, "folder", None)
    return Path(folder) if folder is not None else runs.locate(run if isinstance(run, str) else run.run_id)


def _stored_tokens(run) -> tuple[dict, dict] | None:
    """({modality: tokenizer}, {modality: token ids}) the run was trained with: the RunResult's own, else its
    folder's ``tokenizer.npz``; None for a run saved without them (before they were stored)."""
    if not isinstance(run, str) and getattr(run, "tokenizers", None) is not None:
        return run.tokenizers, run.token_ids
    folder = _folder(run)
    return read_tokenizers(folder) if (folder / "metrics.json").is_file() else None


def _mtime(folder: Path) -> tuple:
    """(time, size) of the run's metrics.json and weights: a rewritten file is read again, not served cached."""
    stats = [(folder / name).stat() if (folder / name).is_file() else None
             for name in ("metrics.json", runs.WEIGHTS_FILE)]
    return tuple((s.st_mtime_ns, s.st_size) if s else None for s in stats)


@functools.lru_cache(maxsize=4)
def _saved_model(folder: str, mtime: tuple):
    """The trained model of a saved run folder, rebuilt from its config, its stored token ids and
    ``model_state.npz`` (cached per file time)."""
    base = Path(folder)
    run_id = base.name
    cfg = config_from_dict(runs.read_folder(base)["config"])
    if not (base / runs.WEIGHTS_FILE).is_file():
        runs.read_weights(run_id, {}, base)  # the FileNotFoundError that says how to get weights
    stored = read_tokenizers(base)
    with torch.random.fork_rng(devices=[]):  # building seeds torch's RNG; leave the caller's untouched
        model, _, _ = build_model(cfg, token_ids=None if stored is None else stored[1])
    state = runs.read_weights(run_id, weights_description(run_id, model), base)  # checked: this run's, intact
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    except RuntimeError as exc:
        raise runs.RunReadError(f"run {run_id}: its weights {base / runs.WEIGHTS_FILE} do not fit "
                                f"the rebuilt model ({str(exc).splitlines()[0]}). Fix: train the run again with "
                                "save_model=True.") from None
    return model


def _device_of(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"recommend: k={k!r} ({type(k).__name__}) is not a number of items. Fix: a whole number "
                         ">= 1, e.g. k=10.")
    return int(k)


def _user_rows(users, ds) -> np.ndarray:
    """Dataset rows of ``users`` (userIDs of the dataset's file: an int or a sequence of ints)."""
    arr = np.atleast_1d(np.asarray(users))
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or (arr.size == 0 and arr.dtype == float)):
        raise ValueError(f"users must be an int or a sequence of ints (userIDs of the dataset's .inter file), got "
                         f"{users!r}. Fix: e.g. users=[0, 7].")
    return ds.user_index(arr.astype(np.int64))


def _checked_features(ds, features: Mapping[str, np.ndarray], modalities=None) -> dict[str, np.ndarray]:
    """The run's ``modalities`` (default: every modality of ``ds``) present, with the dataset's feature width and
    one common row count; other modalities of the dataset are ignored (the run never reads them)."""
    mods = list(modalities or ds.modalities)
    if not isinstance(features, Mapping):
        raise ValueError(f"features must be a dict {{modality: (n_new, d) array}} for the modalities {mods}, got "
                         f"{type(features).__name__}")
    missing = [m for m in mods if m not in features]
    extra = [m for m in features if m not in ds.modalities]
    if missing or extra:
        raise ValueError(f"features must hold the run's modalities {mods}; missing {missing}, unknown {extra} "
                         f"(dataset {ds.name!r} has {ds.modalities}). Fix: one (n_new, d) array per run modality.")
    out, rows = {}, set()
    for m in mods:
        try:
            x = np.asarray(features[m], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"features[{m!r}] is not a numeric matrix ({exc}). Fix: a float array (n_new, "
                             f"{ds.features[m].shape[1]}) like the dataset's {m}_feat.npy.") from None
        width = ds.features[m].shape[1]
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"features[{m!r}] must have shape (n_new, {width}) like the dataset's {m}_feat.npy, "
                             f"got {x.shape}")
        if not np.isfinite(x).all():
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise ValueError(f"features[{m!r}] has NaN or infinite values (first in new item {row}). Fix: impute "
                             "them (e.g. with the modality's mean vector).")
        out[m] = x
        rows.add(x.shape[0])
    if len(rows) != 1 or 0 in rows:
        raise ValueError(f"every modality needs the same number (>= 1) of new items; got rows {sorted(rows)}")
    return out


def _encode(cfg, ds, feats: dict[str, np.ndarray], stored: tuple[dict, dict] | None) -> dict[str, np.ndarray]:
    """Token ids of new items under the tokenizers the run used: the stored ones, or (a run saved before they were
    stored) refitted with the run's settings, which must give the run's own token ids."""
    disambiguate = bool(cfg.tokenizer.get("disambiguate", False))  # tokenize()'s option, not the tokenizer's
    toks, known = stored if stored is not None else run_tokenizers(replace(cfg, token_ids_from=None), ds)
    out = {}
    for m, tok in toks.items():
        if stored is not None:
            plain = np.asarray(known[m], dtype=np.int64)[:, :tok.n_tokens]  # without the disambiguating column
        else:  # the refit (or cached) tokenizer must give the run's own token ids
            plain = tok.encode(ds.features[m]).astype(np.int64)
            if not np.array_equal(disambiguate_codes(plain, tok.k) if disambiguate else plain, known[m]):
                raise RuntimeError(f"the {m} tokenizer does not reproduce the token ids of this run's items; its "
                                   "cache and the run come from different tokenizer versions. Train the run again.")
        new = tok.encode(feats[m]).astype(np.int64)
        # disambiguated: a new item sharing a known item's code is numbered after the known items of its group
        out[m] = disambiguate_codes(np.concatenate([plain, new]), tok.k)[len(plain):] if disambiguate else new
    return out


def _with_new_items(model, ds, run, features):
    """(user vectors, new item vectors, n_new): the trained weights in a model whose catalogue has the new items
    appended (no interactions, tokens from the run's tokenizer)."""

    cfg = _config(run)
    _refuse_id_model(cfg)
    feats = _checked_features(ds, features, cfg.modalities)
    ds = with_modalities(ds, cfg.modalities)  # the features the run reads (the new items get no others)
    n_new = next(iter(feats.values())).shape[0]
    stored = _stored_tokens(run)
    new_ids = _encode(cfg, ds, feats, stored)
    known = stored[1] if stored is not None else run_tokenizers(replace(cfg, token_ids_from=None), ds)[1]
    k = getattr(model.item_repr, "n_centroids", None) or n_centroids_of(known)
    top = max(int(t.max()) for t in new_ids.values())
    if top >= k:
        raise ValueError(f"a new item got token id {top}, which no training item uses (the model has {k} rows per "
                         "token table): its embedding was never trained")
    ids = {m: np.concatenate([known[m], new_ids[m]]) for m in known}
    big = _append_items(ds, feats, n_new)
    with torch.random.fork_rng(devices=[]):
        bigger, _, _ = build_model(cfg, big, ids, n_centroids=k)
    try:
        bigger.load_state_dict(model.state_dict())
    except RuntimeError as e:
        raise ValueError(f"item representation {cfg.item_repr!r} has parameters per known item, so an unseen item "
                         f"has no trained vector ({str(e).splitlines()[0]})") from None
    bigger.to(_device_of(model))
    with bigger.evaluating():
        u, i = (x.detach() for x in bigger._eval_cache)
    return u, i[ds.n_items:], n_new


def _append_items(ds, feats: dict[str, np.ndarray], n_new: int):
    """``ds`` with ``n_new`` items appended: their features, no interactions, no text."""
    n = ds.n_items + n_new

    def widen(m: sp.csr_matrix | None) -> sp.csr_matrix | None:
        if m is None:
            return None
        return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n))

    masks = {m: np.concatenate([mask, np.ones(n_new, dtype=bool)]) for m, mask in ds.feature_masks.items()}
    return replace(ds, n_items=n, train=widen(ds.train), valid=widen(ds.valid), test=widen(ds.test),
                   features={m: np.concatenate([ds.features[m], feats[m]]) for m in ds.modalities},
                   feature_masks=masks, timestamps=widen(ds.timestamps), item_ids=None,
                   item_text=None if ds.item_text is None else list(ds.item_text) + [""] * n_new)
