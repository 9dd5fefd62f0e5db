"""Use a trained run: top-k recommendations for users, and scores for brand-new items from their features alone.

``recommend(run, users, k)`` ranks every item for each user (the user's training items masked, as in evaluation)
and returns a tidy DataFrame. ``score_new_items(run, features)`` is MOTOR's point: a new item's features are turned
into tokens by the tokenizer the run was trained with, its vector comes from the trained token tables and Token
Cross Network, and every user gets a score for it, with no retraining. An ID model cannot do that: it has one
trained row per known item and none for an unseen one.

``run`` is a :class:`motor.experiment.RunResult` (its model in memory, as ``motor.run`` returns it) or a run id. A
run from the registry is rebuilt from its config and the weights saved with it (``model_state.npz``, written by
``motor.run`` unless ``save_model=False``; ``python -m motor train`` saves them too). Rebuilding needs the run's
dataset under the data root.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import runs
from .config import config_from_dict
from .experiment import build_model, get_dataset, run_tokens
from .tokenizer import fit_tokenizers, n_centroids_of


def recommend(run, users: int | Sequence[int], k: int = 20, exclude_seen: bool = True,
              device: str | None = None) -> pd.DataFrame:
    """Top-``k`` items for each of ``users``: one row per (user, rank) with columns ``user``, ``rank`` (1 = best),
    ``item``, ``score``, ``text`` (when the dataset has item text) and ``held_out`` ("valid" / "test" when the item
    is in that held-out split of the user, else "").

    ``exclude_seen`` masks the user's training items (what evaluation masks too), so held-out hits can show up.
    """
    model, ds = _model_and_data(run, device)
    users = _user_index(users, ds.n_users)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dev = _device_of(model)
    with model.evaluating():
        scores = model.score(torch.as_tensor(users, device=dev)).float().cpu().numpy()
    if exclude_seen:
        seen = ds.train[users]
        scores[seen.nonzero()] = -np.inf
    k = min(k, ds.n_items)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    rows = {"user": np.repeat(users, k), "rank": np.tile(np.arange(1, k + 1), len(users)), "item": top.ravel(),
            "score": top_scores.ravel()}
    out = pd.DataFrame(rows)
    out = out[np.isfinite(out.score)].reset_index(drop=True)  # fewer unseen items than k
    if ds.item_text is not None:
        out["text"] = [ds.item_text[i] for i in out.item]
    held = np.full(len(out), "", dtype=object)
    for split in ("valid", "test"):
        m = ds.split(split)
        held[np.asarray(m[out.user.to_numpy(), out.item.to_numpy()]).ravel() > 0] = split
    out["held_out"] = held
    return out


def score_new_items(run, features: Mapping[str, np.ndarray], users: int | Sequence[int] | None = None,
                    device: str | None = None) -> pd.DataFrame:
    """Scores of brand-new items for users, without retraining: a DataFrame indexed by ``user`` (default: every
    user) with one column per new item (0 .. n_new - 1), comparable with the scores of the known items.

    ``features``: {modality: (n_new, d_m) array} for every modality of the run's dataset, in the same feature space
    as the dataset's ``<modality>_feat.npy``. The items are tokenized with the run's fitted tokenizer; graph
    backbones see them as items without interactions. Raises for an ID model, which has no vector for an unseen
    item."""
    model, ds = _model_and_data(run, device)
    users = np.arange(ds.n_users) if users is None else _user_index(users, ds.n_users)
    user_vecs, item_vecs, n_new = _with_new_items(model, ds, run, features)
    scores = (user_vecs[torch.as_tensor(users, device=user_vecs.device)] @ item_vecs.T).float().cpu().numpy()
    return pd.DataFrame(scores, index=pd.Index(users, name="user"), columns=pd.RangeIndex(n_new, name="new_item"))


def new_item_vectors(run, features: Mapping[str, np.ndarray], device: str | None = None) -> np.ndarray:
    """(n_new, d) item vectors of brand-new items (what a user vector is multiplied with to score them)."""
    model, ds = _model_and_data(run, device)
    return _with_new_items(model, ds, run, features)[1].float().cpu().numpy()


def new_item_tokens(run, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{modality: (n_new, D) token ids} of brand-new items under the run's fitted tokenizer."""
    cfg = _config(run)
    _refuse_id_model(cfg)
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    return _encode(cfg, ds, _checked_features(ds, features))


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
        run_id = run if isinstance(run, str) else run.run_id
        model = _registry_model(str(runs.runs_dir()), run_id, _mtime(run_id))
        model.to(device or "cpu")
    elif device is not None:
        model.to(device)
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    return model, ds


def _mtime(run_id: str) -> float:
    path = runs.locate(run_id) / "metrics.json"
    return path.stat().st_mtime if path.is_file() else 0.0


@functools.lru_cache(maxsize=4)
def _registry_model(root: str, run_id: str, mtime: float):
    """The trained model of a saved run, rebuilt from its config and ``model_state.npz`` (cached per file time)."""
    cfg = config_from_dict(runs.read(run_id)["config"])
    path = runs.locate(run_id) / "model_state.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"run {run_id!r} under {root} was saved without its weights ({path.name}), so it cannot be rebuilt. "
            "Fix: pass the RunResult that motor.run(...) returns (it holds the model), or train it again with "
            f"motor.run(motor.experiment.config_from_dict(motor.runs.read({run_id!r})['config']), save_model=True).")
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k]) for k in z.files}
    with torch.random.fork_rng(devices=[]):  # building seeds torch's RNG; leave the caller's untouched
        model, _, _ = build_model(cfg)
    model.load_state_dict(state)
    return model


def _device_of(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _user_index(users, n_users: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(users))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"users must be an int or a sequence of ints (user indices), got {users!r}")
    bad = arr[(arr < 0) | (arr >= n_users)]
    if len(bad):
        raise ValueError(f"user indices must be in [0, {n_users}); got {bad[:5].tolist()}")
    return arr.astype(np.int64)


def _checked_features(ds, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every modality of ``ds`` present, with the dataset's feature width and one common row count."""
    if not isinstance(features, Mapping):
        raise ValueError("features must be a dict {modality: (n_new, d) array}")
    missing = [m for m in ds.modalities if m not in features]
    extra = [m for m in features if m not in ds.modalities]
    if missing or extra:
        raise ValueError(f"features must hold exactly the dataset's modalities {ds.modalities}; "
                         f"missing {missing}, unknown {extra}")
    out, rows = {}, set()
    for m in ds.modalities:
        x = np.asarray(features[m], dtype=np.float32)
        width = ds.features[m].shape[1]
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"features[{m!r}] must have shape (n_new, {width}) like the dataset's {m}_feat.npy, "
                             f"got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"features[{m!r}] has NaN or infinite values")
        out[m] = x
        rows.add(x.shape[0])
    if len(rows) != 1 or 0 in rows:
        raise ValueError(f"every modality needs the same number (>= 1) of new items; got rows {sorted(rows)}")
    return out


def _encode(cfg, ds, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Token ids of new items under the tokenizers the run used (same parameters: the same cached fit)."""
    known = run_tokens(cfg, ds)
    toks = fit_tokenizers(ds, cfg.n_tokens, modalities=sorted(known), n_centroids=cfg.n_centroids, **cfg.tokenizer)
    for m, tok in toks.items():  # the refit (or cached) tokenizer must give the run's own token ids
        if not np.array_equal(tok.encode(ds.features[m]), known[m]):
            raise RuntimeError(f"the {m} tokenizer does not reproduce the token ids of this run's items; its cache "
                               "and the run come from different tokenizer versions. Train the run again.")
    return {m: tok.encode(feats[m]) for m, tok in toks.items()}


def _with_new_items(model, ds, run, features):
    """(user vectors, new item vectors, n_new): the trained weights in a model whose catalogue has the new items
    appended (no interactions, tokens from the run's tokenizer)."""
    cfg = _config(run)
    _refuse_id_model(cfg)
    feats = _checked_features(ds, features)
    n_new = next(iter(feats.values())).shape[0]
    new_ids = _encode(cfg, ds, feats)
    known = run_tokens(cfg, ds)
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
                   feature_masks=masks, timestamps=widen(ds.timestamps),
                   item_text=None if ds.item_text is None else list(ds.item_text) + [""] * n_new)
