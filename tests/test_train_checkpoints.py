"""Checkpoints (issue 16 point 6): a checkpoint carries a fingerprint of its run and a checksum; resuming from a
damaged file, a file of another configuration or a path that does not exist stops with the file and the fix."""
import io

import pytest
import torch

import motor
from motor.backbones import build
from motor.item_repr import build_item_repr
from motor.train import CheckpointError, train


def _model(ds, backbone="bpr", kind="id", seed=0):
    torch.manual_seed(seed)
    tok = motor.tokenize(ds, 2, n_centroids=16) if kind != "id" else None
    return build(backbone, ds, build_item_repr(kind, ds.n_items, 8, token_ids=tok, n_centroids=16), dim=8)


@pytest.fixture
def ckpt(small_synth, tmp_path):
    path = tmp_path / "run.ckpt"
    train(_model(small_synth), small_synth, epochs=2, progress=False, checkpoint=str(path))
    return path


def test_resume_from_an_intact_checkpoint_continues(small_synth, ckpt):
    res = train(_model(small_synth, seed=5), small_synth, epochs=3, progress=False, checkpoint=str(ckpt), resume=True)
    assert list(res.history["epoch"]) == [0, 1, 2]


@pytest.mark.parametrize("where", [0.5, 0.9, -1, "fingerprint"])
def test_one_flipped_byte_is_refused(small_synth, ckpt, where):
    raw = bytearray(ckpt.read_bytes())
    if where == "fingerprint":  # inside the header's fingerprint: damage, not "another configuration"
        i = raw.index(b'"fingerprint": "') + len(b'"fingerprint": "') + 3
    else:
        i = int(len(raw) * where) if where > 0 else len(raw) - 1
    raw[i] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="damaged") as err:
        train(_model(small_synth), small_synth, epochs=3, progress=False, checkpoint=str(ckpt), resume=True)
    assert str(ckpt) in str(err.value) and "resume=False" in str(err.value)


def test_truncated_checkpoint_is_refused(small_synth, ckpt):
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"{ckpt} is damaged.*Fix: delete"):
        train(_model(small_synth), small_synth, epochs=3, progress=False, checkpoint=str(ckpt), resume=True)


def test_checkpoint_of_another_backbone_is_refused(small_synth, ckpt):
    with pytest.raises(CheckpointError, match="another configuration.*saved model BPR, this run LightGCN") as err:
        train(_model(small_synth, backbone="lightgcn"), small_synth, epochs=3, progress=False,
              checkpoint=str(ckpt), resume=True)
    assert str(ckpt) in str(err.value)


def test_checkpoint_of_another_item_representation_is_refused(small_synth, ckpt):
    with pytest.raises(CheckpointError, match="another configuration"):
        train(_model(small_synth, kind="ms"), small_synth, epochs=3, progress=False, checkpoint=str(ckpt),
              resume=True)


def test_checkpoint_of_another_learning_rate_is_refused(small_synth, ckpt):
    with pytest.raises(CheckpointError, match="trainer.lr"):
        train(_model(small_synth), small_synth, epochs=3, lr=0.01, progress=False, checkpoint=str(ckpt),
              resume=True)


def test_checkpoint_of_other_data_is_refused(small_synth, ckpt):
    other = motor.resplit(small_synth, "random", seed=7)
    with pytest.raises(CheckpointError, match="differs in: data"):
        train(_model(other), other, epochs=3, progress=False, checkpoint=str(ckpt), resume=True)


def test_a_mistyped_checkpoint_path_is_an_error(small_synth, ckpt):
    wrong = ckpt.with_name("rnu.ckpt")
    with pytest.raises(CheckpointError, match=f"{wrong} does not exist.*resume=False"):
        train(_model(small_synth), small_synth, epochs=3, progress=False, checkpoint=str(wrong), resume=True)
    with pytest.raises(CheckpointError, match="needs checkpoint"):
        train(_model(small_synth), small_synth, epochs=3, progress=False, resume=True)


def test_a_bare_torch_file_is_refused_without_advising_weights_only_false(small_synth, tmp_path):
    path = tmp_path / "plain.pt"
    buf = io.BytesIO()
    torch.save({"model": {}, "epoch": 0}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="not a motor checkpoint") as err:
        train(_model(small_synth), small_synth, epochs=3, progress=False, checkpoint=str(path), resume=True)
    assert "weights_only" not in str(err.value)
