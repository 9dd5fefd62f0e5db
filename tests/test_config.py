"""motor.config: the command line is generated from RunConfig's fields, and every committed run id recomputes
from its saved config (the run configuration's one source; issue 25)."""
import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from motor import cli, runs
from motor.config import ConfigError, RunConfig, from_dict

REPO = Path(__file__).resolve().parent.parent


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli.add_config_options(parser)
    return parser


def test_the_cli_options_are_the_runconfig_fields():
    options = {a.dest for a in _train_parser()._actions if a.dest != "help"}
    assert options == {f.name for f in fields(RunConfig)}
    assert all(f.metadata.get("help") for f in fields(RunConfig))  # every field says what it is


def test_train_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(f"--{f.name.replace('_', '-')}" in text for f in fields(RunConfig))


def test_cli_values_become_the_same_runconfig():
    args = _train_parser().parse_args(["--keep", "0.5", "--weight-decay", "1e-4", "--lr-schedule", "[0.5, 10]",
                                       "--cold-fraction", "0.3", "--modalities", "text", "--hparams",
                                       '{"n_layers": 2}', "--split-seed", "1"])
    given = cli.config_options(args)
    assert given == {"keep": 0.5, "weight_decay": 1e-4, "lr_schedule": [0.5, 10], "cold_fraction": 0.3,
                     "modalities": ["text"], "hparams": {"n_layers": 2}, "split_seed": 1}
    assert cli.config_options(_train_parser().parse_args([])) == {}  # nothing given: RunConfig's defaults
    assert cli.config_options(_train_parser().parse_args(["--weight-decay", "none"])) == {"weight_decay": None}


def test_cli_values_are_validated_like_runconfig(capsys):
    assert cli.main(["train", "--dataset", "synthetic", "--keep", "1.5"]) == 2
    assert "RunConfig.keep=1.5" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="RunConfig.keep=1.5"):
        RunConfig(dataset="synthetic", keep=1.5).validate()


def test_every_committed_run_id_recomputes_from_its_config():
    """Behaviour unchanged: the id (and variant name) of every run in reports/runs follows from its config.json."""
    folders = sorted(p.parent for p in (REPO / "reports" / "runs").glob("*/config.json"))
    assert folders
    for folder in folders:
        saved = json.loads((folder / "config.json").read_text())
        assert from_dict(saved).run_id() == folder.name
        assert runs.variant_of(saved) == runs.variant_of(vars(from_dict(saved)))


def test_non_default_fields_are_the_one_rule_for_ids_and_variants():
    base = RunConfig(dataset="synthetic")
    for change in ({"keep": 0.5}, {"tokenizer": {"subspace_seeds": True}}, {"weight_decay": 1e-3},
                   {"lr_schedule": [0.5, 10]}):
        cfg = RunConfig(dataset="synthetic", **change)
        assert runs.non_default_fields(vars(cfg)) == change
        assert cfg.run_id() != base.run_id() and runs.variant_of(vars(cfg)) != ""
    assert runs.non_default_fields(vars(base)) == {} and runs.variant_of(vars(base)) == ""
