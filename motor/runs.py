"""Run registry: every run is a folder ``<root>/<run_id>/`` (config, metrics, history, per-user test results).

``root`` is ``$MOTOR_RUNS`` if set, else ``reports/runs/`` in the repository. All writes are atomic.
:func:`load` returns every saved run as one tidy DataFrame
(run_id, dataset, split, backbone, item_repr, modalities, n_tokens, seed, variant, eval_split, bucket, metric, k,
value); ``variant`` names any non-default hparams / tcn / tokenizer settings and the tag ("" for defaults), so
tables never average a variant into the default configuration's cell.
"""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_write_bytes, atomic_write_text

ID_COLUMNS = ["run_id", "dataset", "split", "backbone", "item_repr", "modalities", "n_tokens", "seed", "variant"]


def variant_of(cfg: dict) -> str:
    """Short name of a run's non-default knobs, e.g. ``tokenizer.subspace_seeds=True``; "" for the defaults."""
    parts = [f"{group}.{k}={v}" for group in ("hparams", "tcn", "tokenizer")
             for k, v in sorted((cfg.get(group) or {}).items())]
    if cfg.get("tag"):
        parts.append(f"tag={cfg['tag']}")
    return ",".join(parts)


def runs_dir() -> Path:
    env = os.environ.get("MOTOR_RUNS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "reports" / "runs"


def run_path(run_id: str) -> Path:
    return runs_dir() / run_id


def provenance() -> dict:
    """What produced a run: the git commit of this checkout (and whether it had uncommitted changes), torch and
    python versions, as they were when this module was imported (the code a long-running process actually runs).
    Registry runs made by older code give different numbers after kernel or RNG changes; this says which code
    made each one."""
    return dict(_PROVENANCE)


def _provenance_now() -> dict:
    root = Path(__file__).resolve().parent.parent
    commit, dirty = None, None
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        status = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no", "--", "motor"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed package): versions only
    import torch

    return {"git_commit": commit, "motor_modified": dirty, "torch": torch.__version__,
            "python": platform.python_version()}


_PROVENANCE = _provenance_now()


def save(result) -> Path:
    """Write a :class:`motor.experiment.RunResult` (metrics.json last: its presence marks a complete run)."""
    folder = run_path(result.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(result.config, indent=1, sort_keys=True))
    atomic_write_text(folder / "history.csv", result.history.to_csv(index=False))
    atomic_write_text(folder / "buckets.csv", result.buckets.to_csv(index=False))
    pu = result.per_user
    buf = io.BytesIO()
    np.savez_compressed(buf, **{c: pu[c].to_numpy() for c in pu.columns})
    atomic_write_bytes(folder / "per_user_test.npz", buf.getvalue())
    if getattr(result, "item_vectors", None) is not None:
        buf = io.BytesIO()
        np.save(buf, result.item_vectors.astype(np.float32))
        atomic_write_bytes(folder / "item_vectors.npy", buf.getvalue())
    meta = {"valid": result.valid, "test": result.test, "params": result.params, "timings": result.timings,
            "best_epoch": result.best_epoch, "stopped": result.stopped, "provenance": provenance()}
    atomic_write_text(folder / "metrics.json", json.dumps(meta, indent=1, sort_keys=True))
    return folder


def exists(run_id: str) -> bool:
    return (run_path(run_id) / "metrics.json").is_file()


def read(run_id: str) -> dict:
    """Everything saved for one run: config, metrics, history, buckets, per_user (test), item_vectors if saved."""
    folder = run_path(run_id)
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"no complete run {run_id!r} under {runs_dir()}")
    out = json.loads((folder / "metrics.json").read_text())
    out["config"] = json.loads((folder / "config.json").read_text())
    out["history"] = _csv(folder / "history.csv")
    out["buckets"] = _csv(folder / "buckets.csv")
    with np.load(folder / "per_user_test.npz", allow_pickle=False) as z:
        out["per_user"] = pd.DataFrame({k: z[k] for k in z.files})
    vec = folder / "item_vectors.npy"
    out["item_vectors"] = np.load(vec, allow_pickle=False) if vec.is_file() else None
    out["run_id"] = run_id
    return out


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, FileNotFoundError):
        return pd.DataFrame()


def _split_metric(name: str) -> tuple[str, int | None]:
    if "@" in name:
        m, k = name.split("@")
        return m, int(k)
    return name, None


def load(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """All complete runs as one tidy DataFrame (one row per run x eval split x bucket x metric)."""
    base = Path(root) if root else runs_dir()
    rows = []
    for mfile in sorted(base.glob("*/metrics.json")) if base.is_dir() else []:
        folder = mfile.parent
        meta = json.loads(mfile.read_text())
        cfg = json.loads((folder / "config.json").read_text())
        ident = {"run_id": folder.name, "dataset": cfg["dataset"], "split": cfg["split"],
                 "backbone": cfg["backbone"], "item_repr": cfg["item_repr"],
                 "modalities": "+".join(cfg.get("modalities") or ["all"]), "n_tokens": cfg["n_tokens"],
                 "seed": cfg["seed"], "variant": variant_of(cfg)}
        for split in ("valid", "test"):
            for name, value in meta[split].items():
                metric, k = _split_metric(name)
                rows.append({**ident, "eval_split": split, "bucket": "all", "metric": metric, "k": k, "value": value})
        buckets = _csv(folder / "buckets.csv")
        for rec in buckets.to_dict("records"):
            for name, value in rec.items():
                if "@" in name:
                    metric, k = _split_metric(name)
                    rows.append({**ident, "eval_split": "test", "bucket": rec["bucket"], "metric": metric, "k": k,
                                 "value": value})
        for key in ("total", "item", "item_fraction"):
            if key in meta["params"]:
                rows.append({**ident, "eval_split": "-", "bucket": "all", "metric": f"params_{key}", "k": None,
                             "value": meta["params"][key]})
    cols = ID_COLUMNS + ["eval_split", "bucket", "metric", "k", "value"]
    return pd.DataFrame(rows, columns=cols)
