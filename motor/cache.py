"""Content-addressed on-disk cache: keys hash the data *and* every parameter, files are written atomically.

A cache file carries a SHA-256 checksum of its arrays and is checked when read (checksum, then the caller's
shape / dtype / range checks): a file that is damaged, truncated or does not fit is reported in a warning naming it
and rebuilt. A cache is only an optimisation: a folder that cannot be written is skipped with a warning.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

CHECKSUM_KEY = "__checksum__"


class CacheWarning(UserWarning):
    """A cache file was unusable (rebuilt) or could not be written (skipped)."""


def cache_dir() -> Path:
    """``$MOTOR_CACHE`` if set, else ``.cache/`` in the repository."""
    env = os.environ.get("MOTOR_CACHE")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / ".cache"
    return root


def fingerprint(description: dict) -> str:
    """32 hex digits of SHA-256 over ``description`` as sorted JSON: what a checkpoint or saved weights were written
    for (:func:`motor.train.checkpoint_bytes`, :func:`motor.runs.weights_bytes`)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def use_numba_cache() -> str:
    """Point numba's cache of compiled functions (``cache=True``) at ``cache_dir()/numba`` unless the user set
    ``NUMBA_CACHE_DIR``; returns the previous setting, which the caller restores once its functions are defined
    (numba picks a function's cache folder when it is decorated). An installed, read-only motor then never writes
    next to its source (numba's default, ``__pycache__``)."""
    import numba

    before = numba.config.CACHE_DIR
    if not os.environ.get("NUMBA_CACHE_DIR"):
        numba.config.CACHE_DIR = str((cache_dir() / "numba").expanduser().resolve())
    return before


def content_key(*parts) -> str:
    """SHA-256 over arrays (dtype, shape and bytes) and JSON-able parameters, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, then rename: readers never see half a file. The file gets
    the mode a plain ``open`` would give it (0666 minus the umask), not the temp file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def payload_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays (name, dtype, shape, bytes) in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_npz(path: Path, **arrays: np.ndarray) -> bool:
    """``np.savez`` plus a checksum entry, with an atomic rename. Returns False (and warns, naming the file) when
    the cache folder cannot be written: the caller goes on with the value it computed."""
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{CHECKSUM_KEY: np.array(payload_checksum(arrays))})
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        warnings.warn(f"cache file {path} could not be written ({type(exc).__name__}: {exc}); going on without "
                      "caching it. Fix: make the cache folder writable or set MOTOR_CACHE to one that is.",
                      CacheWarning, stacklevel=2)
        return False
    return True


def load_npz(path: Path, check: Callable[[dict[str, np.ndarray]], str | None] | None = None
             ) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file written by :func:`save_npz`, or None when it is missing or unusable.

    Unusable (a warning names the file and why; the caller rebuilds and overwrites it): unreadable (truncated,
    not a zip, bit-flipped), without a checksum or with one that does not match its arrays, or rejected by
    ``check`` (a function of the arrays returning a description of the problem, or None when they fit)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stored = arrays.pop(CHECKSUM_KEY, None)
        if stored is None:
            problem = "it has no checksum (written by an older motor or another program)"
        elif str(stored) != payload_checksum(arrays):
            problem = "its checksum does not match its contents (damaged or edited)"
        else:
            problem = check(arrays) if check is not None else None
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, ...
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        warnings.warn(f"cache file {path} is not used: {problem}. It is rebuilt.", CacheWarning, stacklevel=2)
        return None
    return arrays


def array_problem(arrays: dict[str, np.ndarray], name: str, shape: tuple, kind: str,
                  low: float | None = None, high: float | None = None) -> str | None:
    """What is wrong with ``arrays[name]`` (None when nothing): missing, a dtype not of ``kind`` (numpy kind
    letters, e.g. ``"f"`` or ``"iu"``), a shape other than ``shape`` (None = any length), non-finite values, or
    values outside ``[low, high)``."""
    a = arrays.get(name)
    if a is None:
        return f"entry {name!r} is missing"
    if a.dtype.kind not in kind:
        return f"entry {name!r} has dtype {a.dtype}, expected kind {kind!r}"
    if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
        return f"entry {name!r} has shape {a.shape}, expected {tuple('any' if s is None else s for s in shape)}"
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        return f"entry {name!r} holds NaN or inf"
    if a.size and low is not None and a.min() < low:
        return f"entry {name!r} holds {a.min()}, below {low}"
    if a.size and high is not None and a.max() >= high:
        return f"entry {name!r} holds {a.max()}, expected < {high}"
    return None
