"""Content-addressed on-disk cache: keys hash the data *and* every parameter, files are written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$MOTOR_CACHE`` if set, else ``.cache/`` in the repository."""
    env = os.environ.get("MOTOR_CACHE")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / ".cache"
    return root


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` with an atomic rename."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays of an ``.npz`` cache file, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None
