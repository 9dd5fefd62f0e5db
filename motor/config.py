"""The run configuration: :class:`RunConfig` (every field that defines a run, with its help text), its validation
(:class:`ConfigError` names field, value and what is allowed), its run id, and :func:`from_dict` (a saved
``config.json`` back to a RunConfig). The command line is generated from the fields (``motor.cli``)."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .backbones import BASELINES, REGISTRY, backbone_class
from .data import SPLIT_SCHEMES
from .defaults import BATCH_SIZE, DIM, EPOCHS, LR, N_CENTROIDS, N_TOKENS, PATIENCE
from .item_repr import ITEM_REPRS, item_repr_class
from .runs import ADDED_FIELDS, non_default_fields
from .tokenizer import TOKENIZER_METHODS, check_params, tokenizer_class
from .train import trainer_settings


@dataclass
class RunConfig:
    """Everything that defines a run. ``split``: "given" (the file's x_label), "random" (paper 8:1:1), "loo",
    "cold_item"; the split is drawn with ``split_seed`` (fixed across model seeds, so runs are paired).

    ``item_repr``: a registered item representation (``motor.item_repr.ITEM_REPRS``), ``tcn`` its keyword
    arguments. ``modalities``: the modalities the run uses (default all): the tokens are built from them and the
    backbone reads only their features, so ``["text"]`` is a text-only model (a "text tokens only" run of VBPR
    never reads the image features). ``hparams``: the backbone's keyword arguments."""

    dataset: str = field(default="scientific", metadata={
        "help": "dataset folder name under $MOTOR_DATA, a folder path, or 'synthetic' (the command line's default: "
                "scientific when present, else synthetic)"})
    split: str = field(default="random", metadata={"help": f"split scheme, one of {', '.join(SPLIT_SCHEMES)}"})
    split_seed: int = field(default=0, metadata={"help": "seed of the split (fixed across model seeds: paired runs)"})
    backbone: str = field(default="lightgcn", metadata={"help": "a registered backbone, e.g. lightgcn, bpr, freedom"})
    item_repr: str = field(default="ms", metadata={
        "help": "a registered item representation, e.g. id, ms, ma (motor.item_repr.ITEM_REPRS)"})
    modalities: list | None = field(default=None, metadata={
        "help": "modalities the run uses, e.g. text (default: all)", "nargs": "*"})
    n_tokens: int = field(default=N_TOKENS, metadata={"help": "tokens per modality (D)"})
    n_centroids: int = field(default=N_CENTROIDS, metadata={"help": "token ids per position (K), a power of two"})
    dim: int = field(default=DIM, metadata={"help": "embedding size"})
    seed: int = field(default=0, metadata={"help": "model seed"})
    epochs: int = field(default=EPOCHS, metadata={"help": "maximum training epochs"})
    patience: int = field(default=PATIENCE, metadata={"help": "epochs without a better valid Recall@20 before "
                                                               "stopping"})
    lr: float = field(default=LR, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=BATCH_SIZE, metadata={"help": "training triples per step"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or mps"})
    hparams: dict = field(default_factory=dict, metadata={
        "help": "backbone settings as JSON, e.g. '{\"n_layers\": 3}'"})
    tcn: dict = field(default_factory=dict, metadata={
        "help": "item representation settings as JSON, e.g. '{\"hidden\": [64]}'"})
    tokenizer: dict = field(default_factory=dict, metadata={
        "help": "tokenizer family and settings as JSON: '{\"method\": \"rq\"}' (residual k-means; default opq), "
                "e.g. '{\"subspace_seeds\": true}'"})
    cold_fraction: float = field(default=0.2, metadata={"help": "share of items made cold by the cold_item split"})
    tag: str = field(default="", metadata={"help": "free label; tagged runs are kept out of the main tables"})
    keep: float = field(default=1.0, metadata={
        "help": "share of each user's interactions kept before splitting (data.sparsify, seed split_seed)"})
    weight_decay: float | None = field(default=None, metadata={
        "help": "Adam weight decay (default: the backbone's own)"})
    lr_schedule: list | None = field(default=None, metadata={
        "help": "[factor, epochs] as JSON: lr x factor ** (epoch / epochs) (default: the backbone's own)"})
    tokenizer_items: str = field(default="train", metadata={
        "help": "cold_item splits: fit the tokenizer on the non-cold items ('train', strict cold start) or on every "
                "item's features ('all', transductive); other splits always fit on all items"})
    token_ids_from: str | None = field(default=None, metadata={
        "help": "a saved run (id or folder) of the same tokenization whose stored tokenizer and token ids to use "
                "instead of fitting (re-trains a run to its own digits anywhere; not part of the run id)"})

    def __post_init__(self):
        if isinstance(self.tokenizer, dict) and self.tokenizer.get("method") == "opq":
            # the default family named is the same run as not naming it (one run id, one variant name)
            self.tokenizer = {k: v for k, v in self.tokenizer.items() if k != "method"}

    def trainer(self) -> dict:
        """Effective weight decay and lr schedule (explicit values, else the backbone's ``trainer_defaults``)."""
        cls = REGISTRY.get(self.backbone.lower()) or BASELINES.get(self.backbone.lower())
        return trainer_settings(cls, self.weight_decay, self.lr_schedule)

    def run_id(self) -> str:
        """``<dataset>-<split>-<backbone>-<item_repr>-<modalities>-D<n_tokens>-s<seed>-<hash of the fields>``."""
        d = asdict(self)
        d.pop("device")  # the device does not change what is computed (up to float rounding)
        d.pop("token_ids_from")  # only a run of the same tokenization is accepted (experiment.stored_tokens)
        d.pop("tokenizer_items")  # cold_item runs saved before it were fitted on all items: only "train" enters
        if self.split == "cold_item" and self.tokenizer_items == "train":
            d["tokenizer_items"] = "train"
        # fields added later leave the ids of runs at their defaults unchanged; weight decay and lr schedule enter
        # as the effective trainer settings below
        added = non_default_fields(d)
        for name in ADDED_FIELDS:
            d.pop(name)
        d.update({k: v for k, v in added.items() if k not in ("weight_decay", "lr_schedule")})
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
        _check(self.tokenizer_items in TOKENIZER_ITEMS, "tokenizer_items", self.tokenizer_items,
               f"one of {list(TOKENIZER_ITEMS)}")
        _check(self.token_ids_from is None or (isinstance(self.token_ids_from, (str, os.PathLike))
                                               and str(self.token_ids_from).strip() != ""),
               "token_ids_from", self.token_ids_from, "None, or a saved run's id or folder")
        _check_device(self.device)
        _check_kwargs(self, "hparams", _init_parameters(backbone_class(self.backbone), 3))
        _check_kwargs(self, "tcn", _init_parameters(item_repr_class(self.item_repr), 0,
                                                    skip=("n_items", "dim", "token_ids", "n_centroids", "modalities",
                                                          "item_popularity")))
        method = self.tokenizer.get("method", "opq") if isinstance(self.tokenizer, dict) else "opq"
        _check(isinstance(method, str) and method in TOKENIZER_METHODS, "tokenizer", self.tokenizer,
               f"a 'method' among {sorted(TOKENIZER_METHODS)} (tokenizer families), e.g. {{'method': 'rq'}}")
        tok_cls = tokenizer_class(method)
        _check_kwargs(self, "tokenizer", [f.name for f in fields(tok_cls)
                                          if f.name not in ("n_tokens", "n_centroids", "rotation", "centroids")]
                      + ["disambiguate", "method"])  # tokenize()'s own options
        max_dim = tok_cls.max_dim
        if method == "opq" and "max_dim" not in self.tokenizer and self.n_tokens > max_dim:  # not the default's fault
            raise ConfigError(f"RunConfig.n_tokens={self.n_tokens}: more tokens per modality than the tokenizer's "
                              f"output dimensions (max_dim={max_dim}; a token needs at least one). Fix: n_tokens <= "
                              f"{max_dim} (the paper uses 2-16), or raise tokenizer={{'max_dim': ...}}.")
        try:
            check_params(tok_cls(n_tokens=self.n_tokens, n_centroids=self.n_centroids,
                                 **{k: v for k, v in self.tokenizer.items() if k not in ("disambiguate", "method")}))
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


TOKENIZER_ITEMS = ("train", "all")  # RunConfig.tokenizer_items


class ConfigError(ValueError):
    """A run parameter has the wrong type or value; the message names the parameter, the value and what is
    allowed."""


def item_repr_names() -> list[str]:
    """Names of the registered item representations (asked each time: a notebook may register more)."""
    return list(ITEM_REPRS)


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


def from_dict(d: dict) -> RunConfig:
    """A :class:`RunConfig` from a saved ``config.json`` (keys that are not fields, e.g. its summary, dropped; a
    config saved before ``tokenizer_items`` existed was fitted on all items)."""
    names = {f.name for f in fields(RunConfig)}
    return RunConfig(**{"tokenizer_items": "all", **{k: v for k, v in d.items() if k in names}})


config_from_dict = from_dict  # the name before issue 25
