"""Running a search on Ray Tune: :func:`tune` (plan, launch the trials not saved yet, select) and
:func:`tune_seeds`; Ray is imported only when trials are launched (it is an optional extra). Every trial is one
``motor.run`` saved in the caller's registry."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch

from .. import runs
from ..cache import cache_dir
from ..config import RunConfig
from ..data import data_root
from ..experiment import get_dataset, run, run_tokens
from .plan import (
    COMPLETE,
    Tuned,
    _format_point,
    _test_metrics,
    _Trial,
    check_metric,
    plan,
    refuse_empty_selection,
    select,
    trials_frame,
)

STOPS_FILE = runs.TUNE_STOPS_FILE  # the name before issue 25


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
    metric = check_metric(metric)  # before anything runs: a typo must not cost a search
    if gpus_per_trial and "device" not in run_kwargs:
        run_kwargs["device"] = "cuda"
    trials = plan(dataset, backbone, item_repr, space, epochs=epochs, seeds=seeds, budget=budget,
                  sample_seed=sample_seed, **run_kwargs)
    outcome = _run_trials(trials, budget=budget, address=address, num_cpus=num_cpus, cpus_per_trial=cpus_per_trial,
                          gpus_per_trial=gpus_per_trial, metric=metric, reuse=reuse, progress=progress, asha=asha)
    table = trials_frame(trials, outcome, metric)
    selected = select(table, trials, metric)
    refuse_empty_selection(table, selected, metric)
    return Tuned(table, selected)


def _run_trials(trials: list[_Trial], *, budget="grid", address=None, num_cpus=None, cpus_per_trial=1,
                gpus_per_trial=0, metric="recall@20", reuse=True, progress=True, asha=None) -> dict[str, dict]:
    """Launch the trials whose run is not saved yet (one Ray trial per distinct run id); returns
    {run_id: {"status": ..., ...}} for every trial."""
    outcome, todo = {}, {}
    stops = asha_settings(trials, asha, metric) if budget == "asha" else None
    recorded = runs.read_tune_stops() if stops and reuse else {}
    for t in trials:
        rid = t.run_id
        if rid in outcome or rid in todo:
            continue
        if reuse and runs.exists(rid) and _readable(rid):
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
            runs.record_tune_stops({rid: o for rid, o in new.items() if o["status"] == "stopped_early"}, stops)
        outcome.update(new)
    return outcome


def _readable(run_id: str) -> bool:
    """Whether a saved trial's metrics can be read; a warning names the damaged file (the trial runs again)."""
    try:
        runs.read_metrics(run_id)
    except runs.RunReadError as exc:
        warnings.warn(f"{exc} The trial is trained again.", stacklevel=3)
        return False
    return True


def _asha_options(max_epochs: int, asha: dict | None) -> dict:
    """ASHAScheduler's rung settings: the defaults, overridden by the caller's ``asha``."""
    return {"grace_period": min(10, max_epochs), "reduction_factor": 3, **(asha or {})}


def asha_settings(trials: list[_Trial], asha: dict | None, metric: str) -> dict:
    """What an ASHA stop depends on besides the trial itself: the scheduler's settings and the metric."""
    max_epochs = max(t.config.epochs for t in trials)
    return {"metric": metric, "max_epochs": max_epochs, **_asha_options(max_epochs, asha)}


recorded_stops = runs.read_tune_stops  # the names before issue 25
record_stops = runs.record_tune_stops


def _prepare(trials: list[_Trial]) -> None:
    """Load each dataset (a missing one fails here, with the data module's message) and fit each distinct
    tokenizer once, before the trials start, so parallel trials read one cached result instead of all fitting."""
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
    return {"MOTOR_RUNS": str(runs.runs_dir().expanduser().resolve()), "MOTOR_CACHE": str(cache_dir().resolve()),
            "MOTOR_DATA": str(data_root())}


def _thread_env(n: int) -> dict[str, str]:
    return {v: str(n) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _init_ray(address: str | None, num_cpus: int | None, threads: int, temp_dir: Path) -> tuple[str, bool]:
    """Connect to ``address`` / ``$RAY_ADDRESS`` or start a local Ray with its session files under ``temp_dir``;
    (where trials run, whether this call started it: the caller shuts it down). A Ray the caller already
    initialised is used as it is. A local start never joins a Ray left running by another process (a killed
    search's, another user's): ``address="local"`` always starts this search's own."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return "Ray (already running)", False
    opts = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
            "runtime_env": {"env_vars": _thread_env(threads)}}
    if address:
        ray.init(address=address, **opts)
        return f"Ray cluster at {address}", True
    cpus = num_cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    for attempt in range(1, 4):
        try:
            ray.init(address="local", num_cpus=cpus, object_store_memory=256 * 2**20, _temp_dir=str(temp_dir),
                     **opts)
            break
        except Exception as err:  # Ray raises a plain Exception when its node does not come up in time
            # the raylet gives Ray's Python agents 15 s to start; on a loaded machine they can miss it, and a retry
            # finds their modules in the page cache
            ray.shutdown()
            _end_processes(temp_dir, wait=2.0)  # a failed start leaves its GCS and monitor running
            if attempt == 3 or "timed out during startup" not in str(err):
                raise
            print(f"[tune] local Ray did not start ({err}); retrying ({attempt + 1}/3)", file=sys.stderr, flush=True)
    return f"local Ray, {cpus} CPUs", True


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
    """Run ``todo`` through Ray Tune; every finished trial's run must then be in the registry. Ray's processes
    and temp folder live as long as this call, also when it ends by an exception."""
    if cpus_per_trial < 1:
        raise ValueError(f"cpus_per_trial must be >= 1, got {cpus_per_trial}")
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local:
        _prepare(todo)
    _clean_stale()  # what a killed search left: never reused, removed now
    workdir = Path(tempfile.mkdtemp(prefix=f"motor-tune-{os.getpid()}-"))  # Ray's session files, Tune's results
    try:
        where, started = _init_ray(address, num_cpus, cpus_per_trial, workdir / "r")
        try:
            grid = _fit(todo, workdir, where, budget=budget, cpus_per_trial=cpus_per_trial,
                        gpus_per_trial=gpus_per_trial, metric=metric, reuse=reuse, progress=progress, asha=asha)
            return _outcome(todo, grid)
        finally:
            if started:  # the Ray this search started or joined: stopped, with all its processes
                import ray

                ray.shutdown()
                if "local" in where:
                    _end_processes(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _fit(todo: list[_Trial], workdir: Path, where: str, *, budget, cpus_per_trial, gpus_per_trial, metric, reuse,
         progress, asha):
    """Ray Tune's result grid of ``todo`` (Ray is running)."""
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler

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
    storage = str(workdir / "results")
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
            return tuner.fit()
    finally:
        if reporter:
            reporter.close()


def _outcome(todo: list[_Trial], grid) -> dict[str, dict]:
    """{run_id: {"status", ...}} of the trials Ray ran; every finished trial's run must be in the registry."""
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
    return outcome


def _ray_processes(folder: Path) -> list[int]:
    """Pids of the processes of a local Ray whose session files are under ``folder``: those whose command line
    names it, this process's descendants that are Ray's (``ray::...`` workers and agents rename themselves), and
    ``ray::`` processes with a file open under it (a killed search's agents). Linux (/proc) only; elsewhere []."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    cmd, parent = {}, {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                cmd[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])

    def mine(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    def uses(pid: int) -> bool:  # an open file under the folder (Ray's agents keep their logs open there)
        with contextlib.suppress(OSError):
            return any(os.readlink(f).startswith(me) for f in (proc / str(pid) / "fd").iterdir())
        return False

    me = str(folder)
    return [pid for pid, c in cmd.items() if pid != os.getpid() and c.strip() and (
        me in c or (mine(pid) and (c.startswith("ray::") or f"{os.sep}ray{os.sep}" in c))
        or (c.startswith("ray::") and uses(pid)))]


def _end_processes(folder: Path, wait: float = 10.0) -> None:
    """End what is left of the local Ray under ``folder`` (what ``ray.shutdown`` missed, or a failed start left):
    SIGTERM, then SIGKILL after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    pids = _ray_processes(folder)
    while pids and time.monotonic() < deadline:  # ray.shutdown's own stop first: give it a moment
        time.sleep(0.2)
        pids = _ray_processes(folder)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        if sig == signal.SIGTERM:
            time.sleep(1.0)
            pids = _ray_processes(folder)


def _clean_stale() -> None:
    """End the Ray processes and remove the ``motor-tune-<pid>-*`` folders of searches whose process is gone
    (killed with ``kill -9``, so its own cleanup never ran)."""
    for folder in Path(tempfile.gettempdir()).glob("motor-tune-*-*"):
        pid = folder.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        _end_processes(folder, wait=0.0)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _trial(config: dict, payload: list[dict], settings: dict) -> None:
    """One Ray trial: one ``motor.run``, saved in the caller's registry, reporting valid ``metric`` per epoch."""
    from ray import tune as ray_tune

    os.environ.update(settings["env"])
    os.environ.update(_thread_env(settings["threads"]))
    if getattr(_trial, "data_root", None) != settings["env"]["MOTOR_DATA"]:
        get_dataset.cache_clear()  # a reused worker: datasets of another data root are not these
        _trial.data_root = settings["env"]["MOTOR_DATA"]
    torch.set_num_threads(settings["threads"])  # the trial's share of the cores, never more
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(settings["threads"])
    cfg = RunConfig(**payload[config["i"]]["run"])
    metric = settings["metric"]
    best = [-math.inf]

    def report(epoch: int, record: dict) -> None:
        value = record.get(f"valid_{metric}")
        if value is not None:
            best[0] = max(best[0], float(value))
            ray_tune.report({"epoch": epoch + 1, "valid": float(value), "best_valid": best[0]})

    res = run(cfg, reuse=settings["reuse"], progress=False, keep_model=False, callbacks=(report,))
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


def tune_seeds(selected: pd.DataFrame, seeds: Sequence[int] = (0, 1, 2), **launch) -> pd.DataFrame:
    """The selected configurations run with ``seeds`` (trained through Ray where not saved yet): ``selected``
    with ``run_ids`` / ``seeds`` replaced by those runs and the test means over them. ``launch``: the Ray options
    of :func:`tune` (address, num_cpus, cpus_per_trial, gpus_per_trial, progress, reuse)."""
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
