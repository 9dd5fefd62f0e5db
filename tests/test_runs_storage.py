"""Storage (issue 16 point 9): an unwritable or full registry fails before training, an unwritable cache is
skipped with a warning, and created files respect the umask (a registry or cache shared by a team)."""
import os
import stat
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import motor
import motor.experiment as experiment
from motor import runs
from motor.cache import atomic_write_bytes, save_npz
from motor.tokenizer import tokenize


def _no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained although the result could not be saved")

    monkeypatch.setattr(experiment, "train", boom)
    monkeypatch.setattr(experiment, "get_dataset", boom)


def test_unwritable_registry_fails_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the registry folder should be")
    monkeypatch.setenv("MOTOR_RUNS", str(blocker / "runs"))
    _no_training(monkeypatch)
    with pytest.raises(OSError, match=f"run registry {blocker / 'runs'} is not writable.*Fix: set MOTOR_RUNS"):
        motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False)


def test_full_registry_fails_before_training(tmp_path, monkeypatch):
    """The free space is checked against the run's own size: 2 MB hold a small run, not one with its weights."""
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(10 ** 9, 10 ** 9 - 2 * 10 ** 6, 2 * 10 ** 6))
    small = motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False,
                                 keep_model=False)  # ~0.2 MB without weights: 2 MB free are enough
    assert runs.exists(small.run_id)
    monkeypatch.setattr(experiment, "train", lambda *a, **k: pytest.fail("trained although it cannot be saved"))
    with pytest.raises(OSError, match=r"only 1.9 MB free, and this run needs about [2-9].\d MB to be saved"):
        motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="id", dim=256, epochs=1,
                             progress=False)  # 1,300 x 256 float32 weights


def test_read_only_run_folder_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    cfg = motor.RunConfig(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1)
    folder = tmp_path / "runs" / cfg.run_id()
    folder.mkdir(parents=True)
    import tempfile

    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # what chmod 555 gives a user other than root
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    _no_training(monkeypatch)
    with pytest.raises(OSError, match=rf"run {cfg.run_id()}: its folder .* is not writable .*Fix: make it "
                                      r"writable \(chmod -R u\+w"):
        motor.experiment.run(cfg, progress=False)


def test_a_failed_save_names_the_folder_and_leaves_no_complete_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    real = runs.atomic_write_text

    def full_disk(path, text):
        if path.name == "metrics.json":
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(runs, "atomic_write_text", full_disk)
    with pytest.raises(OSError, match="could not be saved in .*No space left"):
        motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False)
    assert runs.load().empty and not list((tmp_path / "runs").glob("*/metrics.json"))


def test_unwritable_cache_is_skipped_with_a_warning(tmp_path, monkeypatch, small_synth):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MOTOR_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not be written.*going on without caching"):
        ids = tokenize(small_synth, 2, n_centroids=16)
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path / "ok"))
    for m, t in tokenize(small_synth, 2, n_centroids=16).items():
        np.testing.assert_array_equal(t, ids[m])


def test_unwritable_cache_does_not_stop_a_run(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MOTOR_CACHE", str(blocker / "cache"))
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    with pytest.warns(UserWarning, match="could not be written"):
        res = motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="ms", epochs=1, progress=False)
    assert runs.exists(res.run_id)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_created_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        save_npz(tmp_path / "c.npz", a=np.arange(3))
    finally:
        os.umask(old)
    for name in ("a.bin", "c.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask  # was 0o600 whatever the umask


def test_run_folder_files_are_group_readable_under_a_shared_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "runs"))
    old = os.umask(0o002)
    try:
        res = motor.experiment.run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False)
    finally:
        os.umask(old)
    for f in runs.run_path(res.run_id).iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o664, f
