"""One call, one configuration: dataset -> tokens -> item representation -> backbone -> train -> evaluate -> save.

``motor.run(dataset="scientific", backbone="lightgcn", item_repr="ms", seed=0)`` returns a :class:`RunResult`
and saves it in the run registry (:mod:`motor.runs`). ``reuse=True`` returns the saved run with the same
configuration instead of training again.
"""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import runs
from .backbones import backbone_class, build

# moved to motor.config and motor.data (issue 25); still importable from here
from .config import ConfigError as ConfigError
from .config import RunConfig
from .config import config_from_dict as config_from_dict
from .config import dataset_id as dataset_id
from .config import item_repr_names as item_repr_names
from .data import DEFAULT_DATASET as DEFAULT_DATASET
from .data import SPLIT_SCHEMES as SPLIT_SCHEMES
from .data import DataError, Dataset, load, resolve_dataset_name, resplit, sparsify
from .evaluate import DEFAULT_BUCKETS, evaluate, evaluate_cold_candidates
from .item_repr import build_item_repr, item_repr_class
from .synthetic import synthetic
from .tokenizer import (
    collision_share,
    encode_items,
    fit_tokenizers,
    n_centroids_of,
    tokenizer_from_state,
    tokenizer_state,
)
from .train import TrainConfig, model_layout, train, trainer_settings


@dataclass
class RunResult:
    run_id: str
    config: dict
    valid: dict
    test: dict
    buckets: pd.DataFrame
    history: pd.DataFrame
    per_user: pd.DataFrame
    params: dict
    timings: dict
    best_epoch: int
    stopped: str
    model: torch.nn.Module | None = None
    item_vectors: np.ndarray | None = None
    hit_profile: pd.DataFrame | None = None  # test hits per user by rank position and popularity bucket
    tokenizers: dict | None = None  # {modality: fitted tokenizer}; None for an ID model or a run saved without them
    token_ids: dict | None = None  # {modality: (n_items, D) token ids the model was trained on}
    folder: Path | None = None  # the run folder it was read from or saved to (None: not on disk)

    def summary(self) -> pd.DataFrame:
        """valid/test metrics side by side."""
        return pd.DataFrame({"valid": self.valid, "test": self.test}).drop(index="n_users", errors="ignore")


@functools.lru_cache(maxsize=16)
def get_dataset(name: str, split: str = "random", split_seed: int = 0, cold_fraction: float = 0.2,
                keep: float = 1.0) -> Dataset:
    """Load (or generate) a dataset, keep a ``keep`` share of each user's interactions (``data.sparsify`` with
    seed ``split_seed``) and apply the split scheme; cached in-process."""
    ds = synthetic(seed=0) if name == "synthetic" else load(name)
    if keep != 1.0:
        ds = sparsify(ds, keep, seed=split_seed)
    if split == "given":
        return ds
    return resplit(ds, split, seed=split_seed, cold_fraction=cold_fraction)


def with_modalities(ds: Dataset, modalities: list[str] | None) -> Dataset:
    """``ds`` with only the features of ``modalities`` (None: ``ds`` itself); the interactions are shared."""
    if not modalities:
        return ds
    unknown = [m for m in modalities if m not in ds.features]
    if unknown:
        raise ValueError(f"RunConfig.modalities: {unknown} not among dataset {ds.name!r}'s modalities "
                         f"{ds.modalities}; pick from those (or None for all)")
    keep = set(modalities)
    return replace(ds, features={m: f for m, f in ds.features.items() if m in keep},
                   feature_masks={m: f for m, f in ds.feature_masks.items() if m in keep})


def tokenizer_fit_items(cfg: RunConfig, ds: Dataset) -> np.ndarray | None:
    """Items the run's tokenizer is fitted on: None (every item), except for a cold_item split with
    ``tokenizer_items="train"``: every item but the held-out cold ones (in valid or test, never in train)."""
    if cfg.split != "cold_item" or cfg.tokenizer_items == "all":
        return None
    held = np.union1d(ds.split("valid").indices, ds.split("test").indices)
    cold = np.setdiff1d(held, ds.split("train").indices)
    return np.setdiff1d(np.arange(ds.n_items), cold)


def run_tokenizers(cfg: RunConfig, ds: Dataset) -> tuple[dict | None, dict[str, np.ndarray] | None]:
    """({modality: fitted tokenizer}, {modality: token ids of every item}) of a run of ``cfg`` ((None, None) for an
    ID model): from ``cfg.token_ids_from`` when set, else fitted (cached by content and parameters) on
    :func:`tokenizer_fit_items`."""
    if not item_repr_class(cfg.item_repr).needs_tokens:
        return None, None
    if cfg.token_ids_from is not None:
        return stored_tokens(cfg, ds)
    params = {k: v for k, v in cfg.tokenizer.items() if k != "disambiguate"}
    items = tokenizer_fit_items(cfg, ds)
    toks = fit_tokenizers(ds, cfg.n_tokens, modalities=cfg.modalities, n_centroids=cfg.n_centroids, items=items,
                          **params)
    return toks, encode_items(ds, toks, bool(cfg.tokenizer.get("disambiguate", False)), use_cached=items is None)


def run_tokens(cfg: RunConfig, ds: Dataset) -> dict[str, np.ndarray] | None:
    """The token ids a run of ``cfg`` uses (None for an ID model); see :func:`run_tokenizers`."""
    return run_tokenizers(cfg, ds)[1]


_SAME_TOKENS = ("dataset", "split", "split_seed", "cold_fraction", "keep", "modalities", "n_tokens", "n_centroids",
                "tokenizer", "tokenizer_items")  # the fields that decide a run's token ids


def stored_tokens(cfg: RunConfig, ds: Dataset) -> tuple[dict, dict[str, np.ndarray]]:
    """The stored tokenizer and token ids of the run ``cfg.token_ids_from`` names, after checking that it is a run
    of the same tokenization (:data:`_SAME_TOKENS`) on the same items."""
    source = cfg.token_ids_from
    folder = Path(source) if Path(source).is_dir() else runs.locate(str(source))
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"RunConfig.token_ids_from={source!r}: no saved run there ({folder}). Fix: name a run id "
                          "of the registry or a run folder.")
    other = config_from_dict(runs.read_folder(folder)["config"])
    differ = [f for f in _SAME_TOKENS if getattr(other, f) != getattr(cfg, f)]
    if differ:
        raise ConfigError(f"RunConfig.token_ids_from={source!r}: that run's tokenization differs in "
                          + ", ".join(f"{f} ({getattr(other, f)!r} there, {getattr(cfg, f)!r} here)" for f in differ)
                          + ". Fix: name a run with the same dataset, split and tokenizer settings.")
    stored = read_tokenizers(folder)
    if stored is None:
        raise ConfigError(f"RunConfig.token_ids_from={source!r}: {folder} holds no tokenizer state "
                          f"({runs.TOKENIZER_FILE}; an ID model, or saved by an older motor). Fix: leave "
                          "token_ids_from unset to fit the tokenizer.")
    toks, ids = stored
    bad = [m for m, t in ids.items() if len(t) != ds.n_items]
    if bad:
        raise ConfigError(f"RunConfig.token_ids_from={source!r}: stored {bad[0]} token ids cover {len(ids[bad[0]])} "
                          f"items, the dataset has {ds.n_items}. Fix: the dataset changed since; fit again.")
    return toks, ids


def read_tokenizers(folder: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """({modality: tokenizer}, {modality: token ids}) stored in a run folder; None when it holds none (an ID model,
    or a run saved before tokenizer state was stored). A damaged or foreign file raises :class:`runs.RunReadError`."""
    state = runs.read_tokenizer_state(folder)
    if state is None:
        return None
    toks, ids = {}, {}
    for m, arrays in state.items():
        try:
            ids[m] = arrays.pop("token_ids").astype(np.int64)
            toks[m] = tokenizer_from_state(arrays)
        except (KeyError, ValueError) as exc:
            raise runs.RunReadError(f"run folder {folder}: {runs.TOKENIZER_FILE}, modality {m!r}: {exc}. Fix: delete "
                                    "the file (the run then refits its tokenizer) or train the run again.") from exc
    return toks, ids


def build_model(cfg: RunConfig, ds: Dataset | None = None, token_ids: dict[str, np.ndarray] | None = None,
                n_centroids: int | None = None):
    """The untrained model of ``cfg`` (seeded with ``cfg.seed``): item representation inside its backbone, on
    ``ds`` (default: the run's dataset and split) and ``token_ids`` (default: :func:`run_tokens`); ``n_centroids``
    overrides the token tables' rows (default: the effective K of ``token_ids``). Returns (model, ds, token_ids)."""
    ds = ds if ds is not None else get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    if token_ids is None:
        token_ids = run_tokens(cfg, ds)
    k = n_centroids or (n_centroids_of(token_ids) if token_ids is not None else cfg.n_centroids)
    torch.manual_seed(cfg.seed)
    rep = build_item_repr(cfg.item_repr, ds.n_items, cfg.dim, token_ids=token_ids, n_centroids=k,
                          modalities=cfg.modalities, item_popularity=ds.item_popularity, **cfg.tcn)
    dim = {"dim": cfg.dim} if backbone_class(cfg.backbone).takes_dim else {}
    model = build(cfg.backbone, with_modalities(ds, cfg.modalities), rep, **dim, **cfg.hparams)
    return model, ds, token_ids


def run(config: RunConfig | None = None, *, reuse: bool = False, save: bool = True, progress: bool = True,
        keep_model: bool = True, save_vectors: bool = False, save_model: bool | None = None,
        callbacks: tuple = (), **kwargs) -> RunResult:
    """Train and evaluate one configuration; see :class:`RunConfig` for the keyword arguments.

    No ``dataset`` (or None): ``scientific`` when it is under the data root, else the synthetic set (one line says
    so); a named dataset that does not exist raises, listing those found. ``save_model`` (default: ``keep_model``)
    also saves the trained weights in the registry, so :func:`motor.recommend` works on the run id later.
    ``callbacks``: ``f(epoch, record)`` after every epoch (see :func:`motor.train.train`)."""
    if config is None and not kwargs.get("dataset"):
        kwargs["dataset"] = resolve_dataset_name(None)
    cfg = config or RunConfig(**kwargs)
    if config is not None and kwargs:
        cfg = RunConfig(**{**asdict(config), **kwargs})
    if isinstance(cfg.dataset, os.PathLike):  # a pathlib.Path names a folder as well as its str
        cfg = replace(cfg, dataset=os.fspath(cfg.dataset))
    if isinstance(cfg.token_ids_from, os.PathLike):
        cfg = replace(cfg, token_ids_from=os.fspath(cfg.token_ids_from))
    cfg.validate()  # before anything is loaded: a bad parameter costs no loading or tokenizing
    cfg = _own_trainer_as_none(cfg)
    rid = cfg.run_id()
    assert runs.run_path(rid).parent == runs.runs_dir(), rid  # a run folder always lives in the registry
    if reuse and runs.exists(rid):
        try:
            return from_registry(rid)
        except runs.RunReadError as exc:
            warnings.warn(f"{exc} Training it again.", stacklevel=2)
    if save:  # a registry (or run folder) that cannot take the result fails now, not after training
        runs.check_writable(run_id=rid)
    timings = {}
    resolve_dataset_name(cfg.dataset)  # a missing dataset: an error that lists those found
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    _check_evaluable(ds, cfg)
    t0 = time.perf_counter()
    tokenizers, token_ids = run_tokenizers(cfg, ds)
    timings["tokenize_seconds"] = time.perf_counter() - t0
    model, _, _ = build_model(cfg, ds, token_ids)
    weights = weights_description(rid, model)  # of the built model, as motor.recommend rebuilds it
    if save:  # and the disk must hold what this run writes
        keep_weights = keep_model if save_model is None else save_model
        weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) if keep_weights else 0
        runs.check_writable(run_id=rid, need_bytes=runs.expected_bytes(
            weight_bytes, ds.n_users, ds.n_items, cfg.dim, cfg.epochs, save_vectors))
    tr = train(model, ds, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                      patience=cfg.patience, seed=cfg.seed, device=cfg.device, progress=progress,
                                      weight_decay=cfg.weight_decay, lr_schedule=cfg.lr_schedule), callbacks)
    if tr.stopped != "not_trainable" and len(tr.history) == 0:
        raise RuntimeError(f"run {rid} trained zero epochs (epochs={cfg.epochs}); nothing is saved.")
    timings["train_seconds"] = tr.train_seconds
    if len(tr.history):
        timings["seconds_per_epoch"] = float(tr.history["train_seconds"].mean())
        timings["seconds_per_eval"] = float(tr.history["eval_seconds"].mean())
    test = evaluate(model, ds, "test", buckets=DEFAULT_BUCKETS, device=cfg.device)
    timings["test_eval_seconds"] = test.seconds
    if cfg.split == "cold_item":  # the cold-start papers' protocol too: rank only the cold items
        cold = evaluate_cold_candidates(model, ds, "test", device=cfg.device)
        test.metrics.update({f"cold_candidates_{k}": v for k, v in cold.metrics.items()})
    n_item = model.item_parameters()
    params = {"total": model.n_parameters(), "item": n_item,
              "item_fraction": n_item / float(ds.n_items * cfg.dim), "id_table": ds.n_items * cfg.dim}
    if token_ids is not None:  # items whose whole code (every modality the run reads) is another item's too
        params["shared_code_fraction"] = collision_share(token_ids)["all"]
    vectors = None
    if save_vectors:
        vectors = model.item_vectors().cpu().numpy()
    result = RunResult(rid, {**asdict(cfg), "trainer": _jsonable(tr.extra.get("trainer", {})),
                             "dataset_summary": _jsonable(ds.summary())}, tr.best_valid, test.metrics,
                       test.buckets, tr.history, test.per_user, params, timings, tr.best_epoch, tr.stopped,
                       model if keep_model else None, vectors, test.hit_profile, tokenizers, token_ids)
    if save:
        keep_weights = keep_model if save_model is None else save_model
        result.folder = runs.save(result, model_state=model_state(model) if keep_weights else None,
                                  weights_description=weights,
                                  tokenizer_state=tokenizers_state(tokenizers, token_ids))
    return result


def tokenizers_state(tokenizers: dict | None, token_ids: dict | None) -> dict[str, dict[str, np.ndarray]] | None:
    """What a run folder stores per modality: the tokenizer's state (:func:`motor.tokenizer.tokenizer_state`) and
    the token ids the model was trained on."""
    if tokenizers is None:
        return None
    return {m: {**tokenizer_state(tok), "token_ids": np.asarray(token_ids[m])} for m, tok in tokenizers.items()}


def _check_evaluable(ds: Dataset, cfg: RunConfig) -> None:
    """Model selection needs valid interactions and the result needs test interactions; refuse a split that
    has none rather than report epoch 0 or empty metrics."""
    if ds.n_items < 2:
        raise DataError(f"dataset {cfg.dataset!r} has {ds.n_items} item after dropping duplicate (user, item) rows "
                        f"({ds.summary()['interactions']:,} interactions left): a recommender ranks items, so it "
                        "needs at least 2. Fix: a dataset with more items (duplicate rows of one (user, item) pair "
                        "count once).")
    for part, label in (("valid", 1), ("test", 2)):
        if ds.split(part).nnz == 0:
            raise DataError(f"dataset {cfg.dataset!r} with split={cfg.split!r} has no {part} interactions, so "
                            f"{'no epoch can be selected' if part == 'valid' else 'there is nothing to test on'}. "
                            f"Fix: split='random' (or 'loo'), or give some rows x_label {label} in the .inter "
                            "file.")


def model_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as CPU numpy arrays (what the registry saves as ``model_state.npz``)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def weights_description(run_id: str, model: torch.nn.Module) -> dict:
    """What ``model_state.npz`` is stamped with and checked against on load: the run id, the model's class and
    its layout (:func:`motor.train.model_layout`), so another run's weights are never served as this run's."""
    return {"run_id": run_id, "model": type(model).__name__, "model_layout": model_layout(model)}


def _own_trainer_as_none(cfg: RunConfig) -> RunConfig:
    """``cfg`` with an explicit weight decay / lr schedule equal to the backbone's own set to None (the same run,
    so the same id and no variant name)."""
    own = RunConfig(backbone=cfg.backbone).trainer()
    wd, sched = cfg.weight_decay, cfg.lr_schedule
    if wd is not None and trainer_settings(None, wd)["weight_decay"] == own["weight_decay"]:
        wd = None
    if sched is not None and trainer_settings(None, None, sched)["lr_schedule"] == own["lr_schedule"]:
        sched = None
    if (wd, sched) == (cfg.weight_decay, cfg.lr_schedule):
        return cfg
    return RunConfig(**{**asdict(cfg), "weight_decay": wd, "lr_schedule": sched})


def run_grid(configs: list[RunConfig], train_missing: bool = True, on_result=None,
             **run_kwargs) -> tuple[list[RunResult], list[str]]:
    """Results for every config: from the registry when saved, trained (and saved) otherwise — or, with
    ``train_missing=False``, skipped. ``on_result(result)`` is called after each (e.g. to print progress).
    Returns (results, run ids that are missing and were not trained)."""
    results, missing = [], []
    for cfg in configs:
        if train_missing or runs.exists(cfg.run_id()):
            results.append(run(cfg, reuse=True, **run_kwargs))  # reuse: a saved run is read, not retrained
            if on_result is not None:
                on_result(results[-1])
        else:
            missing.append(cfg.run_id())
    return results, missing


def from_registry(run_id: str) -> RunResult:
    """The saved run ``run_id`` of the registry (:func:`motor.runs.locate`), without its model."""
    return load_run(runs.locate(run_id), run_id)


def load_run(path: str | os.PathLike, run_id: str | None = None) -> RunResult:
    """A saved run folder anywhere (a registry's, a copied one) as a :class:`RunResult` (model not loaded:
    :func:`motor.recommend` rebuilds it from the folder's weights; tokenizers and token ids when stored)."""
    folder = Path(path).expanduser()
    r = runs.read_folder(folder, run_id)
    stored = read_tokenizers(folder)
    toks, ids = stored if stored is not None else (None, None)
    return RunResult(r["run_id"], r["config"], r["valid"], r["test"], r["buckets"], r["history"], r["per_user"],
                     r["params"], r["timings"], r["best_epoch"], r["stopped"], None, r["item_vectors"],
                     r.get("hit_profile"), toks, ids, folder)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
