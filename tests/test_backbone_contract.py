"""The backbone contract (motor/backbones/base.py): what a run hands a backbone and what it may ask of it.

``RunConfig.modalities`` reaches the backbone (a text-only run never reads image features), ``dim`` is passed to
the backbones that take it, final item vectors are public, and defaults are written once."""
import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch

import motor
from motor import defaults, experiment
from motor.backbones import REGISTRY, backbone_class, build
from motor.backbones.base import MultimodalBackbone
from motor.experiment import RunConfig, build_model, with_modalities

FEATURE_BACKBONES = ["vbpr", "grcn", "slmrec", "bm3", "freedom", "mgcn"]  # the ones that read modality features


@pytest.fixture(scope="module")
def image_poisoned():
    """A synthetic dataset whose image features are all NaN: any model that reads them yields NaN."""
    ds = motor.synthetic(n_users=150, n_items=120, n_interactions=1500, seed=2)
    return replace(ds, features={**ds.features, "image": np.full_like(ds.features["image"], np.nan)})


def _batch(ds, n=64):
    coo = ds.train.tocoo()
    neg = np.random.default_rng(0).integers(0, ds.n_items, n)
    return tuple(torch.as_tensor(a[:n], dtype=torch.long) for a in (coo.row, coo.col, neg))


def _finite(model, ds) -> bool:
    u, i = model.embeddings()
    loss = model.loss(*_batch(ds))
    return bool(torch.isfinite(u).all() and torch.isfinite(i).all() and torch.isfinite(loss))


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_a_text_only_model_never_reads_the_image_features(image_poisoned, backbone):
    ds = image_poisoned
    text_only, _, _ = build_model(RunConfig(dataset="synthetic", backbone=backbone, item_repr="id", dim=16,
                                            modalities=["text"]), ds)
    assert _finite(text_only, ds)
    assert getattr(text_only, "modalities", ["text"]) == ["text"]
    assert not any(name.endswith("image") for name, _ in text_only.named_buffers())
    if backbone == "vbpr":  # stacked features: only the text columns
        assert text_only.features.shape[1] == ds.features["text"].shape[1]
    # control: with every modality the same model reads the image features, and the NaNs show
    everything, _, _ = build_model(RunConfig(dataset="synthetic", backbone=backbone, item_repr="id", dim=16), ds)
    assert not _finite(everything, ds)


def test_a_text_tokens_only_run_trains_without_reading_images(image_poisoned, monkeypatch):
    monkeypatch.setattr(experiment, "get_dataset", lambda *args, **kwargs: image_poisoned)
    res = experiment.run(dataset="synthetic", backbone="vbpr", item_repr="ms", modalities=["text"], n_tokens=2,
                         epochs=2, save=False, progress=False)
    assert np.isfinite(res.history.loss).all() and res.model.item_repr.modalities == ["text"]
    with pytest.raises(FloatingPointError):  # control: the image features are NaN
        experiment.run(dataset="synthetic", backbone="vbpr", item_repr="id", epochs=1, save=False, progress=False)


def test_with_modalities_keeps_the_interactions_and_names_a_bad_modality(image_poisoned):
    ds = image_poisoned
    text = with_modalities(ds, ["text"])
    assert text.modalities == ["text"] and text.train is ds.train and text.n_items == ds.n_items
    assert with_modalities(ds, None) is ds
    with pytest.raises(ValueError, match=r"RunConfig.modalities: \['audio'\].*\['image', 'text'\]"):
        with_modalities(ds, ["audio"])


def test_multimodal_backbones_share_one_setup():
    for name in FEATURE_BACKBONES[1:]:
        assert issubclass(REGISTRY[name], MultimodalBackbone), name
    assert not any(hasattr(cls, "needs_negatives") for cls in REGISTRY.values())  # removed: the trainer never read it


def test_pop_takes_no_dim_and_runs_with_the_default_config():
    assert backbone_class("pop").takes_dim is False and all(cls.takes_dim for cls in REGISTRY.values())
    res = experiment.run(dataset="synthetic", backbone="pop", item_repr="id", save=False, progress=False)
    assert res.stopped == "not_trainable" and 0 < res.test["recall@20"] < 1
    with pytest.raises(TypeError):
        build("pop", experiment.get_dataset("synthetic"), None, dim=64)
    with pytest.raises(KeyError, match="unknown backbone 'nope'"):
        backbone_class("nope")


def test_item_vectors_are_the_scored_ones_and_public():
    model, ds, _ = build_model(RunConfig(dataset="synthetic", backbone="lightgcn", item_repr="ms", n_tokens=2,
                                         dim=16))
    model.train()
    vectors = model.item_vectors()
    assert model.training and not vectors.requires_grad  # the caller's mode is kept
    with model.evaluating():
        users = torch.arange(5)
        torch.testing.assert_close(model.score(users), model.embeddings()[0][users] @ vectors.T)
        assert torch.equal(model.item_vectors(), vectors)


def test_grcn_propagation_layers_are_a_parameter():
    ds = motor.synthetic(n_users=150, n_items=120, n_interactions=1500, seed=2)
    torch.manual_seed(0)
    none = build("grcn", ds, motor.item_repr.build_item_repr("id", ds.n_items, 16), dim=16, n_conv_layers=0)
    out, ego = none.forward_all()
    torch.testing.assert_close(out[:, :16], torch.nn.functional.normalize(ego, dim=1))  # id_rep = x alone
    torch.manual_seed(0)
    two = build("grcn", ds, motor.item_repr.build_item_repr("id", ds.n_items, 16), dim=16)
    assert two.n_conv_layers == 2 and not torch.allclose(two.forward_all()[0][:, :16], out[:, :16])


def test_defaults_are_written_once():
    from motor.item_repr import build_item_repr
    from motor.tokenizer import PQTokenizer, fit_tokenizers, tokenize
    from motor.train import TrainConfig

    run, train = RunConfig(), TrainConfig()
    assert (run.epochs, run.lr, run.batch_size, run.patience) == (train.epochs, train.lr, train.batch_size,
                                                                  train.patience)
    assert (run.epochs, run.lr, run.batch_size, run.patience) == (defaults.EPOCHS, defaults.LR, defaults.BATCH_SIZE,
                                                                  defaults.PATIENCE)
    assert run.n_tokens == PQTokenizer().n_tokens == defaults.N_TOKENS
    assert run.n_centroids == PQTokenizer().n_centroids == defaults.N_CENTROIDS
    for f in (tokenize, fit_tokenizers):
        assert inspect.signature(f).parameters["n_tokens"].default == defaults.N_TOKENS
    assert inspect.signature(build_item_repr).parameters["dim"].default == run.dim == defaults.DIM
    for cls in REGISTRY.values():
        assert inspect.signature(cls).parameters["dim"].default == defaults.DIM, cls
