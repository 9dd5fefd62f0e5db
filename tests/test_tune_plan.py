"""motor.tune.plan: selection on a hand-built trials table (no Ray, no training): the paper's protocol rests on it."""
import importlib

import numpy as np
import pandas as pd
import pytest

from motor.config import RunConfig

plan = importlib.import_module("motor.tune.plan")  # ``motor.tune.plan`` is also the name of the plan function


def _table(rows):
    """Trials (plan) and their table: rows of (point, reg_weight, seed, status, valid recall@20)."""
    trials, records = [], []
    for point, reg, seed, status, valid in rows:
        cfg = RunConfig(dataset="synthetic", backbone="bpr", item_repr="id", seed=seed, hparams={"reg_weight": reg})
        t = plan._Trial("synthetic", "bpr", "id", point, {"reg_weight": reg}, seed, cfg)
        trials.append(t)
        records.append({"dataset": "synthetic", "backbone": "bpr", "item_repr": "id", "point": point, "seed": seed,
                        "run_id": t.run_id, "status": status,
                        "valid_recall@20": valid if status in plan.COMPLETE else np.nan})
    return pd.DataFrame(records), trials


@pytest.fixture(autouse=True)
def _no_registry(monkeypatch):
    monkeypatch.setattr(plan, "_test_metrics", lambda rid: {"recall@20": 0.5, "n_users": 10})


def test_points_with_only_some_seeds_finished_are_never_selected():
    table, trials = _table([
        (0, 1e-2, 0, "trained", 0.10), (0, 1e-2, 1, "reused", 0.12),       # complete, mean 0.11
        (1, 1e-3, 0, "trained", 0.90), (1, 1e-3, 1, "stopped_early", 0),    # better mean of what finished
        (2, 1e-4, 0, "trained", 0.80), (2, 1e-4, 1, "error", 0),
        (3, 1e-5, 0, "trained", 0.95),                                      # seed 1 never ran (no row)
    ])
    sel = plan.select(table, trials)
    row = sel.iloc[0]
    assert row.point == 0 and row.n_complete == 1 and row.n_points == 4
    assert row.run_ids == tuple(table.run_id[:2]) and row.seeds == (0, 1)
    assert row["valid_recall@20"] == pytest.approx(0.11)


def test_nothing_is_selected_when_no_point_has_every_seed():
    table, trials = _table([(0, 1e-2, 0, "trained", 0.3), (0, 1e-2, 1, "error", 0),
                            (1, 1e-3, 0, "stopped_early", 0), (1, 1e-3, 1, "trained", 0.4)])
    row = plan.select(table, trials).iloc[0]
    assert row.n_complete == 0 and row.run_ids == () and row.hyper_parameters is None


def test_ties_go_to_the_first_point_of_the_grid():
    table, trials = _table([(0, 1e-2, 0, "trained", 0.2), (1, 1e-3, 0, "trained", 0.2)])
    assert plan.select(table, trials).iloc[0].point == 0
