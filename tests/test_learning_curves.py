"""Learning curves of several runs (``analysis.learning_curves``, ``curve_summary``) and their figure."""
import numpy as np
import pandas as pd
import pytest

from motor.analysis import curve_summary
from motor.experiment import RunResult, run
from motor.plots import learning_curves_figure
from motor.studies import learning_curves


def _result(run_id: str, item_repr: str, loss, valid, best_epoch: int, train=None) -> RunResult:
    h = pd.DataFrame({"epoch": np.arange(len(loss)), "loss": loss, "valid_recall@20": valid})
    if train is not None:
        h["train_recall@20"] = train
    cfg = {"backbone": "lightgcn", "item_repr": item_repr, "seed": 0}
    return RunResult(run_id, cfg, {}, {}, pd.DataFrame(), h, pd.DataFrame(), {}, {}, best_epoch, "early_stopping")


def test_learning_curves_and_summary_hand_example():
    a = _result("a", "id", [2.0, 1.0, 0.5, 0.25], [0.1, 0.3, 0.2, 0.15], 1, train=[0.1, 0.4, 0.6, 0.7])
    b = _result("b", "ms", [0.8, 0.4, 0.2], [0.2, 0.25, 0.3], 2)
    curves = learning_curves([a, b])
    assert len(curves) == 7 and list(curves.label.unique()) == ["id", "ms"]
    ca = curves[curves.run_id == "a"]
    assert ca.loss_rel.tolist() == pytest.approx([1.0, 0.5, 0.25, 0.125])
    assert ca.valid_rel.max() == pytest.approx(1.0) and ca[ca.best].epoch.tolist() == [1]
    assert ca.train.tolist() == pytest.approx([0.1, 0.4, 0.6, 0.7])
    assert curves[curves.run_id == "b"].train.isna().all()  # not recorded: NaN, not zero
    s = curve_summary(curves).set_index("run_id")
    assert s.loc["a", "best_epoch"] == 1 and s.loc["a", "epochs_run"] == 4
    assert s.loc["a", "valid_after_best_%"] == pytest.approx(100 * (0.15 / 0.3 - 1))
    assert s.loc["a", "loss_after_best_%"] == pytest.approx(-75.0)
    assert s.loc["a", "train_after_best"] == pytest.approx(0.3)
    assert s.loc["b", "valid_after_best_%"] == pytest.approx(0.0) and np.isnan(s.loc["b", "train_after_best"])
    # labels from a dict
    labelled = learning_curves({"ID": a, "MOTOR": b})
    assert list(labelled.label.unique()) == ["ID", "MOTOR"]
    fig = learning_curves_figure(curves)
    # per run: loss, valid, best marker; run a also its train curve
    assert len(fig.data) == 7 and fig.layout.yaxis.type == "log"
    assert sum(t.line.dash == "dash" for t in fig.data if t.mode == "lines") == 1


def test_learning_curves_reads_registry_runs():
    res = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=2, progress=False)
    curves = learning_curves([res.run_id])
    assert curves.epoch.tolist() == [0, 1]
    np.testing.assert_allclose(curves.loss, res.history.loss)
    np.testing.assert_allclose(curves.valid, res.history["valid_recall@20"])
    assert learning_curves([]).empty
