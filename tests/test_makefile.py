"""The Makefile's ``run`` target: DATASET and BACKBONE are values, never shell code, and are checked first."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


def _stamp(tmp_path) -> Path:
    """An up-to-date venv stamp: make builds no venv."""
    stamp = tmp_path / "stamp"
    stamp.touch()
    return stamp


def _make(tmp_path, *assignments: str) -> subprocess.CompletedProcess:
    """``make run`` with this interpreter (no venv is built), output under tmp_path."""
    return subprocess.run(["make", "-C", str(ROOT), "run", f"PY={sys.executable}", f"STAMP={_stamp(tmp_path)}",
                           f"OUT={tmp_path / 'out'}", *assignments], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("assignment, says", [
    ("DATASET=x;touch {p};false", "dataset 'x;touch"),
    ("DATASET=x' ; touch {p} ; echo '", "not found under"),
    ("DATASET=`touch {p}`", "not found under"),
    ("BACKBONE=lightgcn;touch {p}", "BACKBONE='lightgcn;touch"),
    ("BACKBONE=$$(touch {p})", "is not a backbone; use one of"),
    ("BACKBONE=../../x", "is not a backbone"),
])
def test_injected_commands_do_not_run_and_bad_values_stop_first(tmp_path, assignment, says):
    planted = tmp_path / "planted"
    extra = [] if assignment.startswith("DATASET") else ["DATASET=synthetic"]
    done = _make(tmp_path, assignment.format(p=planted), *extra)
    assert done.returncode != 0
    assert not planted.exists()  # the injected command never ran
    assert says in done.stderr
    assert not (tmp_path / "out").exists()  # stopped before anything was written


def test_the_recipe_never_holds_the_values_as_shell_text(tmp_path):
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "run", f"PY={sys.executable}",
                           f"STAMP={_stamp(tmp_path)}", "DATASET=a;b", "BACKBONE=c;d"],
                          capture_output=True, text=True, timeout=60)
    assert "a;b" not in done.stdout and "c;d" not in done.stdout
    assert '"$DATASET"' in done.stdout and '"$BACKBONE"' in done.stdout
