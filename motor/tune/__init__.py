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
names (``n_tokens``, ``n_centroids``, ``tcn.*``, ``tokenizer.*``) are dropped for ``item_repr="id"``. The tokenizer
family is one such name: ``{"tokenizer.method": ["opq", "rq"]}`` lets the search pick OPQ or residual k-means. A
value equal to the backbone's default is left out of ``hparams``, so a point at the defaults is the default run
(same run id; likewise ``tokenizer.method="opq"``).

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

from .plan import (
    BUDGETS,
    COMPLETE,
    N_TOKENS_SPACE,
    Tuned,
    TuneError,
    check_metric,
    check_space,
    default_space,
    grid_points,
    plan,
    select,
    trials_frame,
)
from .ray import STOPS_FILE, asha_settings, record_stops, recorded_stops, shutdown, tune, tune_seeds

__all__ = ["BUDGETS", "COMPLETE", "N_TOKENS_SPACE", "STOPS_FILE", "TuneError", "Tuned", "asha_settings",
           "check_metric", "check_space",
           "default_space", "grid_points", "plan", "record_stops", "recorded_stops", "select", "shutdown",
           "trials_frame", "tune", "tune_seeds"]
