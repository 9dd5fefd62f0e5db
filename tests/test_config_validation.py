"""Run parameters (issue 16 points 4, 10): checked before anything is loaded, errors name the parameter, the
value and the allowed values; no untrained model is ever saved as a result."""
import numpy as np
import pandas as pd
import pytest
import torch

import motor.experiment as experiment
from motor import runs
from motor.data import DataError
from motor.experiment import ConfigError, RunConfig, run

from .conftest import write_folder


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_RUNS", str(tmp_path / "registry"))  # a registry per test: counts are exact

BAD = [
    ("epochs", 0, "integer >= 1"),
    ("epochs", -3, "integer >= 1"),
    ("epochs", 2.5, "integer >= 1"),
    ("patience", 0, "integer >= 1"),
    ("batch_size", -1, "integer >= 1"),
    ("batch_size", 0, "integer >= 1"),
    ("dim", 0, "integer >= 1"),
    ("n_tokens", "4", "integer >= 1"),
    ("n_tokens", 4.0, "integer >= 1"),
    ("n_tokens", 0, "integer >= 1"),
    ("n_centroids", 100, "power of two"),
    ("n_centroids", 512, "power of two"),
    ("seed", "0", "integer in \\[0"),
    ("seed", -1, "integer in \\[0"),
    ("seed", True, "integer in \\[0"),
    ("split_seed", 1.5, "integer in \\[0"),
    ("lr", 0, "finite number > 0"),
    ("lr", float("nan"), "finite number > 0"),
    ("lr", "1e-3", "finite number > 0"),
    ("backbone", "lightgnc", "one of \\['bm3'"),
    ("backbone", None, "one of"),
    ("item_repr", "tokens", "registered item representations"),
    ("split", "temporal", "one of \\['given', 'random', 'loo', 'cold_item'\\]"),
    ("modalities", "text", "list of modality names"),
    ("modalities", [], "non-empty list"),
    ("modalities", ["text", "text"], "distinct"),
    ("modalities", ["../x"], "modality names"),
    ("cold_fraction", 1.5, "in \\(0, 1\\)"),
    ("keep", 0, "in \\(0, 1\\]"),
    ("dataset", "", "dataset name"),
    ("dataset", None, "dataset name"),
    ("hparams", {"n_layer": 3}, "unknown key.*n_layer.*n_layers"),
    ("hparams", [1], "dict of keyword arguments"),
    ("tcn", {"hiden": [8]}, "unknown key.*hidden"),
    ("tokenizer", {"subspace_seed": True}, "unknown key.*subspace_seeds"),
    ("hparams", {"n_layers": "two"}, "expected a value like its default 2"),
    ("tcn", {"hidden": 8}, "expected a value like its default"),
    ("tokenizer", {"max_dim": 0}, "max_dim=0"),
    ("tokenizer", {"init": "svd"}, "'pca' or 'random'"),
    ("device", "gpu", "not a device name"),
    ("device", "meta", "motor runs on"),
    ("tag", 3, "a str"),
]


@pytest.mark.parametrize("name, value, allowed", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_bad_parameter_names_parameter_value_and_allowed(name, value, allowed):
    with pytest.raises(ConfigError, match=allowed) as err:
        RunConfig(**{name: value}).validate()
    assert f"RunConfig.{name}" in str(err.value)
    if name not in ("hparams", "tcn", "tokenizer"):
        assert repr(value) in str(err.value)


def test_defaults_and_every_registered_name_validate():
    from motor.backbones import BASELINES, REGISTRY

    for bb in list(REGISTRY) + list(BASELINES):
        RunConfig(backbone=bb).validate()
    for kind in experiment.item_repr_names():
        RunConfig(item_repr=kind).validate()
    RunConfig(modalities=["text"], hparams={"n_layers": 3}, tcn={"hidden": [8]},
              tokenizer={"subspace_seeds": True}, device="cpu", seed=np.int64(3)).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_cpu_machine_says_so():
    with pytest.raises(ConfigError, match="CUDA is not available in this torch build|shows 0 CUDA device"):
        RunConfig(device="cuda").validate()


def _no_loading(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the dataset was loaded before the parameters were checked")

    monkeypatch.setattr(experiment, "get_dataset", boom)
    monkeypatch.setattr(experiment, "fit_tokenizers", boom)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"patience": 0}, {"batch_size": -1}, {"backbone": "nope"},
                                    {"modalities": "text"}, {"n_tokens": "x"}, {"dim": 0}, {"device": "cuda:7"}])
def test_run_checks_parameters_before_loading_and_saves_nothing(monkeypatch, kwargs):
    _no_loading(monkeypatch)
    with pytest.raises(ConfigError):
        run(dataset="synthetic", progress=False, **kwargs)
    assert runs.load().empty


def test_a_run_that_trained_zero_epochs_is_not_saved(monkeypatch):
    from motor.train import TrainResult

    monkeypatch.setattr(experiment, "train", lambda *a, **k: TrainResult(pd.DataFrame(), -1, {}, "max_epochs", 0.0))
    with pytest.raises(RuntimeError, match="trained zero epochs"):
        run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False)
    assert runs.load().empty


def test_given_split_without_valid_rows_is_refused(tmp_path):
    rows = [(u, i, 0) for u in range(6) for i in range(4) if (u + i) % 3] + [(0, 0, 2), (1, 2, 2)]
    folder = write_folder(tmp_path / "novalid", rows=rows,
                          feats={"text": np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)})
    with pytest.raises(DataError, match="split='given' has no valid interactions, so no epoch can be selected"):
        run(dataset=str(folder), split="given", backbone="bpr", item_repr="id", epochs=2, progress=False)
    assert runs.load().empty  # before: epoch 0 "selected" and its test metrics saved
