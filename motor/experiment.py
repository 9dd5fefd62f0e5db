"""One call, one configuration: dataset -> tokens -> item representation -> backbone -> train -> evaluate -> save.

``motor.run(dataset="scientific", backbone="lightgcn", item_repr="ms", seed=0)`` returns a :class:`RunResult`
and saves it in the run registry (:mod:`motor.runs`). ``reuse=True`` returns the saved run with the same
configuration instead of training again.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import runs
from .backbones import BASELINES, REGISTRY, backbone_class, build

# moved to motor.data; still importable from here
from .data import DEFAULT_DATASET as DEFAULT_DATASET
from .data import SPLIT_SCHEMES, DataError, Dataset, load, resolve_dataset_name, resplit, sparsify
from .defaults import BATCH_SIZE, DIM, EPOCHS, LR, N_CENTROIDS, N_TOKENS, PATIENCE
from .evaluate import DEFAULT_BUCKETS, evaluate, evaluate_cold_candidates
from .item_repr import build_item_repr, item_repr_class
from .synthetic import synthetic
from .tokenizer import PQTokenizer, check_params, collision_share, n_centroids_of, tokenize
from .train import TrainConfig, train, trainer_settings


@dataclass
class RunConfig:
    """Everything that defines a run. ``split``: "given" (the file's x_label), "random" (paper 8:1:1), "loo",
    "cold_item"; the split is drawn with ``split_seed`` (fixed across model seeds, so runs are paired).

    ``item_repr``: a registered item representation (``motor.item_repr.ITEM_REPRS``), ``tcn`` its keyword
    arguments. ``modalities``: the modalities the run uses (default all): the tokens are built from them and the
    backbone reads only their features, so ``["text"]`` is a text-only model (a "text tokens only" run of VBPR
    never reads the image features). ``hparams``: the backbone's keyword arguments."""

    dataset: str = "scientific"
    split: str = "random"
    split_seed: int = 0
    backbone: str = "lightgcn"
    item_repr: str = "ms"
    modalities: list | None = None
    n_tokens: int = N_TOKENS
    n_centroids: int = N_CENTROIDS
    dim: int = DIM
    seed: int = 0
    epochs: int = EPOCHS
    patience: int = PATIENCE
    lr: float = LR
    batch_size: int = BATCH_SIZE
    device: str = "cpu"
    hparams: dict = field(default_factory=dict)
    tcn: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)  # extra PQTokenizer parameters, e.g. {"subspace_seeds": True}
    cold_fraction: float = 0.2
    tag: str = ""
    keep: float = 1.0  # share of each user's interactions kept before splitting (data.sparsify, seed split_seed)
    weight_decay: float | None = None  # Adam weight decay; None: the backbone's own (train.trainer_settings)
    lr_schedule: list | None = None  # (factor, epochs): lr x factor ** (epoch / epochs); None: the backbone's own

    def trainer(self) -> dict:
        """Effective weight decay and lr schedule (explicit values, else the backbone's ``trainer_defaults``)."""
        cls = REGISTRY.get(self.backbone.lower()) or BASELINES.get(self.backbone.lower())
        return trainer_settings(cls, self.weight_decay, self.lr_schedule)

    def run_id(self) -> str:
        d = asdict(self)
        d.pop("device")  # the device does not change what is computed (up to float rounding)
        # fields added later leave the ids of runs at their defaults unchanged
        if not d["tokenizer"]:
            d.pop("tokenizer")
        if d["keep"] == 1.0:
            d.pop("keep")
        d.pop("weight_decay"), d.pop("lr_schedule")
        trainer = {k: v for k, v in self.trainer().items() if v}  # effective values: 0 / constant drop out
        if trainer:
            d["trainer"] = trainer
        digest = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
        mods = "+".join(self.modalities) if self.modalities else "all"
        data = dataset_id(self.dataset)
        data = data if self.keep == 1.0 else f"{data}@keep{self.keep:g}"
        return f"{data}-{self.split}-{self.backbone}-{self.item_repr}-{mods}-D{self.n_tokens}-s{self.seed}-{digest}"


    def validate(self) -> "RunConfig":
        """Check every field's type and range before anything is loaded; returns ``self``. A
        :class:`ConfigError` names the field, its value and the allowed values. The modalities are checked against
        the dataset once it is loaded."""
        _check(isinstance(self.dataset, str) and self.dataset.strip() != "" and "\0" not in self.dataset,
               "dataset", self.dataset, "a dataset name under the data root, 'synthetic', or a folder path (a str)")
        _check(self.split in SPLIT_SCHEMES, "split", self.split, f"one of {list(SPLIT_SCHEMES)}")
        for name in ("split_seed", "seed"):
            _int_field(self, name, 0, 2 ** 32 - 1)
        names = sorted(REGISTRY) + sorted(BASELINES)
        _check(isinstance(self.backbone, str) and self.backbone.lower() in names, "backbone", self.backbone,
               f"one of {names}")
        reprs = item_repr_names()
        _check(isinstance(self.item_repr, str) and self.item_repr in reprs, "item_repr", self.item_repr,
               f"one of {reprs} (registered item representations)")
        if isinstance(self.modalities, str):
            raise ConfigError(f"RunConfig.modalities={self.modalities!r}: a list of modality names, e.g. "
                              f"[{self.modalities!r}], or None for all (a string would be read letter by letter)")
        _check(self.modalities is None or (isinstance(self.modalities, (list, tuple)) and len(self.modalities) > 0
                                           and all(isinstance(m, str) and _MODALITY.fullmatch(m)
                                                   for m in self.modalities)
                                           and len(set(self.modalities)) == len(self.modalities)),
               "modalities", self.modalities, "None (all) or a non-empty list of distinct modality names "
               "(letters, digits, '_', '-', '.')")
        for name, low in (("n_tokens", 1), ("dim", 1), ("epochs", 1), ("patience", 1), ("batch_size", 1)):
            _int_field(self, name, low)
        k = self.n_centroids
        _check(_is_int(k) and 2 <= k <= 256 and not k & (k - 1), "n_centroids", k,
               "a power of two in [2, 256] (2, 4, ..., 256)")
        _check(_is_real(self.lr) and 0 < self.lr < float("inf"), "lr", self.lr, "a finite number > 0")
        _check(_is_real(self.cold_fraction) and 0 < self.cold_fraction < 1, "cold_fraction", self.cold_fraction,
               "a number in (0, 1)")
        _check(_is_real(self.keep) and 0 < self.keep <= 1, "keep", self.keep, "a number in (0, 1]")
        _check(isinstance(self.tag, str), "tag", self.tag, "a str")
        _check_device(self.device)
        _check_kwargs(self, "hparams", _init_parameters(backbone_class(self.backbone), 3))
        _check_kwargs(self, "tcn", _init_parameters(item_repr_class(self.item_repr), 0,
                                                    skip=("n_items", "dim", "token_ids", "n_centroids", "modalities")))
        _check_kwargs(self, "tokenizer", [f.name for f in fields(PQTokenizer)
                                          if f.name not in ("n_tokens", "n_centroids", "rotation", "centroids")]
                      + ["disambiguate"])  # tokenize()'s own option
        try:
            check_params(PQTokenizer(n_tokens=self.n_tokens, n_centroids=self.n_centroids,
                                     **{k: v for k, v in self.tokenizer.items() if k != "disambiguate"}))
        except ValueError as exc:
            raise ConfigError(f"RunConfig.tokenizer={self.tokenizer!r}: {exc}") from None
        try:
            self.trainer()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"RunConfig.weight_decay={self.weight_decay!r} / lr_schedule={self.lr_schedule!r}: "
                              f"{exc}") from None
        return self


_MODALITY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PLAIN_DATASET = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class ConfigError(ValueError):
    """A run parameter has the wrong type or value; the message names the parameter, the value and what is
    allowed."""


def item_repr_names() -> list[str]:
    """Names of the registered item representations (asked each time: a notebook may register more)."""
    from . import item_repr

    return list(item_repr.ITEM_REPRS)


def dataset_id(dataset: str) -> str:
    """The dataset part of a run id. A plain name (``scientific``) stays as it is, so the ids of saved runs do
    not change; anything else (a path) becomes the slug of the folder's name plus a hash of its resolved path,
    so that a run id is always one folder name under the registry and two folders of one name stay apart."""
    if _PLAIN_DATASET.fullmatch(dataset):
        return dataset
    folder = Path(dataset).expanduser().resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.") or "dataset"
    return f"{slug}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and np.isfinite(v)


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"RunConfig.{name}={value!r} ({type(value).__name__}) is not allowed: use {allowed}.")


def _int_field(cfg, name: str, low: int, high: int | None = None) -> None:
    v = getattr(cfg, name)
    bounds = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    _check(_is_int(v) and v >= low and (high is None or v <= high), name, v, bounds)


def _check_device(device) -> None:
    """``device`` must name a device this torch can use: "cpu", "cuda", "cuda:N" (N < the visible count),
    "mps"."""
    allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"RunConfig.device={device!r} is not a device name: use {allowed}.") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ConfigError(f"RunConfig.device={device!r}: CUDA is not available in this torch build (torch "
                              f"{torch.__version__} is CPU-only). Fix: device='cpu', or install a CUDA build of "
                              "torch.")
        count = torch.cuda.device_count()
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise ConfigError(f"RunConfig.device={device!r}: this machine shows {count} CUDA device(s). Fix: "
                              f"device='cpu'{' or cuda:0..cuda:' + str(count - 1) if count else ''}.")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"RunConfig.device={device!r}: MPS is not available on this machine. Fix: "
                              "device='cpu'.")
    elif dev.type != "cpu":
        raise ConfigError(f"RunConfig.device={device!r}: motor runs on {allowed}.")


def _init_parameters(cls, n_positional: int, skip: tuple = ()) -> dict | None:
    """Keyword parameters of ``cls.__init__`` after ``self`` and ``n_positional`` data arguments, with their
    defaults (None when it takes ``**kwargs``: anything may be right)."""
    import inspect

    params = list(inspect.signature(cls.__init__).parameters.values())[1 + n_positional:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params if p.name not in skip and p.name != "dim"}


def _same_kind(value, default) -> bool:
    """Whether ``value`` can stand where ``default`` is the default (bool, int, real, str or sequence)."""
    if isinstance(default, (bool, np.bool_)):
        return isinstance(value, (bool, np.bool_))
    if isinstance(default, (int, np.integer)):
        return _is_int(value)
    if isinstance(default, (float, np.floating)):
        return _is_real(value)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True  # no default, or None: the class checks it


def _check_kwargs(cfg, name: str, allowed: dict | list | None) -> None:
    value = getattr(cfg, name)
    _check(isinstance(value, dict) and all(isinstance(k, str) for k in value), name, value,
           "a dict of keyword arguments (str keys)")
    unknown = [k for k in value if allowed is not None and k not in allowed]
    if unknown:
        raise ConfigError(f"RunConfig.{name} has unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
    for key, v in value.items():
        default = allowed.get(key) if isinstance(allowed, dict) else None
        if not _same_kind(v, default):
            raise ConfigError(f"RunConfig.{name}[{key!r}]={v!r} ({type(v).__name__}): expected a value like its "
                              f"default {default!r} ({type(default).__name__}).")


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


def run_tokens(cfg: RunConfig, ds: Dataset) -> dict[str, np.ndarray] | None:
    """The token ids a run of ``cfg`` uses (None for an ID model); cached by content and parameters."""
    if not item_repr_class(cfg.item_repr).needs_tokens:
        return None
    return tokenize(ds, cfg.n_tokens, n_centroids=cfg.n_centroids, modalities=cfg.modalities, **cfg.tokenizer)


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
                          modalities=cfg.modalities, **cfg.tcn)
    dim = {"dim": cfg.dim} if backbone_class(cfg.backbone).takes_dim else {}
    model = build(cfg.backbone, with_modalities(ds, cfg.modalities), rep, **dim, **cfg.hparams)
    return model, ds, token_ids


def config_from_dict(d: dict) -> RunConfig:
    """A :class:`RunConfig` from a saved ``config.json`` (keys that are not fields, e.g. its summary, dropped)."""
    names = {f.name for f in fields(RunConfig)}
    return RunConfig(**{k: v for k, v in d.items() if k in names})


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
    cfg.validate()  # before anything is loaded: a bad parameter costs no loading or tokenizing
    cfg = _own_trainer_as_none(cfg)
    rid = cfg.run_id()
    assert runs.run_path(rid).parent == runs.runs_dir(), rid  # a run folder always lives in the registry
    if reuse and runs.exists(rid):
        try:
            return from_registry(rid)
        except runs.RunReadError as exc:
            warnings.warn(f"{exc} Training it again.", stacklevel=2)
    if save:
        runs.check_writable()  # a registry that cannot take the result fails now, not after training
    timings = {}
    resolve_dataset_name(cfg.dataset)  # a missing dataset: an error that lists those found
    ds = get_dataset(cfg.dataset, cfg.split, cfg.split_seed, cfg.cold_fraction, cfg.keep)
    _check_evaluable(ds, cfg)
    t0 = time.perf_counter()
    token_ids = run_tokens(cfg, ds)
    timings["tokenize_seconds"] = time.perf_counter() - t0
    model, _, _ = build_model(cfg, ds, token_ids)
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
                       model if keep_model else None, vectors, test.hit_profile)
    if save:
        keep_weights = keep_model if save_model is None else save_model
        runs.save(result, model_state=model_state(model) if keep_weights else None)
    return result


def _check_evaluable(ds: Dataset, cfg: RunConfig) -> None:
    """Model selection needs valid interactions and the result needs test interactions; refuse a split that
    has none rather than report epoch 0 or empty metrics."""
    for part, label in (("valid", 1), ("test", 2)):
        if ds.split(part).nnz == 0:
            raise DataError(f"dataset {cfg.dataset!r} with split={cfg.split!r} has no {part} interactions, so "
                            f"{'no epoch can be selected' if part == 'valid' else 'there is nothing to test on'}. "
                            f"Fix: split='random' (or 'loo'), or give some rows x_label {label} in the .inter "
                            "file.")


def model_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as CPU numpy arrays (what the registry saves as ``model_state.npz``)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


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
    r = runs.read(run_id)
    return RunResult(run_id, r["config"], r["valid"], r["test"], r["buckets"], r["history"], r["per_user"],
                     r["params"], r["timings"], r["best_epoch"], r["stopped"], None, r["item_vectors"],
                     r.get("hit_profile"))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
