"""The committed results (reports/runs) are a read-only reference registry behind the user's own registry."""
from pathlib import Path

import pytest

from motor import runs
from motor.experiment import run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def two_registries(tmp_path, monkeypatch):
    ref, own = tmp_path / "reference", tmp_path / "own"
    monkeypatch.setenv("MOTOR_RUNS", str(ref))
    saved = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False, keep_model=False)
    monkeypatch.setenv("MOTOR_RUNS", str(own))
    monkeypatch.setenv("MOTOR_REFERENCE_RUNS", str(ref))
    return saved, ref, own


def test_reference_runs_are_found_and_reused_without_training(two_registries, monkeypatch):
    saved, ref, own = two_registries
    assert runs.exists(saved.run_id) and runs.locate(saved.run_id) == ref / saved.run_id
    assert runs.read(saved.run_id)["test"] == saved.test
    assert set(runs.load().run_id) == {saved.run_id}
    monkeypatch.setattr("motor.experiment.train", lambda *a, **k: pytest.fail("a reference run was retrained"))
    again = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, reuse=True, progress=False)
    assert again.test == saved.test
    assert not own.exists() or not any(own.iterdir())  # reading the reference writes nothing


def test_the_users_run_shadows_the_reference(two_registries):
    saved, ref, own = two_registries
    mine = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=2, progress=False, keep_model=False)
    assert mine.run_id != saved.run_id  # epochs differ: another configuration
    both = runs.load()
    assert set(both.run_id) == {saved.run_id, mine.run_id}
    # the same id in both: the user's copy wins
    import shutil
    shutil.copytree(ref / saved.run_id, own / saved.run_id)
    (own / saved.run_id / "config.json").write_text((ref / saved.run_id / "config.json").read_text())
    assert runs.locate(saved.run_id) == own / saved.run_id
    assert runs.load().run_id.value_counts()[saved.run_id] == len(runs.load(own).query("run_id == @saved.run_id"))
    assert set(runs.load(ref).run_id) == {saved.run_id}  # an explicit root is read alone


def test_reference_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("MOTOR_REFERENCE_RUNS", raising=False)
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path))
    assert runs.reference_dir() is None  # an explicit registry (tests, make reports, Ray workers) is read alone
    monkeypatch.delenv("MOTOR_RUNS")
    expected = REPO / "reports" / "runs"
    assert runs.reference_dir() == (expected if expected.is_dir() else None)
    monkeypatch.setenv("MOTOR_REFERENCE_RUNS", "")
    assert runs.reference_dir() is None
