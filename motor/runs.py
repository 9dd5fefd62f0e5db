"""Run registry: every run is a folder ``<root>/<run_id>/`` (config, metrics, history, per-user test results).

``root`` (:func:`runs_dir`) is ``$MOTOR_RUNS`` if set, else the user's own registry: ``runs/`` in the repository
(git-ignored) for a source checkout, ``~/.motor/runs`` for an installed package. A user's runs therefore never touch
tracked files. The committed results live in ``reports/runs/``: ``make reports`` sets ``MOTOR_RUNS=reports/runs``,
and ``MOTOR_RUNS=reports/runs python -m motor runs`` (or ``--registry reports/runs``) reads them.
When ``MOTOR_RUNS`` is not set, a source checkout also *reads* the committed results as a reference registry
(:func:`reference_dir`): :func:`exists`, :func:`read` and :func:`load` fall back to it for runs the user's registry
lacks, so the comparison notebooks opened in JupyterLab tabulate the committed runs instead of training them
again. Nothing is ever written there except by ``make reports``.
All writes are atomic. :func:`load` returns every saved run as one tidy DataFrame
(run_id, dataset, split, split_seed, backbone, item_repr, modalities, n_tokens, seed, variant, eval_split, bucket,
metric, k, value); ``variant`` names any non-default hparams / tcn / tokenizer settings, a split seed other than 0
and the tag ("" for defaults), so tables never average a variant into the default configuration's cell.
"""
from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_write_bytes, atomic_write_text, fingerprint, payload_checksum

# How tied scores were ranked when a run was evaluated (motor.evaluate): runs saved before tie-aware evaluation
# have no "ties" entry in metrics.json and ranked ties by the lower item id ("first").
TIES_RULE = "expected"
TIES_BEFORE = "first"

ID_COLUMNS = ["run_id", "dataset", "split", "split_seed", "backbone", "item_repr", "modalities", "n_tokens", "seed",
              "variant"]


# RunConfig fields added after the first saved runs, with their defaults: a run at the default leaves them out of
# its run id and its variant name, so the ids of older runs do not change
SCHEMA_VERSION = 2  # of a run folder: 1 (no entry) had no tokenizer state; 2 adds tokenizer.npz
TOKENIZER_FILE = "tokenizer.npz"  # per modality "<modality>/<entry>": the fitted tokenizer's state and token ids
_CHECKSUM = "__checksum__"

ADDED_FIELDS = {"tokenizer": {}, "keep": 1.0, "weight_decay": None, "lr_schedule": None}


def non_default_fields(cfg: dict) -> dict:
    """The :data:`ADDED_FIELDS` of a run's config (``asdict(RunConfig)`` or a saved ``config.json``) that are not
    at their defaults (a missing key is at its default); the one rule behind run ids and :func:`variant_of`."""
    return {k: cfg[k] for k, default in ADDED_FIELDS.items() if cfg.get(k, default) != default}


def variant_of(cfg: dict) -> str:
    """Short name of a run's non-default knobs, e.g. ``tokenizer.subspace_seeds=True``; "" for the defaults."""
    parts = [f"{group}.{k}={v}" for group in ("hparams", "tcn", "tokenizer")
             for k, v in sorted((cfg.get(group) or {}).items())]
    if cfg.get("split_seed"):  # another split: its numbers are not seeds of the same cell
        parts.append(f"split_seed={cfg['split_seed']}")
    if cfg.get("tag"):
        parts.append(f"tag={cfg['tag']}")
    parts += [f"{k}={v}" for k, v in non_default_fields(cfg).items() if k != "tokenizer"]  # itemised above
    if cfg.get("split") == "cold_item" and cfg.get("tokenizer_items", "all") == "all":  # saved before: all items
        parts.append("tokenizer_items=all")
    return ",".join(parts)


def runs_dir() -> Path:
    """``$MOTOR_RUNS``, else ``<repository>/runs`` (git-ignored) in a source checkout, else ``~/.motor/runs``."""
    env = os.environ.get("MOTOR_RUNS")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file():
        return repo / "runs"
    return Path.home() / ".motor" / "runs"


def reference_dir() -> Path | None:
    """The committed registry (``reports/runs`` of a source checkout), read-only, consulted when ``MOTOR_RUNS`` is
    not set; ``None`` when it does not exist or is the user's registry itself. ``MOTOR_REFERENCE_RUNS`` overrides
    it (a folder, or empty for none)."""
    env = os.environ.get("MOTOR_REFERENCE_RUNS")
    if env is not None:
        ref = Path(env).expanduser() if env else None
    elif os.environ.get("MOTOR_RUNS"):
        return None  # an explicit registry (tests, make reports, Ray workers) is read alone
    else:
        ref = Path(__file__).resolve().parent.parent / "reports" / "runs"
    if ref is None or not ref.is_dir() or ref.resolve() == runs_dir().expanduser().resolve():
        return None
    return ref


def locate(run_id: str) -> Path:
    """The folder a saved run is read from: the user's registry (:func:`run_path`) when the run is complete there,
    else the reference registry's (:func:`reference_dir`) when complete there, else :func:`run_path`."""
    folder = run_path(run_id)
    if (folder / "metrics.json").is_file():
        return folder
    ref = reference_dir()
    if ref is not None and (ref / run_id / "metrics.json").is_file():
        return ref / run_id
    return folder


class RunReadError(ValueError):
    """A saved run cannot be read; the message names the run, the file and the fix."""


def run_path(run_id: str) -> Path:
    """The folder of run ``run_id``: always directly under :func:`runs_dir` (an id holding a path separator,
    or "." / "..", is refused)."""
    if (not isinstance(run_id, str) or not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id
            or "\0" in run_id):
        raise ValueError(f"invalid run id {run_id!r}: a run id is one folder name (no path separators).")
    root = runs_dir()
    folder = root / run_id
    assert folder.parent == root, (folder, root)
    return folder


def check_writable(root: str | os.PathLike | None = None, need_bytes: int = 0, run_id: str | None = None) -> Path:
    """Create the registry folder if needed and check that a file can be written there (and in the folder of
    ``run_id`` when it exists already) and that ``need_bytes`` (a run's expected size, :func:`expected_bytes`)
    fit on its disk twice over (the temp file of an atomic write), so that a run fails before training rather than
    when saving. Returns the folder."""
    base = Path(root) if root else runs_dir()
    fix = "Fix: set MOTOR_RUNS to a writable folder (or free some space), or pass save=False."
    try:
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=base) as fh:
            fh.write(b"motor")
        free = shutil.disk_usage(base).free
    except OSError as exc:
        raise OSError(f"run registry {base} is not writable ({type(exc).__name__}: {exc}). {fix}") from exc
    folder = base / run_id if run_id else None
    if folder is not None and folder.is_dir():
        try:
            with tempfile.TemporaryFile(dir=folder) as fh:
                fh.write(b"motor")
        except OSError as exc:
            raise OSError(f"run {run_id}: its folder {folder} exists but is not writable ({type(exc).__name__}: "
                          f"{exc}), so the result could not be saved. Fix: make it writable (chmod -R u+w "
                          f"{folder}) or delete it, or pass save=False.") from exc
    if free < 2 * need_bytes:
        raise OSError(f"run registry {base}: only {free / 2 ** 20:.1f} MB free, and this run needs about "
                      f"{2 * need_bytes / 2 ** 20:.1f} MB to be saved. {fix}")
    return base


def expected_bytes(weight_bytes: int, n_users: int, n_items: int, dim: int, epochs: int,
                   vectors: bool = False) -> int:
    """An upper bound of what :func:`save` writes for one run: ``weight_bytes`` (the state dict's size; 0 when the
    weights are not saved), per-user test metrics (about 12 float64 columns), one history line per epoch, float32
    item vectors (if saved) and the small JSON/CSV files."""
    return weight_bytes + 8 * 12 * n_users + 400 * epochs + 4 * n_items * dim * vectors + 64 * 2 ** 10


_IMPORTED_AT = time.time()  # when this process loaded the registry code (a clock read: no I/O)
_provenance: dict | None = None


def provenance() -> dict:
    """What produced a run: the git commit of this checkout (and whether it had uncommitted changes in motor/),
    torch and python versions. Registry runs made by older code give different numbers after kernel or RNG changes;
    this says which code made each one.

    Asked once per process, on the first save, then cached. Not at import: ``import motor`` must start no
    subprocess. Not at every save: a long-running process (a notebook kernel) keeps running the code it imported
    while the checkout moves on, so a later answer would name code it never ran. The one gap, files changed between
    the import and the first save, is flagged: ``motor_changed_since_import`` is True when a loaded motor module's
    file was modified after this module was imported (the commit and ``motor_modified`` may then not describe the
    code that ran)."""
    global _provenance
    if _provenance is None:
        _provenance = {**_provenance_now(), "motor_changed_since_import": _changed_since_import()}
    return dict(_provenance)


def _changed_since_import() -> bool:
    files = [getattr(m, "__file__", None) for name, m in list(sys.modules.items())
             if name == "motor" or name.startswith("motor.")]
    try:
        return any(os.path.getmtime(f) > _IMPORTED_AT for f in files if f)
    except OSError:  # a module file removed since: changed
        return True


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
    import torch  # noqa: PLC0415 - the registry itself loads no torch (saving a run has it loaded already)

    return {"git_commit": commit, "motor_modified": dirty, "torch": torch.__version__,
            "python": platform.python_version()}


def save(result, model_state: dict[str, np.ndarray] | None = None, weights_description: dict | None = None,
         tokenizer_state: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Write a :class:`motor.experiment.RunResult` (metrics.json last: its presence marks a complete run),
    ``model_state`` (the trained weights, :func:`motor.experiment.model_state`) as ``model_state.npz`` if given,
    stamped with ``weights_description`` (:func:`motor.experiment.weights_description`; default: the run id), and
    ``tokenizer_state`` ({modality: {entry: array}}, :func:`motor.experiment.tokenizers_state`) as
    :data:`TOKENIZER_FILE` if given. Returns the run folder."""
    folder = run_path(result.run_id)
    try:
        weights = None if model_state is None else weights_bytes(
            model_state, weights_description or {"run_id": result.run_id})
        _write_run(folder, result, weights, tokenizer_state)
    except OSError as exc:  # the folder stays incomplete (no metrics.json): load() and exists() ignore it
        raise OSError(f"run {result.run_id} could not be saved in {folder} ({type(exc).__name__}: {exc}). "
                      "Fix: free some space or set MOTOR_RUNS to a writable folder, and run again.") from exc
    return folder


def _write_run(folder: Path, result, weights: bytes | None,
               tokenizer_state: dict[str, dict[str, np.ndarray]] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(result.config, indent=1, sort_keys=True))
    atomic_write_text(folder / "history.csv", result.history.to_csv(index=False))
    atomic_write_text(folder / "buckets.csv", result.buckets.to_csv(index=False))
    profile = getattr(result, "hit_profile", None)
    if profile is not None and len(profile):
        atomic_write_text(folder / "hit_profile.csv", profile.to_csv(index=False))
    else:
        (folder / "hit_profile.csv").unlink(missing_ok=True)
    pu = result.per_user
    buf = io.BytesIO()
    np.savez_compressed(buf, **{c: pu[c].to_numpy() for c in pu.columns})
    atomic_write_bytes(folder / "per_user_test.npz", buf.getvalue())
    if getattr(result, "item_vectors", None) is not None:
        buf = io.BytesIO()
        np.save(buf, result.item_vectors.astype(np.float32))
        atomic_write_bytes(folder / "item_vectors.npy", buf.getvalue())
    if weights is not None:
        atomic_write_bytes(folder / WEIGHTS_FILE, weights)
    else:  # weights of an earlier run of this id would not match the metrics written below
        (folder / WEIGHTS_FILE).unlink(missing_ok=True)
    if tokenizer_state is not None:
        arrays = {f"{m}/{k}": np.asarray(v) for m, state in tokenizer_state.items() for k, v in state.items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays, **{_CHECKSUM: np.array(payload_checksum(arrays))})
        atomic_write_bytes(folder / TOKENIZER_FILE, buf.getvalue())
    else:
        (folder / TOKENIZER_FILE).unlink(missing_ok=True)
    meta = {"valid": result.valid, "test": result.test, "params": result.params, "timings": result.timings,
            "best_epoch": result.best_epoch, "stopped": result.stopped, "provenance": provenance(),
            "ties": TIES_RULE, "schema_version": SCHEMA_VERSION}
    atomic_write_text(folder / "metrics.json", json.dumps(meta, indent=1, sort_keys=True))


WEIGHTS_FILE = "model_state.npz"
_WEIGHTS_META = "__motor_weights__"  # the entry of model_state.npz holding its description, fingerprint, checksum


def weights_bytes(state: dict[str, np.ndarray], description: dict) -> bytes:
    """``model_state.npz``: the arrays of ``state`` plus one entry holding the run ``description`` (which run and
    model layout the weights belong to, :func:`motor.experiment.weights_description`), its fingerprint and the
    SHA-256 of fingerprint and arrays, as training checkpoints carry (:func:`motor.train.checkpoint_bytes`)."""
    fp = fingerprint(description)
    meta = {"description": description, "fingerprint": fp,
            "sha256": hashlib.sha256((fp + payload_checksum(state)).encode()).hexdigest()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **state, **{_WEIGHTS_META: np.array(json.dumps(meta, sort_keys=True))})
    return buf.getvalue()


def read_weights(run_id: str, description: dict, folder: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The weights saved with run ``run_id`` (in ``folder``, default :func:`locate`) for a model described by
    ``description`` (:func:`motor.experiment.weights_description` of the rebuilt model). A :class:`RunReadError`
    names the run, the file and the fix when the file is damaged, carries no fingerprint, belongs to another run or
    model, or holds NaN / infinite values; a FileNotFoundError when the run was saved without weights."""
    path = (Path(folder) if folder is not None else locate(run_id)) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"run {run_id!r} under {path.parent.parent} was saved without its weights ({path.name}), so it cannot be "
            "rebuilt. Fix: pass the RunResult that motor.run(...) returns (it holds the model), or train it again "
            f"with motor.run(motor.experiment.config_from_dict(motor.runs.read({run_id!r})['config']), "
            "save_model=True).")
    fix = (f"Fix: delete {path} and train the run again with motor.run(motor.experiment.config_from_dict("
           f"motor.runs.read({run_id!r})['config']), save_model=True), or pass the RunResult that holds the model.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, EOFError, zlib / CRC errors, an entry that is not a plain array, ...
        raise RunReadError(f"run {run_id}: its weights {path} are damaged and cannot be read "
                           f"({type(exc).__name__}). {fix}") from None
    raw = arrays.pop(_WEIGHTS_META, None)
    try:
        meta = json.loads(str(raw)) if raw is not None and raw.dtype.kind == "U" else None
        intact = isinstance(meta, dict) and hashlib.sha256(
            (meta["fingerprint"] + payload_checksum(arrays)).encode()).hexdigest() == meta["sha256"]
    except (ValueError, KeyError, TypeError):
        meta, intact = None, False
    if meta is None:
        raise RunReadError(f"run {run_id}: its weights {path} carry no fingerprint (written by an older motor or "
                           "another program), so nothing says which run they belong to. " + fix)
    if not intact:
        raise RunReadError(f"run {run_id}: its weights {path} are damaged (changed or truncated: their checksum "
                           f"does not match). {fix}")
    if meta["fingerprint"] != fingerprint(description):
        saved = meta.get("description") or {}
        diff = [k for k in description if saved.get(k) != description[k]]
        raise RunReadError(f"run {run_id}: its weights {path} belong to another run (saved for run "
                           f"{saved.get('run_id')!r}, model {saved.get('model')}; this run's model is "
                           f"{description.get('model')}; differs in: {', '.join(diff) or 'the description'}). "
                           + fix)
    bad = [k for k, a in arrays.items() if a.dtype.kind in "fc" and not np.isfinite(a).all()]
    if bad:
        raise RunReadError(f"run {run_id}: its weights {path} hold NaN or infinite values (in {bad[:3]}), so its "
                           f"scores would be meaningless. {fix}")
    return arrays


def exists(run_id: str) -> bool:
    """Whether run ``run_id`` is complete in the user's registry or the reference registry."""
    return (locate(run_id) / "metrics.json").is_file()


def read(run_id: str) -> dict:
    """Everything saved for one run: config, metrics, history, buckets, per_user (test), item_vectors if saved."""
    folder = locate(run_id)
    if not (folder / "metrics.json").is_file():
        where = runs_dir() if reference_dir() is None else f"{runs_dir()} or {reference_dir()}"
        raise FileNotFoundError(f"no complete run {run_id!r} under {where}")
    return read_folder(folder, run_id)


def read_folder(folder: str | os.PathLike, run_id: str | None = None) -> dict:
    """:func:`read` of a run folder anywhere (``run_id`` default: the folder's name)."""
    folder = Path(folder)
    run_id = run_id or folder.name
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"{folder} is not a complete run folder (no metrics.json). Fix: give the folder "
                                "of a saved run (one that holds config.json and metrics.json).")
    path = folder / "metrics.json"
    try:
        out = _read_json(path)
        path = folder / "config.json"
        out["config"] = _read_json(path)
        path = folder / "history.csv"
        out["history"] = _csv(path)
        path = folder / "buckets.csv"
        out["buckets"] = _csv(path)
        path = folder / "per_user_test.npz"
        with np.load(path, allow_pickle=False) as z:
            out["per_user"] = pd.DataFrame({k: z[k] for k in z.files})
        path = folder / "hit_profile.csv"
        out["hit_profile"] = _csv(path) if path.is_file() else None  # runs saved before it have none
        path = folder / "item_vectors.npy"
        out["item_vectors"] = np.load(path, allow_pickle=False) if path.is_file() else None
        path = folder / "metrics.json"
        for key in ("valid", "test", "params", "timings", "best_epoch", "stopped"):
            if key not in out:
                raise KeyError(f"no {key!r} entry")
    except Exception as exc:
        raise RunReadError(_damage(run_id, path, exc)) from exc
    version = out.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise RunReadError(f"run {run_id}: {folder / 'metrics.json'} has schema_version {version!r}; this motor "
                           f"reads up to {SCHEMA_VERSION}. Fix: update motor to the version that wrote the run.")
    out["run_id"] = run_id
    return out


def read_tokenizer_state(folder: str | os.PathLike) -> dict[str, dict[str, np.ndarray]] | None:
    """{modality: {entry: array}} of a run folder's :data:`TOKENIZER_FILE` (None when it has none). Pickled
    objects are refused; a damaged file or a checksum mismatch raises :class:`RunReadError`."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stored = arrays.pop(_CHECKSUM, None)
        if stored is None or str(stored) != payload_checksum(arrays):
            raise ValueError("its checksum is missing or does not match its contents (damaged or edited)")
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            modality, sep, entry = key.partition("/")
            if not sep:
                raise ValueError(f"entry {key!r} is not '<modality>/<entry>'")
            out.setdefault(modality, {})[entry] = value
    except Exception as exc:
        raise RunReadError(f"run folder {Path(folder)}: {path.name} cannot be read ({type(exc).__name__}: {exc}). "
                           "Fix: delete that file (the run then refits its tokenizer) or train the run again.") \
            from exc
    return out


def read_metrics(run_id: str) -> dict:
    """A saved run's ``metrics.json`` alone (valid, test, params, timings, best_epoch, stopped, provenance); a
    :class:`RunReadError` names the run, the file and the fix when it is unreadable or lacks its valid / test
    metrics."""
    path = locate(run_id) / "metrics.json"
    try:
        meta = _read_json(path)
        if not all(isinstance(meta.get(k), dict) for k in ("valid", "test")):
            raise ValueError(f"{path.name}: no 'valid' and 'test' metrics")
    except ValueError as exc:
        raise RunReadError(_damage(run_id, path, exc)) from None
    return meta


# ------------------------------------------------------------------------------------------------ tune stop records

TUNE_STOPS_FILE = "_tune/asha_stopped.json"  # in a registry folder; load() reads only run folders


def read_tune_stops() -> dict[str, dict]:
    """{run_id: {"settings", "best_valid", "epochs_run"}} of the trials ASHA stopped in earlier searches: the
    reference registry's record, overridden by the user's."""
    out: dict[str, dict] = {}
    for base in (reference_dir(), runs_dir()):
        if base is not None:
            out.update(_read_stops(base / TUNE_STOPS_FILE))
    return out


def _read_stops(path: Path) -> dict[str, dict]:
    """The entries of one ``asha_stopped.json`` that have the written shape ({run_id: {"settings": {...}, ...}});
    a warning names the file when it is unreadable or holds anything else (those trials run again)."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object {{run_id: entry}}")
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable record of ASHA-stopped trials ({exc}); those trials run again. Fix: "
                      "delete the file.", stacklevel=3)
        return {}
    good = {rid: e for rid, e in record.items() if isinstance(e, dict) and isinstance(e.get("settings"), dict)}
    if len(good) < len(record):
        bad = [rid for rid in record if rid not in good]
        warnings.warn(f"{path}: {len(bad)} entries are not records of a stopped trial (e.g. {bad[0]!r}: "
                      f"{record[bad[0]]!r}); those trials run again. Fix: delete the file (or those entries).",
                      stacklevel=3)
    return good


def record_tune_stops(stopped: dict[str, dict], settings: dict) -> None:
    """Add the trials ASHA stopped to the user's registry record, so a re-launch of the same search (same ASHA
    settings) lists them as stopped instead of training them again; ``reuse=False`` ignores the record."""
    if not stopped:
        return
    path = runs_dir() / TUNE_STOPS_FILE
    record = _read_stops(path)  # a damaged record is rewritten with its good entries
    for rid, o in stopped.items():
        record[rid] = {"settings": settings, "best_valid": o.get("best_valid"), "epochs_run": o.get("epochs_run")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _damage(run_id: str, path: Path, exc: BaseException) -> str:
    return (f"run {run_id}: {path} cannot be read ({type(exc).__name__}: {exc}). Fix: delete the folder "
            f"{path.parent} (or run the configuration again with reuse=False).")


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; a ValueError names the file when it is unreadable or not an object."""
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, dict):
        raise ValueError(f"{path.name}: expected a JSON object, got {type(out).__name__}")
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
    """All complete runs as one tidy DataFrame (one row per run x eval split x bucket x metric). ``root``: that
    folder alone; default: the user's registry plus the reference registry's runs it does not hold."""
    base = Path(root) if root else runs_dir()
    files = sorted(base.glob("*/metrics.json")) if base.is_dir() else []
    ref = None if root else reference_dir()
    if ref is not None:
        own = {f.parent.name for f in files}
        files += sorted(f for f in ref.glob("*/metrics.json") if f.parent.name not in own)
    rows, skipped = [], []
    for mfile in files:
        try:
            rows.extend(_rows(mfile.parent))
        except Exception as exc:  # one damaged folder must not hide the others
            skipped.append(f"{mfile.parent.name} ({type(exc).__name__}: {exc})")
    if skipped:
        warnings.warn(f"runs.load: skipped {len(skipped)} run folder(s) under {base} that cannot be read: "
                      f"{'; '.join(skipped)}. Fix: delete those folders (or run them again).", stacklevel=2)
    cols = ID_COLUMNS + ["eval_split", "bucket", "metric", "k", "value", "ties"]
    return pd.DataFrame(rows, columns=cols)


def _rows(folder: Path) -> list[dict]:
    """The tidy rows of one run folder (raises, naming the file, on anything unreadable or missing)."""
    meta, cfg = _read_json(folder / "metrics.json"), _read_json(folder / "config.json")
    try:
        ident = {"run_id": folder.name, "dataset": cfg["dataset"], "split": cfg["split"],
                 "split_seed": cfg.get("split_seed", 0),
                 "backbone": cfg["backbone"], "item_repr": cfg["item_repr"],
                 "modalities": "+".join(cfg.get("modalities") or ["all"]), "n_tokens": cfg["n_tokens"],
                 "seed": cfg["seed"], "variant": variant_of(cfg), "ties": meta.get("ties", TIES_BEFORE)}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"config.json: no valid entry {exc}") from exc
    rows = []
    try:
        for split in ("valid", "test"):
            for name, value in meta[split].items():
                metric, k = _split_metric(name)
                rows.append({**ident, "eval_split": split, "bucket": "all", "metric": metric, "k": k, "value": value})
        for key in ("total", "item", "item_fraction", "shared_code_fraction"):
            if key in meta["params"]:
                rows.append({**ident, "eval_split": "-", "bucket": "all", "metric": f"params_{key}", "k": None,
                             "value": meta["params"][key]})
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"metrics.json: no valid entry {exc}") from exc
    try:
        for rec in _csv(folder / "buckets.csv").to_dict("records"):
            for name, value in rec.items():
                if "@" in name:
                    metric, k = _split_metric(name)
                    rows.append({**ident, "eval_split": "test", "bucket": rec["bucket"], "metric": metric, "k": k,
                                 "value": value})
    except Exception as exc:
        raise ValueError(f"buckets.csv: {type(exc).__name__}: {exc}") from exc
    bad = [r for r in rows if not isinstance(r["value"], numbers.Real) or isinstance(r["value"], bool)]
    if bad:
        raise ValueError(f"metric {bad[0]['metric']}@{bad[0]['k']} ({bad[0]['eval_split']}) is "
                         f"{bad[0]['value']!r}, not a number")
    return rows
