import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import motor

SHARED = Path(os.environ.get("MOTOR_DATA") or "/nonexistent")


def real(name: str):
    """Skip unless the real dataset folder is present under MOTOR_DATA."""
    return pytest.mark.skipif(not (SHARED / name).is_dir(), reason=f"real dataset {name} not under MOTOR_DATA")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    # caches and run registry never touch the repository during tests
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path_factory.getbasetemp() / "runs"))


def write_folder(folder: Path, rows=None, feats=None, name=None) -> Path:
    """Write a small MMRec folder; ``rows`` = list of (user, item, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    rows = rows if rows is not None else [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 2, 2), (2, 0, 0), (2, 2, 0)]
    df = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"])
    df.insert(2, "rating", 1.0)
    df.insert(3, "timestamp", range(len(df)))
    df = df[["userID", "itemID", "rating", "timestamp", "x_label"]]
    df.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    feats = feats if feats is not None else {"text": np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)}
    for m, f in feats.items():
        np.save(folder / f"{m}_feat.npy", f)
    return folder


@pytest.fixture
def tiny_folder(tmp_path):
    return write_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def small_synth():
    return motor.synthetic(n_users=300, n_items=200, n_interactions=3000, seed=1)
