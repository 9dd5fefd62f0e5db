"""One call, one configuration: dataset -> tokens -> item representation -> backbone -> train -> evaluate -> save.

``motor.run(dataset="scientific", backbone="lightgcn", item_repr="ms", seed=0)`` returns a :class:`RunResult`
and saves it in the run registry (:mod:`motor.runs`). ``reuse=True`` returns the saved run with the same
configuration instead of training again.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import runs
from .backbones import build
from .data import Dataset, available, load, resplit
from .evaluate import DEFAULT_BUCKETS, evaluate
from .item_repr import ITEM_REPRS, build_item_repr
from .synthetic import synthetic
from .tokenizer import n_centroids_of, tokenize
from .train import TrainConfig, train


@dataclass
class RunConfig:
    """Everything that defines a run. ``split``: "given" (the file's x_label), "random" (paper 8:1:1), "loo",
    "cold_item"; the split is drawn with ``split_seed`` (fixed across model seeds, so runs are paired)."""

    dataset: str = "scientific"
    split: str = "random"
    split_seed: int = 0
    backbone: str = "lightgcn"
    item_repr: str = "ms"
    modalities: list | None = None
    n_tokens: int = 4
    n_centroids: int = 256
    dim: int = 64
    seed: int = 0
    epochs: int = 300
    patience: int = 20
    lr: float = 1e-3
    batch_size: int = 2048
    device: str = "cpu"
    hparams: dict = field(default_factory=dict)
    tcn: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)  # extra PQTokenizer parameters, e.g. {"subspace_seeds": True}
    cold_fraction: float = 0.2
    tag: str = ""

    def run_id(self) -> str:
        d = asdict(self)
        d.pop("device")  # the device does not change what is computed (up to float rounding)
        if not d["tokenizer"]:  # added later: runs with the default tokenizer keep their ids
            d.pop("tokenizer")
        digest = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
        mods = "+".join(self.modalities) if self.modalities else "all"
        return f"{self.dataset}-{self.split}-{self.backbone}-{self.item_repr}-{mods}-D{self.n_tokens}-s{self.seed}-{digest}"


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

    def summary(self) -> pd.DataFrame:
        """valid/test metrics side by side."""
        return pd.DataFrame({"valid": self.valid, "test": self.test}).drop(index="n_users", errors="ignore")


def resolve_dataset_name(name: str, verbose: bool = True) -> str:
    """``name`` if it can be loaded, else ``"synthetic"`` with one line saying why (the main job never fails)."""
    if name == "synthetic" or Path(name).is_dir() or name in available():
        return name
    if verbose:
        from .data import data_root

        print(f"dataset {name!r} not found under {data_root()} (set MOTOR_DATA); using the built-in synthetic "
              "dataset instead.")
    return "synthetic"


@functools.lru_cache(maxsize=16)
def get_dataset(name: str, split: str = "random", split_seed: int = 0, cold_fraction: float = 0.2) -> Dataset:
    """Load (or generate) a dataset and apply the split scheme; cached in-process."""
    ds = synthetic(seed=0) if name == "synthetic" else load(name)
    if split == "given":
        return ds
    return resplit(ds, split, seed=split_seed, cold_fraction=cold_fraction)


def run(config: RunConfig | None = None, *, reuse: bool = False, save: bool = True, progress: bool = True,
        keep_model: bool = True, save_vectors: bool = False, **kwargs) -> RunResult:
    """Train and evaluate one configuration; see :class:`RunConfig` for the keyword arguments."""
    cfg = config or RunConfig(**kwargs)
    if config is not None and kwargs:
        cfg = RunConfig(**{**asdict(config), **kwargs})
    if cfg.item_repr not in ITEM_REPRS:
        raise ValueError(f"unknown item_repr {cfg.item_repr!r}; use one of {ITEM_REPRS}")
    rid = cfg.run_id()
    if reuse and runs.exists(rid):
        return from_registry(rid)
    timings = {}
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction)
    t0 = time.perf_counter()
    token_ids, k = None, cfg.n_centroids
    if cfg.item_repr != "id":
        token_ids = tokenize(ds, cfg.n_tokens, n_centroids=cfg.n_centroids, modalities=cfg.modalities,
                             **cfg.tokenizer)
        k = n_centroids_of(token_ids, cfg.n_centroids)
    timings["tokenize_seconds"] = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    rep = build_item_repr(cfg.item_repr, ds.n_items, cfg.dim, token_ids=token_ids, n_centroids=k,
                          modalities=cfg.modalities, **cfg.tcn)
    model = build(cfg.backbone, ds, rep, **({"dim": cfg.dim} if cfg.backbone != "pop" else {}), **cfg.hparams)
    tr = train(model, ds, TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                                      patience=cfg.patience, seed=cfg.seed, device=cfg.device, progress=progress))
    timings["train_seconds"] = tr.train_seconds
    if len(tr.history):
        timings["seconds_per_epoch"] = float(tr.history["train_seconds"].mean())
        timings["seconds_per_eval"] = float(tr.history["eval_seconds"].mean())
    test = evaluate(model, ds, "test", buckets=DEFAULT_BUCKETS, device=cfg.device)
    timings["test_eval_seconds"] = test.seconds
    n_item = model.item_parameters()
    params = {"total": model.n_parameters(), "item": n_item,
              "item_fraction": n_item / float(ds.n_items * cfg.dim), "id_table": ds.n_items * cfg.dim}
    vectors = None
    if save_vectors:
        with model.evaluating():
            vectors = model._eval_cache[1].detach().cpu().numpy()
    result = RunResult(rid, {**asdict(cfg), "dataset_summary": _jsonable(ds.summary())}, tr.best_valid, test.metrics,
                       test.buckets, tr.history, test.per_user, params, timings, tr.best_epoch, tr.stopped,
                       model if keep_model else None, vectors)
    if save:
        runs.save(result)
    return result


def run_grid(configs: list[RunConfig], train_missing: bool = True, **run_kwargs) -> tuple[list[RunResult], list[str]]:
    """Results for every config: from the registry when saved, trained (and saved) otherwise — or, with
    ``train_missing=False``, skipped. Returns (results, run ids that are missing and were not trained)."""
    results, missing = [], []
    for cfg in configs:
        if train_missing or runs.exists(cfg.run_id()):
            results.append(run(cfg, reuse=True, **run_kwargs))  # reuse: a saved run is read, not retrained
        else:
            missing.append(cfg.run_id())
    return results, missing


def from_registry(run_id: str) -> RunResult:
    r = runs.read(run_id)
    return RunResult(run_id, r["config"], r["valid"], r["test"], r["buckets"], r["history"], r["per_user"],
                     r["params"], r["timings"], r["best_epoch"], r["stopped"], None, r["item_vectors"])


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def fast_mode(value: bool | None = None) -> bool:
    """Notebook ``fast`` flag: an explicit value wins, else ``$MOTOR_FAST`` (CI sets it to 1)."""
    import os

    if value is not None:
        return bool(value)
    return os.environ.get("MOTOR_FAST", "0").lower() in ("1", "true", "yes")


def notebook_setup() -> None:
    """Plotly renderer that works in JupyterLab, in papermill/nbval outputs and in exported HTML."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook_connected"
