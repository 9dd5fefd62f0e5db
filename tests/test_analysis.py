"""Statistics of motor.analysis: Holm correction and paired intervals."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from motor.analysis import holm, paired_frames_test


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> non-decreasing: 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    out = holm([0.01, np.nan, 0.02])  # NaN stays NaN and is not counted: m = 2
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert holm([]).shape == (0,)


def test_holm_controls_the_family_wise_error_under_the_null():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(4000, 27))  # 27 true null hypotheses per table, as in 03
    raw = (p < 0.05).any(axis=1).mean()
    corrected = (np.apply_along_axis(holm, 1, p) < 0.05).any(axis=1).mean()
    assert raw > 0.7 and corrected <= 0.06


def test_paired_interval_matches_the_t_interval():
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"user": np.arange(50), "recall@20": rng.uniform(size=50)})
    b = pd.DataFrame({"user": np.arange(50)[::-1], "recall@20": rng.uniform(size=50)})  # matched by user, any order
    out = paired_frames_test(a, b)
    m = a.merge(b, on="user", suffixes=("_a", "_b"))
    ci = stats.ttest_rel(m["recall@20_b"], m["recall@20_a"]).confidence_interval(0.95)
    assert out["ci_low"] == pytest.approx(ci.low) and out["ci_high"] == pytest.approx(ci.high)
    assert out["ci_low"] < out["mean_diff"] < out["ci_high"]


def test_hit_position_summary_splits_hits_and_dcg_by_rank():
    from motor.analysis import hit_position_summary
    from motor.findings import describe_hit_positions

    rows = []
    for kind, hits in (("id", [1.0, 0, 0, 0]), ("ms", [0.5, 0, 0, 1.0])):  # ms: half a hit moved from rank 1 to 4
        for bucket, scale in (("all", 1.0), ("0-5", 0.25), (">50", 0.75)):
            rows += [{"item_repr": kind, "bucket": bucket, "position": p, "hits": h * scale}
                     for p, h in enumerate(hits)]
    s = hit_position_summary(pd.DataFrame(rows), split_at=2).set_index(["item_repr", "bucket"])
    assert s.loc[("id", "all"), "hits 1-2"] == 1.0 and s.loc[("ms", "all"), "hits 3-4"] == 1.0
    assert s.loc[("ms", "all"), "dcg"] == pytest.approx(0.5 + 1 / np.log2(5))
    text = describe_hit_positions(s.reset_index())
    assert "-0.5000 hits per user at ranks 1-2" in text and "+1.0000 at ranks 3-4" in text


def test_tie_table_and_its_sentence():
    from motor.analysis import tie_table
    from motor.findings import describe_ties

    base = {"dataset": "d", "backbone": "bpr", "eval_split": "test", "bucket": "all"}
    rows = [
        {**base, "run_id": "a", "item_repr": "id", "ties": "expected", "metric": "tie_share", "k": 20, "value": 0.0},
        {**base, "run_id": "b", "item_repr": "ms", "ties": "expected", "metric": "tie_share", "k": 20, "value": 0.3},
        {**base, "run_id": "b", "item_repr": "ms", "ties": "expected", "metric": "params_shared_code_fraction",
         "k": None, "value": 0.4, "eval_split": "-"},
        {**base, "run_id": "c", "item_repr": "ms", "ties": "first", "metric": "recall", "k": 20, "value": 0.2},
    ]
    t = tie_table(pd.DataFrame(rows)).set_index("item_repr")
    assert t.loc["ms", "runs"] == 2 and t.loc["ms", "tie_aware"] == 1
    assert t.loc["ms", "tie_share@20"] == pytest.approx(0.3) and t.loc["ms", "shared_code_fraction"] == 0.4
    text = describe_ties(t.reset_index())
    assert text.startswith("2 of 3 runs") and "1 were saved before" in text and "bpr-ms (30.0 %)" in text
