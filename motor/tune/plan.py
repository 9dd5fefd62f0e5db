"""Planning and selection of a search, with nothing run: the search space of a backbone, the trials of a search
(:func:`plan`), the trials table (:func:`trials_frame`) and the selection on valid (:func:`select`). Pure functions
of the configuration and the registry's saved metrics; :mod:`motor.tune.ray` runs the trials."""
from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import runs
from ..backbones import BASELINES, REGISTRY
from ..config import RunConfig
from ..evaluate import DEFAULT_KS

N_TOKENS_SPACE = [2, 4, 8, 16]  # paper section 4.4: D per modality, K = 256
BUDGETS = ("grid", "asha")
COMPLETE = ("trained", "reused")  # statuses of trials whose run is in the registry
# RunConfig fields a search space cannot set: they name the search itself, or are groups set by dotted names
_NOT_SEARCHABLE = {"dataset", "backbone", "item_repr", "seed", "hparams", "tcn", "tokenizer", "device"}
_TOKEN_ONLY = {"n_tokens", "n_centroids"}


class Tuned(NamedTuple):
    """What :func:`tune` returns: one row per trial, and one row per (dataset, backbone, item_repr) selected."""

    trials: pd.DataFrame
    selected: pd.DataFrame


@dataclass
class _Trial:
    dataset: str
    backbone: str
    item_repr: str
    point: int  # index of the point in the (possibly sampled) grid
    values: dict  # the point as searched, e.g. {"n_tokens": 2, "reg_weight": 0.01}
    seed: int
    config: object  # RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id()


def _backbone_class(name: str):
    cls = REGISTRY.get(name.lower()) or BASELINES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown backbone {name!r}; available: {sorted(REGISTRY) + sorted(BASELINES)}")
    return cls


def _constructor_defaults(cls) -> dict:
    """The backbone's hyper-parameters (constructor arguments after dataset, item_repr, dim) and their defaults."""
    skip = {"self", "dataset", "item_repr", "dim"}
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def default_space(backbone: str, item_repr: str = "ms", small: bool = False) -> dict[str, list]:
    """The backbone's ``SEARCH_SPACE`` (MMRec's grid) plus ``n_tokens`` in {2, 4, 8, 16} for token
    representations; ``small``: the first searched hyper-parameter only, at its default and the next grid value
    (smoke tests, CI)."""
    cls = _backbone_class(backbone)
    grid = getattr(importlib.import_module(cls.__module__), "SEARCH_SPACE", {})
    space = {k: list(v) for k, v in grid.items()}
    if small:  # the first hyper-parameter with a choice: its default and the next grid value (the default run too)
        for name, values in space.items():
            if len(values) > 1:
                default = _default_of(name, cls)
                i = values.index(default) if default in values else 0
                return {name: values[i:i + 2] if i + 1 < len(values) else values[i - 1:i + 1]}
        return {}
    if item_repr != "id":
        space["n_tokens"] = list(N_TOKENS_SPACE)
    return space


def _default_of(name: str, cls):
    """The default value of a search-space name (a RunConfig field or a constructor argument), else None."""
    config_defaults = {f.name: f.default for f in fields(RunConfig)}
    return _constructor_defaults(cls).get(name, config_defaults.get(name))


def _where(name: str, cls, backbone: str) -> tuple[str, str]:
    """(group, key) a search-space name sets: ("config", field), ("hparams" | "tcn" | "tokenizer", key)."""
    group, _, key = name.partition(".")
    if key and group in ("hparams", "tcn", "tokenizer"):
        if group == "hparams" and key not in _constructor_defaults(cls):
            raise ValueError(f"search space: {name!r} is not a hyper-parameter of {backbone} "
                             f"({sorted(_constructor_defaults(cls))})")
        return group, key
    config_fields = {f.name for f in fields(RunConfig)} - _NOT_SEARCHABLE
    if name in config_fields:
        return "config", name
    if name in _constructor_defaults(cls):
        return "hparams", name
    raise ValueError(
        f"search space: {name!r} is neither a RunConfig field ({sorted(config_fields)}) nor a hyper-parameter of "
        f"{backbone} ({sorted(_constructor_defaults(cls))}). Fix: use one of those names, or 'tcn.<name>' / "
        "'tokenizer.<name>' for the token representation.")


def _token_only(name: str) -> bool:
    return name in _TOKEN_ONLY or name.startswith(("tcn.", "tokenizer."))


def check_space(space: dict, backbone: str, item_repr: str) -> dict[str, list]:
    """``space`` validated for this backbone: every name known, every value list non-empty (a scalar is a
    one-value list), token-only names dropped for ``item_repr="id"``."""
    if not isinstance(space, dict):
        raise TypeError(f"search space must be a dict {{name: [values]}}, got {type(space).__name__}: {space!r}")
    cls = _backbone_class(backbone)
    out = {}
    for name, values in space.items():
        values = list(values) if isinstance(values, (list, tuple, range, np.ndarray)) else [values]
        if not values:
            raise ValueError(f"search space: {name!r} has no values. Fix: give at least one value, e.g. [1e-4].")
        _where(name, cls, backbone)
        if item_repr == "id" and _token_only(name):
            continue  # an ID model has no tokens: these values would only repeat the same training
        out[name] = values
    return out


def grid_points(space: dict[str, list]) -> list[dict]:
    """Every point of the product of ``space``'s value lists, in order (the last name varies fastest)."""
    names = list(space)
    return [dict(zip(names, vals)) for vals in itertools.product(*(space[n] for n in names))]


def _format_point(values: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _config(base: dict, values: dict, backbone: str, seed: int):
    """The RunConfig of one point: ``base`` (fixed fields) with the point's values set where they belong; a
    hyper-parameter equal to the backbone's default is left out (the same run as the default one)."""
    cls = _backbone_class(backbone)
    cfg = {**base, "seed": seed}
    groups = {g: dict(cfg.get(g) or {}) for g in ("hparams", "tcn", "tokenizer")}
    for name, value in values.items():
        group, key = _where(name, cls, backbone)
        if group == "config":
            cfg[key] = value
        else:
            groups[group][key] = value
    defaults = _constructor_defaults(cls)
    groups["hparams"] = {k: v for k, v in groups["hparams"].items()
                         if not (k in defaults and type(v) is not bool and v == defaults[k])}
    return RunConfig(**{**cfg, **groups})


def plan(dataset: str | Sequence[str], backbone: str | Sequence[str], item_repr: str | Sequence[str],
         space: dict | str | None = None, *, epochs: int | None = None, seeds: Sequence[int] = (0,),
         budget: str | int = "grid", sample_seed: int = 0, **run_kwargs) -> list[_Trial]:
    """The trials of a search, without running anything (see :func:`tune` for the arguments)."""
    names = {f.name for f in fields(RunConfig)}
    bad = sorted(set(run_kwargs) - names)
    if bad:
        raise ValueError(f"unknown run settings {bad}; RunConfig fields are {sorted(names)}")
    if not (budget in BUDGETS or (isinstance(budget, int) and not isinstance(budget, bool) and budget > 0)):
        raise ValueError(f"budget must be 'grid', 'asha' or a number of points > 0, got {budget!r}")
    seeds = [int(s) for s in ([seeds] if isinstance(seeds, int) else seeds)]
    if not seeds:
        raise ValueError("seeds is empty. Fix: give at least one seed, e.g. seeds=(0,).")
    base = {**run_kwargs}
    if epochs is not None:
        base["epochs"] = int(epochs)
    out: list[_Trial] = []
    for ds, bb, kind in itertools.product(_as_list(dataset), _as_list(backbone), _as_list(item_repr)):
        if space is None or space == "small":
            sp = default_space(bb, kind, small=space == "small")
            sp = {k: v for k, v in sp.items() if k not in base}  # a fixed setting wins over the default grid
        elif isinstance(space, str):
            raise TypeError(f"space must be a dict, None (MMRec's grid) or 'small', got {space!r}")
        else:
            sp = space
        sp = check_space(sp, bb, kind)
        clash = sorted(set(sp) & set(base))
        if clash:
            raise ValueError(f"{clash} are both searched (space) and fixed (keyword arguments); keep one")
        points = grid_points(sp)
        if isinstance(budget, int) and budget < len(points):
            rng = np.random.default_rng(sample_seed)
            points = [points[i] for i in sorted(rng.choice(len(points), size=budget, replace=False))]
        for p, values in enumerate(points):
            for seed in seeds:
                cfg = _config({**base, "dataset": ds, "backbone": bb, "item_repr": kind}, values, bb, seed)
                out.append(_Trial(ds, bb, kind, p, values, seed, cfg))
    return out


def _as_list(x) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def _registry_meta(run_id: str) -> dict:
    """A saved run's metrics.json without its test metrics (selection never sees them)."""
    meta = runs.read_metrics(run_id)
    meta.pop("test", None)
    return meta


def _test_metrics(run_id: str) -> dict:
    """Test metrics of one run: read only for the selected configurations."""
    return runs.read_metrics(run_id)["test"]


def trials_frame(trials: list[_Trial], outcome: dict[str, dict], metric: str = "recall@20") -> pd.DataFrame:
    """One row per trial: identity, searched values, status and (for saved runs) the valid metrics."""
    rows = []
    for t in trials:
        rid = t.run_id
        out = outcome.get(rid, {"status": "not_run"})
        row = {"dataset": t.dataset, "split": t.config.split, "backbone": t.backbone, "item_repr": t.item_repr,
               "point": t.point, "seed": t.seed, "hyper_parameters": _format_point(t.values), **t.values,
               "run_id": rid, "status": out["status"]}
        if out["status"] in COMPLETE:
            meta = _registry_meta(rid)
            row.update({f"valid_{k}": v for k, v in meta["valid"].items() if k != "n_users"})
            row.update({"best_epoch": meta.get("best_epoch"), "stopped": meta.get("stopped"),
                        "train_seconds": (meta.get("timings") or {}).get("train_seconds")})
        elif out["status"] == "stopped_early":
            row.update({f"valid_{metric}": out.get("best_valid"), "stopped": "asha",
                        "epochs_run": out.get("epochs_run")})
        else:
            row["error"] = out.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def select(trials: pd.DataFrame, plan_: list[_Trial], metric: str = "recall@20") -> pd.DataFrame:
    """Per (dataset, backbone, item_repr): the point with the best mean valid ``metric`` among points whose every
    seed was trained to its end (ties: the first point); then, for that point only, its test metrics."""
    col = f"valid_{metric}"
    by_id = {t.run_id: t for t in plan_}
    rows = []
    for (ds, bb, kind), g in trials.groupby(["dataset", "backbone", "item_repr"], sort=False):
        n_seeds = g.seed.nunique()
        done = g[g.status.isin(COMPLETE)]
        full = pd.DataFrame()
        if len(done) and col in done:
            per_point = done.groupby("point").agg(valid=(col, "mean"), n=("seed", "nunique"))
            full = per_point[per_point.n == n_seeds].sort_index()
        row = {"dataset": ds, "backbone": bb, "item_repr": kind, "n_points": int(g.point.nunique()),
               "n_complete": len(full)}
        if full.empty:
            rows.append({**row, "hyper_parameters": None, "run_ids": (), f"valid_{metric}": np.nan})
            continue
        best = int(full["valid"].idxmax())  # the index is sorted by point: the first of equal maxima
        chosen = done[done.point == best].sort_values("seed")
        tests = pd.DataFrame([_test_metrics(r) for r in chosen.run_id]).mean(numeric_only=True)
        t0 = by_id[chosen.run_id.iloc[0]]
        rows.append({**row, "point": best, "hyper_parameters": _format_point(t0.values), "params": dict(t0.values),
                     "run_ids": tuple(chosen.run_id), "seeds": tuple(int(s) for s in chosen.seed),
                     f"valid_{metric}": float(full.loc[best, "valid"]),
                     **{f"test_{k}": float(v) for k, v in tests.items() if k != "n_users"},
                     "config": t0.config})
    return pd.DataFrame(rows)


class TuneError(RuntimeError):
    """A search selected nothing; ``trials`` holds the trial table (statuses and errors)."""

    def __init__(self, message: str, trials: pd.DataFrame | None = None):
        super().__init__(message)
        self.trials = trials


def check_metric(metric) -> str:
    """``metric`` if it is a valid metric every run records (``recall@20``, ``ndcg@10``, ...), else a ValueError
    listing those."""
    names = [f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit") for k in DEFAULT_KS]
    if metric not in names:
        raise ValueError(f"metric {metric!r} is not a valid metric that runs record; use one of {names} "
                         "(e.g. metric='recall@20').")
    return metric


def refuse_empty_selection(table: pd.DataFrame, selected: pd.DataFrame, metric: str) -> None:
    """A :class:`TuneError` naming each (dataset, backbone, item_repr) for which no point was selected, with the
    trials' statuses and first error."""
    empty = selected[[not ids for ids in selected.run_ids]] if len(selected) else selected
    if len(selected) and empty.empty:
        return
    lines = []
    for row in empty.itertuples(index=False):
        g = table[(table.dataset == row.dataset) & (table.backbone == row.backbone)
                  & (table.item_repr == row.item_repr)]
        errors = [e for e in g.get("error", pd.Series(dtype=object)).dropna() if e]
        counts = ", ".join(f"{n} {s}" for s, n in g.status.value_counts().items())
        lines.append(f"{row.dataset}/{row.backbone}/{row.item_repr}: {len(g)} trials ({counts})"
                     + (f"; first error: {errors[0]}" if errors else ""))
    raise TuneError(f"the search selected nothing on valid {metric} for " + "; ".join(lines or ["any trial"])
                    + ". Fix: look at the trials' errors (TuneError.trials), fix their cause (data, settings, "
                    "space) and run the search again (saved trials are reused).", table)
