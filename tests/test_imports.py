"""Imports are cheap and inert: ``import motor`` (and the modules a run imports) load no faiss, start no
subprocess, leave ``os.environ`` and the warning filters as they were. Each case runs in a fresh interpreter; the
same child then does what should have those effects (load faiss, read the provenance), so the probes are shown to
see them."""
import json
import os
import shutil
import subprocess
import sys

import pytest

_PROBE = r"""
import json, os, subprocess, sys, warnings
started = []


class _Recording(subprocess.Popen):
    def __init__(self, args, *a, **k):
        started.append(str(args))
        super().__init__(args, *a, **k)


subprocess.Popen = _Recording  # before any motor import: every subprocess motor starts goes through it
for name in sys.argv[2].split(","):  # third-party libraries first: their own warning filters are theirs
    __import__(name)
env, filters = dict(os.environ), list(warnings.filters)
for name in sys.argv[1].split(","):
    __import__(name)
out = {"faiss": "faiss" in sys.modules, "torch": "torch" in sys.modules, "started": list(started),
       "env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
       "filters_changed": warnings.filters != filters}
import motor.tokenizer, motor.runs  # the effects, when they are due
motor.tokenizer.load_faiss()
motor.runs.provenance()
out["then_faiss"] = "faiss" in sys.modules
out["then_started"] = len(started)
out["then_env_changed"] = any(env.get(k) != os.environ.get(k) for k in set(env) | set(os.environ))
print(json.dumps(out))
"""


_LIBRARIES = "numpy,scipy.sparse,pandas"


def _probe(modules: str, policy: str | None = "ACTIVE", libraries: str = _LIBRARIES) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy  # faiss's loader sets PASSIVE while faiss loads and must put this back
    out = subprocess.run([sys.executable, "-c", _PROBE, modules, libraries], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("policy", ["ACTIVE", None])
def test_import_motor_is_inert(policy):
    seen = _probe("motor", policy)
    assert seen["faiss"] is False
    assert seen["started"] == []
    assert seen["env_changed"] == []
    assert seen["filters_changed"] is False
    # the probe sees the effects when they are due: faiss loads on first use, git runs on the first save
    assert seen["then_faiss"] is True and seen["then_env_changed"] is False
    if shutil.which("git"):
        assert seen["then_started"] > 0


def test_the_modules_a_run_imports_are_inert():
    """experiment/backbones/runs import torch (they need it) but no faiss, no subprocess, no global warning
    filter (GRCN's CSR warning is silenced where its tensors are made, not for the whole process)."""
    seen = _probe("motor.experiment,motor.backbones,motor.runs,motor.item_repr,motor.train",
                  libraries=_LIBRARIES + ",torch")
    assert seen["faiss"] is False and seen["started"] == [] and seen["env_changed"] == []
    assert seen["filters_changed"] is False


def test_import_motor_runs_loads_no_torch():
    seen = _probe("motor.runs")
    assert seen["torch"] is False and seen["started"] == []
