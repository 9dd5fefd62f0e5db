"""Every backbone on a CUDA device: the same loss, gradients and scores as on CPU for the same weights (float32
rounding apart), and the trainer, evaluation and ``motor.run`` end to end on the device.

Skipped where torch sees no CUDA device, as on CI. On a GPU machine: ``pytest tests/test_device.py``.
"""
import copy

import numpy as np
import pytest
import torch

import motor
from motor.backbones import REGISTRY, build
from motor.evaluate import evaluate
from motor.item_repr import build_item_repr
from motor.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# BM3 draws its dropout views from the device's own generator, which differs between devices: switched off here
SAME_RANDOMNESS = {"bm3": {"dropout": 0.0}}
BACKBONES = sorted(set(REGISTRY) - {"pop"})


@pytest.fixture(scope="module")
def data():
    ds = motor.synthetic(n_users=300, n_items=200, n_interactions=3000, seed=0)
    return ds, motor.tokenize(ds, 4)


def _model(name: str, kind: str, ds, token_ids, **hparams):
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=token_ids)
    return build(name, ds, rep, **{**SAME_RANDOMNESS.get(name, {}), **hparams})


def _batch(ds, n=256):
    coo = ds.train.tocoo()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(coo.row), n, replace=False)
    return (torch.as_tensor(coo.row[pick], dtype=torch.long), torch.as_tensor(coo.col[pick], dtype=torch.long),
            torch.as_tensor(rng.integers(0, ds.n_items, n), dtype=torch.long))


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.detach().abs().max()) if want.numel() else 1.0
    torch.testing.assert_close(got.detach().cpu(), want.detach(), rtol=1e-3, atol=1e-4 * max(scale, 1e-3),
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("kind", ["id", "ms"])
@pytest.mark.parametrize("name", BACKBONES)
def test_same_loss_gradients_and_scores_as_on_cpu(data, name, kind):
    ds, token_ids = data
    cpu = _model(name, kind, ds, token_ids)
    gpu = copy.deepcopy(cpu).to("cuda")
    batch = _batch(ds)
    losses = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.train()
        model.on_epoch_start(torch.Generator().manual_seed(0))  # edge dropout: drawn on CPU, the same graph
        loss = model.loss(*(t.to(device) for t in batch))
        loss.backward()
        losses.append(loss)
    assert losses[1].device.type == "cuda"
    _close(losses[1], losses[0], "loss")
    for (pname, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert (p.grad is None) == (q.grad is None), pname
        if p.grad is not None:
            assert q.grad.device.type == "cuda"
            _close(q.grad, p.grad, f"gradient of {pname}")
    users = torch.arange(ds.n_users)
    with cpu.evaluating(), gpu.evaluating():
        _close(gpu.score(users.cuda()), cpu.score(users), "scores")


@pytest.mark.parametrize("name", ["lightgcn", "freedom"])
def test_trainer_and_evaluation_run_on_the_device(data, name):
    ds, token_ids = data
    model = _model(name, "ms", ds, token_ids)
    res = train(model, ds, epochs=3, device="cuda", progress=False)
    assert res.epochs_run == 3 and np.isfinite(res.history["loss"]).all()
    assert next(model.parameters()).device.type == "cuda"
    on_gpu = evaluate(model, ds, "valid", device="cuda", buckets=None).metrics
    on_cpu = evaluate(copy.deepcopy(model).cpu(), ds, "valid", buckets=None).metrics
    for key, value in on_cpu.items():  # near-ties may rank differently under different rounding
        assert abs(on_gpu[key] - value) <= 0.01, key


# FREEDOM draws its edge pruning from a CPU generator, BM3 its dropout views from the device's generator
@pytest.mark.parametrize("name, hparams", [("freedom", {}), ("bm3", {"dropout": 0.5})])
def test_resume_on_the_device_continues_the_run(data, name, hparams, tmp_path):
    ds, token_ids = data
    whole = train(_model(name, "ms", ds, token_ids, **hparams), ds, epochs=4, device="cuda", progress=False)
    ckpt = str(tmp_path / "ckpt.pt")
    train(_model(name, "ms", ds, token_ids, **hparams), ds, epochs=2, device="cuda", progress=False,
          checkpoint=ckpt)
    resumed = train(_model(name, "ms", ds, token_ids, **hparams), ds, epochs=4, device="cuda", progress=False,
                    checkpoint=ckpt, resume=True)
    # CUDA's atomic adds make runs equal up to float rounding, not bit for bit
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-4)
    assert resumed.best_valid == pytest.approx(whole.best_valid, abs=1e-3)


def test_run_records_the_device():
    from motor.experiment import run

    result = run(dataset="synthetic", backbone="bpr", item_repr="ms", epochs=2, device="cuda", progress=False,
                 save=False)
    assert result.config["device"] == "cuda"
    assert np.isfinite(result.test["recall@20"])
