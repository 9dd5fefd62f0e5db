"""Same seed and data give the same token ids and the same metrics whatever the thread count (CPU).

Each case runs in fresh processes with different ``OMP_NUM_THREADS`` (the thread count of faiss, the BLAS
libraries and torch is fixed when they load), and compares their outputs bit for bit.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import real

TOKENIZE = """
import sys, numpy as np, motor
from motor.experiment import get_dataset
ds = get_dataset(sys.argv[1])
t = motor.tokenize(ds, 4, use_cache=False, method=sys.argv[3])
np.savez(sys.argv[2], **t)
"""

TRAIN = """
import sys, json
from motor.experiment import run
r = run(dataset=sys.argv[1], backbone="lightgcn", item_repr="ms", seed=0, epochs=3, patience=3, progress=False,
        save=False)
print(json.dumps({"valid": r.valid, "test": r.test, "best_epoch": r.best_epoch}))
"""


def _child(code: str, args: list[str], threads: int, cache) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MOTOR_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _tokens_equal_across_threads(dataset: str, tmp_path, method: str = "opq") -> None:
    files = []
    for threads in (1, 2):
        f = tmp_path / f"tokens{threads}.npz"
        _child(TOKENIZE, [dataset, str(f), method], threads, tmp_path / f"cache{threads}")
        files.append(np.load(f))
    a, b = files
    assert set(a.files) == set(b.files) and a.files
    for m in a.files:
        np.testing.assert_array_equal(a[m], b[m], err_msg=f"{m} token ids differ between 1 and 2 threads")


@pytest.mark.parametrize("method", ["opq", "rq"])
def test_synthetic_tokens_do_not_depend_on_threads(tmp_path, method):
    _tokens_equal_across_threads("synthetic", tmp_path, method)


@real("scientific")
@pytest.mark.parametrize("method", ["opq", "rq"])
def test_scientific_tokens_do_not_depend_on_threads(tmp_path, method):
    _tokens_equal_across_threads("scientific", tmp_path, method)


@pytest.mark.parametrize("dataset", ["synthetic", pytest.param("scientific", marks=real("scientific"))])
def test_lightgcn_ms_metrics_do_not_depend_on_threads(dataset, tmp_path):
    runs = [json.loads(_child(TRAIN, [dataset], threads, tmp_path / f"cache{threads}").strip().splitlines()[-1])
            for threads in (1, 2)]
    assert runs[0] == runs[1]
