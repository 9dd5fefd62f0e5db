"""Hyper-parameter search on validation (paper section 4.4) with Ray Tune: every trial is one ``motor.run``.

    trials, selected = motor.tune("scientific", "lightgcn", "ms")        # MMRec's grid x D in {2, 4, 8, 16}
    trials, selected = motor.tune("scientific", ["bpr", "vbpr"], ["id", "ms"], budget=20, seeds=(0,))
    selected = motor.tune_seeds(selected, seeds=(0, 1, 2))             # the selected configurations' seeds

``trials`` has one row per trial (dataset, backbone, item_repr, point, seed, run_id, status, the searched values,
valid metrics, best epoch); ``selected`` one row per (dataset, backbone, item_repr): the point with the best mean
valid ``metric`` over ``seeds`` (ties: the first point of the grid), its hyper-parameters, its run ids and config,
and the test metrics of those runs only. Selection reads validation metrics only; the test metrics of the other
trials are never read here (the registry holds them, as for every run).

Search space: ``{name: [values]}``, searched as the full product. A name is a :class:`RunConfig` field (``lr``,
``n_tokens``, ``weight_decay``, ...), ``tcn.<name>`` / ``tokenizer.<name>``, or a constructor argument of the
backbone (its ``hparams``). ``space=None`` is the backbone's ``SEARCH_SPACE`` (MMRec's grid, written in each
backbone file) plus ``n_tokens`` in {2, 4, 8, 16} for token representations; ``space="small"`` is two values of
the backbone's first searched hyper-parameter, its default and the next grid value (a smoke test). Token-only
names (``n_tokens``, ``n_centroids``, ``tcn.*``, ``tokenizer.*``) are dropped for ``item_repr="id"``. A value equal
to the backbone's default is left out of ``hparams``, so a point at the defaults is the default run (same run id).

Budget: ``"grid"`` (every point), an int n (n points drawn from the grid with ``sample_seed``: a re-launch draws
the same ones), or ``"asha"`` (every point, Ray's ASHA scheduler stopping bad trials early on the per-epoch valid
metric; ``asha={"grace_period": 10, "reduction_factor": 3}``). A trial ASHA stops is not saved as a run: it was not
trained to its end, so it is listed with status ``stopped_early`` and never selected. Its stop is recorded in the
registry (``_tune/asha_stopped.json``, with the ASHA settings and the metric): a re-launch with the same settings
lists it as stopped again instead of training it (``reuse=False`` ignores the record and searches afresh).

Registry: a trial whose run is already saved (:func:`motor.runs.exists`) is not launched; when every trial is
saved, Ray is not even started, so a repeated search costs only reading the registry. Trials write to the
caller's ``MOTOR_RUNS`` / ``MOTOR_CACHE`` / ``MOTOR_DATA`` (passed to the workers).

Where trials run: locally by default (``ray.init`` with ``num_cpus`` CPUs, default all), trials in parallel, each
with ``cpus_per_trial`` CPUs and as many torch/OpenMP threads, and ``gpus_per_trial`` (fractions allowed; the trial
then trains on ``device="cuda"``). On a cluster::

    ray start --head --port=6379                 # on the head machine
    ray start --address=HEAD_IP:6379             # on every other machine
    python -m motor tune ... --address HEAD_IP:6379      # or RAY_ADDRESS=HEAD_IP:6379, or motor.tune(address=...)

Every machine needs motor installed (the same version) and the same ``MOTOR_RUNS``, ``MOTOR_DATA`` and
``MOTOR_CACHE`` paths on a shared file system (e.g. NFS): each trial writes its run into the registry there, and
that is how results come back; Ray returns only the per-epoch metrics. The caller checks every finished trial's
run is visible and raises if not.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np
import pandas as pd

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
    from .backbones import BASELINES, REGISTRY

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
    from .experiment import RunConfig

    config_defaults = {f.name: f.default for f in fields(RunConfig)}
    return _constructor_defaults(cls).get(name, config_defaults.get(name))


def _where(name: str, cls, backbone: str) -> tuple[str, str]:
    """(group, key) a search-space name sets: ("config", field), ("hparams" | "tcn" | "tokenizer", key)."""
    from .experiment import RunConfig

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
    from .experiment import RunConfig

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
    from .experiment import RunConfig

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
    from . import runs

    meta = json.loads((runs.locate(run_id) / "metrics.json").read_text())
    meta.pop("test", None)
    return meta


def _test_metrics(run_id: str) -> dict:
    """Test metrics of one run: read only for the selected configurations."""
    from . import runs

    return json.loads((runs.locate(run_id) / "metrics.json").read_text())["test"]


def tune(dataset: str | Sequence[str], backbone: str | Sequence[str], item_repr: str | Sequence[str] = "ms",
         space: dict | str | None = None, *, epochs: int | None = None, seeds: Sequence[int] = (0,),
         budget: str | int = "grid", address: str | None = None, num_cpus: int | None = None,
         cpus_per_trial: int = 1, gpus_per_trial: float = 0, metric: str = "recall@20", reuse: bool = True,
         progress: bool = True, asha: dict | None = None, sample_seed: int = 0, **run_kwargs) -> Tuned:
    """Search ``space`` for every (dataset, backbone, item_repr) given (each a name or a list) and select on valid.

    ``epochs``: maximum epochs per trial (default: RunConfig's); ``seeds``: model seeds per point (selection on
    their mean); ``budget``: "grid", n points, or "asha"; ``address``: a running Ray cluster (default
    ``$RAY_ADDRESS``, else a local Ray with ``num_cpus`` CPUs); ``cpus_per_trial`` / ``gpus_per_trial``: what one
    trial gets; ``metric``: valid metric to select on; ``reuse``: False retrains trials already saved;
    ``progress``: trials done / total, best valid so far and ETA on stderr; ``run_kwargs``: fixed RunConfig fields
    (``split``, ``patience``, ``hparams`` ...). Returns :class:`Tuned` (trials, selected); see the module doc.
    """
    if gpus_per_trial and "device" not in run_kwargs:
        run_kwargs["device"] = "cuda"
    trials = plan(dataset, backbone, item_repr, space, epochs=epochs, seeds=seeds, budget=budget,
                  sample_seed=sample_seed, **run_kwargs)
    outcome = _run_trials(trials, budget=budget, address=address, num_cpus=num_cpus, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial, metric=metric, reuse=reuse, progress=progress, asha=asha)
    table = trials_frame(trials, outcome, metric)
    return Tuned(table, select(table, trials, metric))


def _run_trials(trials: list[_Trial], *, budget="grid", address=None, num_cpus=None, cpus_per_trial=1,
                gpus_per_trial=0, metric="recall@20", reuse=True, progress=True, asha=None) -> dict[str, dict]:
    """Launch the trials whose run is not saved yet (one Ray trial per distinct run id); returns
    {run_id: {"status": ..., ...}} for every trial."""
    from . import runs

    outcome, todo = {}, {}
    stops = asha_settings(trials, asha, metric) if budget == "asha" else None
    recorded = recorded_stops() if stops and reuse else {}
    for t in trials:
        rid = t.run_id
        if rid in outcome or rid in todo:
            continue
        if reuse and runs.exists(rid):
            outcome[rid] = {"status": "reused"}
        elif stops and recorded.get(rid, {}).get("settings") == stops:
            outcome[rid] = {"status": "stopped_early", "recorded": True, **{
                k: recorded[rid].get(k) for k in ("best_valid", "epochs_run")}}
        else:
            todo[rid] = t
    if progress:
        n_stopped = sum(1 for o in outcome.values() if o.get("recorded"))
        label = ", ".join(sorted({f"{t.dataset}/{t.backbone}/{t.item_repr}" for t in trials}))
        print(f"[tune] {label}: {len(outcome) + len(todo)} trials, {len(outcome) - n_stopped} already in the "
              f"registry" + (f", {n_stopped} stopped by ASHA in an earlier search" if n_stopped else "")
              + f", {len(todo)} to run", file=sys.stderr, flush=True)
    if todo:
        new = _launch(list(todo.values()), budget=budget, address=address, num_cpus=num_cpus,
                      cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, metric=metric,
                      reuse=reuse, progress=progress, asha=asha)
        if stops:
            record_stops({rid: o for rid, o in new.items() if o["status"] == "stopped_early"}, stops)
        outcome.update(new)
    return outcome


STOPS_FILE = "_tune/asha_stopped.json"  # in a registry folder; runs.load reads only run folders


def _asha_options(max_epochs: int, asha: dict | None) -> dict:
    """ASHAScheduler's rung settings: the defaults, overridden by the caller's ``asha``."""
    return {"grace_period": min(10, max_epochs), "reduction_factor": 3, **(asha or {})}


def asha_settings(trials: list[_Trial], asha: dict | None, metric: str) -> dict:
    """What an ASHA stop depends on besides the trial itself: the scheduler's settings and the metric."""
    max_epochs = max(t.config.epochs for t in trials)
    return {"metric": metric, "max_epochs": max_epochs, **_asha_options(max_epochs, asha)}


def recorded_stops() -> dict[str, dict]:
    """{run_id: {"settings", "best_valid", "epochs_run"}} of the trials ASHA stopped in earlier searches: the
    reference registry's record, overridden by the user's."""
    from . import runs

    out: dict[str, dict] = {}
    for base in (runs.reference_dir(), runs.runs_dir()):
        path = base / STOPS_FILE if base is not None else None
        if path is not None and path.is_file():
            try:
                out.update(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                warnings.warn(f"{path}: unreadable record of ASHA-stopped trials ({exc}); those trials run again. "
                              "Fix: delete the file.", stacklevel=2)
    return out


def record_stops(stopped: dict[str, dict], settings: dict) -> None:
    """Add the trials ASHA stopped to the user's registry record, so a re-launch of the same search (same ASHA
    settings) lists them as stopped instead of training them again; ``reuse=False`` ignores the record."""
    from . import runs
    from .cache import atomic_write_text

    if not stopped:
        return
    path = runs.runs_dir() / STOPS_FILE
    record = {}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
    for rid, o in stopped.items():
        record[rid] = {"settings": settings, "best_valid": o.get("best_valid"), "epochs_run": o.get("epochs_run")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _prepare(trials: list[_Trial]) -> None:
    """Load each dataset (a missing one fails here, with the data module's message) and fit each distinct
    tokenizer once, before the trials start, so parallel trials read one cached result instead of all fitting."""
    from .experiment import get_dataset, run_tokens

    seen = set()
    for t in trials:
        c = t.config
        key = (c.dataset, c.split, c.split_seed, c.cold_fraction, c.keep, c.item_repr != "id", c.n_tokens,
               c.n_centroids, json.dumps(c.modalities), json.dumps(c.tokenizer, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        ds = get_dataset(c.dataset, c.split, c.split_seed, c.cold_fraction, c.keep)
        run_tokens(c, ds)


def _paths_env() -> dict[str, str]:
    """The caller's registry, cache and data folders, resolved, for the workers."""
    from .cache import cache_dir
    from .data import data_root
    from .runs import runs_dir

    return {"MOTOR_RUNS": str(runs_dir().expanduser().resolve()), "MOTOR_CACHE": str(cache_dir().resolve()),
            "MOTOR_DATA": str(data_root())}


def _thread_env(n: int) -> dict[str, str]:
    return {v: str(n) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _init_ray(address: str | None, num_cpus: int | None, threads: int) -> str:
    """Connect to ``address`` / ``$RAY_ADDRESS`` or start a local Ray (kept for later calls in this process)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return "Ray (already running)"
    opts = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
            "runtime_env": {"env_vars": _thread_env(threads)}}
    if address:
        ray.init(address=address, **opts)
        return f"Ray cluster at {address}"
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    for attempt in range(1, 4):
        try:
            ray.init(num_cpus=cpus, object_store_memory=256 * 2**20, **opts)
            break
        except Exception as err:  # Ray raises a plain Exception when its node does not come up in time
            # the raylet gives Ray's Python agents 15 s to start; on a loaded machine they can miss it, and a retry
            # finds their modules in the page cache
            ray.shutdown()
            if attempt == 3 or "timed out during startup" not in str(err):
                raise
            print(f"[tune] local Ray did not start ({err}); retrying ({attempt + 1}/3)", file=sys.stderr, flush=True)
    return f"local Ray, {cpus} CPUs"


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the duration of the block (child processes started inside inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shutdown() -> None:
    """Stop the Ray instance this process started or joined (a later :func:`tune` starts a new one)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _launch(todo: list[_Trial], *, budget, address, num_cpus, cpus_per_trial, gpus_per_trial, metric, reuse,
            progress, asha) -> dict[str, dict]:
    """Run ``todo`` through Ray Tune; every finished trial's run must then be in the registry."""
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler

    from . import runs

    if cpus_per_trial < 1:
        raise ValueError(f"cpus_per_trial must be >= 1, got {cpus_per_trial}")
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local:
        _prepare(todo)
    where = _init_ray(address, num_cpus, cpus_per_trial)
    payload = [{"run": asdict(t.config), "label": f"{t.backbone}/{t.item_repr} {_format_point(t.values)} s{t.seed}"}
               for t in todo]
    settings = {"env": _paths_env(), "threads": int(cpus_per_trial), "metric": metric, "reuse": reuse}
    scheduler = None
    if budget == "asha":
        max_epochs = max(t.config.epochs for t in todo)
        opts = _asha_options(max_epochs, asha)
        # the run's final report comes one iteration after its last epoch: max_t past it, so ASHA never stops a
        # trial between its last epoch and the moment its run is saved
        scheduler = ASHAScheduler(metric="best_valid", mode="max", max_t=max_epochs + 1, **opts)
    storage = tempfile.mkdtemp(prefix="motor-tune-")
    reporter = _progress_callback(len(todo), payload, metric, where) if progress else None
    trainable = ray_tune.with_resources(ray_tune.with_parameters(_trial, payload=payload, settings=settings),
                                        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tuner = ray_tune.Tuner(
        trainable, param_space={"i": ray_tune.grid_search(list(range(len(todo))))},
        tune_config=ray_tune.TuneConfig(scheduler=scheduler, reuse_actors=True,
                                        trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=ray_tune.RunConfig(name="motor-tune", storage_path=storage, verbose=0,
                                      callbacks=[reporter] if reporter else None))
    try:
        # no per-trial CSV / JSON / TensorBoard files; the classic reporter, which verbose=0 silences
        with _environ({"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}):
            grid = tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    outcome = {}
    for result in grid:
        t = todo[result.config["i"]]
        metrics = result.metrics or {}
        if runs.exists(t.run_id):
            outcome[t.run_id] = {"status": "trained"}
        elif result.error is not None:
            outcome[t.run_id] = {"status": "error", "error": str(result.error).strip().splitlines()[-1][:300]}
        elif metrics.get("complete"):
            raise RuntimeError(
                f"trial {t.run_id} finished but its run is not in {runs.runs_dir()}: the Ray workers write to "
                "another folder. Fix: on a cluster, point MOTOR_RUNS (and MOTOR_DATA, MOTOR_CACHE) at a shared "
                "folder with the same path on every machine.")
        else:
            outcome[t.run_id] = {"status": "stopped_early", "best_valid": metrics.get("best_valid"),
                                 "epochs_run": metrics.get("epoch")}
    if reporter:
        reporter.close()
    return outcome


def _trial(config: dict, payload: list[dict], settings: dict) -> None:
    """One Ray trial: one ``motor.run``, saved in the caller's registry, reporting valid ``metric`` per epoch."""
    from ray import tune as ray_tune

    os.environ.update(settings["env"])
    os.environ.update(_thread_env(settings["threads"]))
    import torch

    from . import experiment

    if getattr(_trial, "data_root", None) != settings["env"]["MOTOR_DATA"]:
        experiment.get_dataset.cache_clear()  # a reused worker: datasets of another data root are not these
        _trial.data_root = settings["env"]["MOTOR_DATA"]
    torch.set_num_threads(settings["threads"])  # the trial's share of the cores, never more
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(settings["threads"])
    cfg = experiment.RunConfig(**payload[config["i"]]["run"])
    metric = settings["metric"]
    best = [-math.inf]

    def report(epoch: int, record: dict) -> None:
        value = record.get(f"valid_{metric}")
        if value is not None:
            best[0] = max(best[0], float(value))
            ray_tune.report({"epoch": epoch + 1, "valid": float(value), "best_valid": best[0]})

    res = experiment.run(cfg, reuse=settings["reuse"], progress=False, keep_model=False, callbacks=(report,))
    final = float(res.valid.get(metric, float("nan")))
    ray_tune.report({"epoch": len(res.history), "valid": final, "best_valid": final, "complete": 1})


def _progress_callback(*args, **kwargs):
    """A Ray Tune callback printing progress (Ray is imported only when a search runs: it is an optional extra)."""
    from ray.tune import Callback

    class Progress(_ProgressLines, Callback):
        pass

    return Progress(*args, **kwargs)


class _ProgressLines:
    """Progress lines on stderr (done / total, best valid so far, ETA): one per finished trial in searches of up to
    ``per_trial_up_to`` trials; in larger ones a finished trial prints when it improves the best, when ``every``
    seconds have passed since the last line, and at the end. While trials run, one line at most every ``every``
    seconds."""

    def __init__(self, total: int, payload: list[dict], metric: str, where: str, every: float = 30.0,
                 per_trial_up_to: int = 50):
        self.total, self.payload, self.metric, self.every = total, payload, metric, every
        self.per_trial_up_to = per_trial_up_to
        self.done, self.failed, self.best, self.best_label = 0, 0, -math.inf, ""
        self.running_best = -math.inf
        self.start = self.last = time.monotonic()
        self._print(f"{total} trials on {where}")

    def _print(self, text: str) -> None:
        print(f"[tune] {text}", file=sys.stderr, flush=True)

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        best = f"{self.best:.4f} ({self.best_label})" if self.best > -math.inf else "-"
        return (f"{self.done}/{self.total} trials done" + (f" ({self.failed} failed)" if self.failed else "")
                + f" | best valid {self.metric} {best} | elapsed {_hms(elapsed)} | ETA {_hms(eta)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.running_best = max(self.running_best, result.get("best_valid", -math.inf))
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._print(self._line() + f" | running trials' best {self.running_best:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        last = trial.last_result or {}
        improved = bool(last.get("complete")) and last.get("best_valid", -math.inf) > self.best
        if improved:
            self.best, self.best_label = last["best_valid"], self.payload[trial.config["i"]]["label"]
        if (self.total <= self.per_trial_up_to or improved or self.done == self.total
                or time.monotonic() - self.last >= self.every):
            self.last = time.monotonic()
            self._print(self._line())

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._print(f"trial {self.payload[trial.config['i']]['label']} failed | " + self._line())

    def close(self) -> None:
        self._print(f"finished in {_hms(time.monotonic() - self.start)}")


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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


def tune_seeds(selected: pd.DataFrame, seeds: Sequence[int] = (0, 1, 2), **launch) -> pd.DataFrame:
    """The selected configurations run with ``seeds`` (trained through Ray where not saved yet): ``selected``
    with ``run_ids`` / ``seeds`` replaced by those runs and the test means over them. ``launch``: the Ray options
    of :func:`tune` (address, num_cpus, cpus_per_trial, gpus_per_trial, progress, reuse)."""
    from dataclasses import replace

    seeds = [int(s) for s in seeds]
    todo, per_row = [], []
    for row in selected.itertuples(index=False):
        if not row.run_ids:  # nothing was selected (no point finished): nothing to repeat
            per_row.append([])
            continue
        ts = [_Trial(row.dataset, row.backbone, row.item_repr, row.point, dict(row.params), s,
                     replace(row.config, seed=s)) for s in seeds]
        todo += ts
        per_row.append(ts)
    allowed = {"address", "num_cpus", "cpus_per_trial", "gpus_per_trial", "progress", "reuse"}
    bad = sorted(set(launch) - allowed)
    if bad:
        raise ValueError(f"tune_seeds: unknown options {bad}; use {sorted(allowed)}")
    outcome = _run_trials(todo, **launch)
    failed = [rid for rid, o in outcome.items() if o["status"] not in COMPLETE]
    if failed:
        raise RuntimeError(f"tune_seeds: {len(failed)} runs did not finish: "
                           + "; ".join(f"{r}: {outcome[r].get('error', outcome[r]['status'])}" for r in failed))
    out = selected.copy()
    out["run_ids"] = [tuple(t.run_id for t in ts) for ts in per_row]
    out["seeds"] = [tuple(t.seed for t in ts) for ts in per_row]
    for i, ts in enumerate(per_row):
        if ts:
            tests = pd.DataFrame([_test_metrics(t.run_id) for t in ts]).mean(numeric_only=True)
            for k, v in tests.items():
                if k != "n_users":
                    out.loc[out.index[i], f"test_{k}"] = float(v)
    return out
