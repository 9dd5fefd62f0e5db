"""The notebooks' studies (motor.studies): tables against naive computations, sentences against their inputs, and
the run loops end to end on the synthetic dataset (1 epoch)."""
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from motor import analysis, findings, neighbours, studies


def fake_run(item_repr, seed, buckets, test=None):
    return SimpleNamespace(config={"item_repr": item_repr, "seed": seed}, buckets=pd.DataFrame(buckets),
                           test=test or {})


def bucket_rows(scale):
    return [{"bucket": "0-5", "n_items": 10, "n_heldout": 4, "recall@20": 0.1 * scale, "ndcg@20": 0.05 * scale},
            {"bucket": ">50", "n_items": 2, "n_heldout": 9, "recall@20": 0.6 * scale, "ndcg@20": 0.3 * scale},
            {"bucket": "cold (0)", "n_items": 3, "n_heldout": 1, "recall@20": 0.01 * scale, "ndcg@20": 0.0}]


def test_bucket_means_averages_seeds_and_puts_cold_first():
    results = [fake_run("id", 0, bucket_rows(1.0)), fake_run("id", 1, bucket_rows(2.0)),
               fake_run("ms", 0, bucket_rows(3.0))]
    out = analysis.bucket_means(results)
    assert out.bucket.tolist() == ["cold (0)", "cold (0)", "0-5", "0-5", ">50", ">50"]
    assert out.item_repr.tolist() == ["id", "ms"] * 3
    row = out[(out.bucket == ">50") & (out.item_repr == "id")].iloc[0]
    assert row["recall@20"] == pytest.approx((0.6 + 1.2) / 2) and row["seeds"] == 2
    assert out[(out.bucket == "0-5") & (out.item_repr == "ms")]["ndcg@20"].item() == pytest.approx(0.15)


def test_test_means_and_mean_std_match_numpy():
    results = [fake_run("id", s, bucket_rows(1), {"recall@10": r, "recall@20": r * 2, "ndcg@10": r / 2,
                                                  "ndcg@20": r, "cold_candidates_recall@20": r / 3})
               for s, r in enumerate([0.1, 0.3, 0.35])]
    out = analysis.test_means(results)
    vals = np.array([0.1, 0.3, 0.35])
    assert out.loc["id", ("recall@20", "mean")] == pytest.approx((2 * vals).mean())
    assert out.loc["id", ("ndcg@20", "std")] == pytest.approx(vals.std(ddof=1))
    assert out.loc["id", ("cold_candidates_recall@20", "mean")] == pytest.approx((vals / 3).mean())
    assert out.loc["id", ("seeds", "n")] == 3


def test_ablation_variants_per_modality():
    two = studies.ablation_variants(["image", "text"])
    assert list(two) == ["original (ID)", "image tokens only", "text tokens only", "mean of tokens", "linear",
                         "TCN modal-specific", "TCN modal-agnostic"]
    assert two["text tokens only"] == {"item_repr": "ms", "modalities": ["text"]}
    assert "text tokens only" not in studies.ablation_variants(["text"])  # one modality: no "only" rows


def test_project_2d_pca_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    xy = neighbours.project_2d({"a": x}, "pca")["a"]
    w, v = np.linalg.eigh(np.cov((x - x.mean(0)).T))
    naive = (x - x.mean(0)) @ v[:, ::-1][:, :2]
    assert np.allclose(np.abs(xy), np.abs(naive))  # axes are defined up to sign
    with pytest.raises(ValueError, match="unknown projection"):
        neighbours.project_2d({"a": x}, "tsne")


def test_shared_tokens_by_neighbours_matches_loops():
    rng = np.random.default_rng(1)
    ids = {"image": rng.integers(0, 3, size=(30, 2)), "text": rng.integers(0, 4, size=(30, 3))}
    vec = {"V": rng.normal(size=(30, 4))}
    out = neighbours.shared_tokens_by_neighbours(ids, vec, top=3)
    codes = np.concatenate([ids["image"], ids["text"]], axis=1)
    unit = vec["V"] / np.linalg.norm(vec["V"], axis=1, keepdims=True)
    total = 0
    for i in range(30):
        sims = [(unit[i] @ unit[j], j) for j in range(30) if j != i]
        for _, j in sorted(sims, reverse=True)[:3]:
            total += (codes[i] == codes[j]).sum()
    assert out.loc["3 nearest by V vector", "mean_shared_tokens"] == pytest.approx(total / 90)
    pairs = [(codes[i] == codes[j]).sum() for i in range(30) for j in range(30) if i != j]
    assert out.loc["a random other item", "mean_shared_tokens"] == pytest.approx(np.mean(pairs))
    assert (out.of_positions == 5).all()


def test_case_study_rows_follow_shared_token_neighbours(small_synth):
    from motor.neighbours import shared_token_neighbours

    ids = {"text": np.random.default_rng(2).integers(0, 5, size=(small_synth.n_items, 3))}
    cs = neighbours.case_study(small_synth, ids, n_queries=2, seed=3, top=4)
    assert len(cs) == 2 * 5 and cs.groupby("query").size().eq(5).all()
    q = cs["query"].iloc[0]
    expect = shared_token_neighbours(ids, int(q), top=4)
    got = cs[(cs["query"] == q) & (cs["item"] != q)]
    assert got["item"].tolist() == expect["item"].tolist() and got["shared"].tolist() == expect["shared"].tolist()


def registry_rows():
    """A tidy registry (as runs.load()) for two backbones x {id, ms} x two seeds."""
    rows = []
    vals = {("bpr", "id"): [0.20, 0.22], ("bpr", "ms"): [0.25, 0.27], ("lightgcn", "id"): [0.30, 0.32],
            ("lightgcn", "ms"): [0.28, 0.30]}
    for (bb, k), v in vals.items():
        for seed, x in enumerate(v):
            for metric, val in (("recall", x), ("ndcg", x / 2)):
                rows.append({"run_id": f"{bb}-{k}-{seed}", "dataset": "d", "backbone": bb, "item_repr": k,
                             "seed": seed, "metric": metric, "k": 20, "eval_split": "test", "bucket": "all",
                             "value": val})
    return pd.DataFrame(rows)


def test_comparison_tables_pivot_and_bold_best():
    tables = analysis.comparison_tables(registry_rows())
    imp = analysis.improvement_pivot(tables["recall"])
    assert imp.loc["bpr", "ms vs id (%)"] == pytest.approx(round(100 * (0.26 / 0.21 - 1), 1))
    assert imp.loc["lightgcn", "ms vs id (%)"] == pytest.approx(round(100 * (0.29 / 0.31 - 1), 1))
    wide = analysis.comparison_wide(tables)
    assert wide.loc[("d", "bpr"), ("RECALL@20", "ms")].startswith("0.2600 ± ")
    style = analysis.bold_best(wide).to_html().split("</style>")[0]
    bold = set(re.findall(r"_row(\d+)_col(\d+)", style))
    assert bold == {("1", str(c)) for c in range(4)}  # lightgcn's row holds every column's best mean


def test_describe_comparison_counts_wins_and_significance():
    recall = analysis.comparison_tables(registry_rows())["recall"]
    sig = pd.DataFrame({"item_repr": ["ms"] * 4, "t_pvalue": [0.01, 0.2, 0.03, 0.5],
                        "mean_diff": [0.05, 0.05, -0.02, -0.02]})
    text = findings.describe_comparison(recall, sig)
    assert "on 1 of 2 backbones (bpr)" in text
    assert "1 of 4 (backbone, seed) pairs significantly better, 1 significantly worse" in text
    assert text._repr_markdown_() == str(text)


def test_describe_buckets_and_ablation_and_budget():
    warm = analysis.bucket_means([fake_run("id", 0, bucket_rows(1.0)),
                                 fake_run("ms", 0, [dict(r, **{"recall@20": r["recall@20"] * (2 if r["bucket"] == "0-5"
                                                                                              else 0.5)})
                                                    for r in bucket_rows(1.0)])])
    text = findings.describe_buckets(warm, warm)
    assert "ahead in buckets 0-5; behind in >50" in text and "id 0.0100, ms 0.0050" in text
    abl = analysis.mean_std(pd.DataFrame({"variant": ["original (ID)", "linear", "linear"],
                                         "recall@20": [0.2, 0.4, 0.1]}), "variant", ["recall@20"])
    assert findings.describe_ablation(abl) == ("Test recall@20, best first: linear 0.2500 (+25.0 % vs ID); "
                                              "original (ID) 0.2000.")
    budget = pd.DataFrame({"label": ["ID", "D=2", "D=4"], "recall": [0.2, 0.25, 0.24],
                           "item_params / ID table": [1.0, 0.5, 1.1]})
    text = findings.describe_budget(budget)
    assert "Highest test Recall@20: D=2." in text and "D=4: item side 1.10× the ID table" in text


def test_describe_tokens_reads_every_table():
    stats = pd.DataFrame({"modality": ["text", "text"], "tokens_used": [200, 220], "K": [256, 256],
                          "entropy_bits": [7.0, 7.5], "max_entropy_bits": [8.0, 8.0], "items_per_token_max": [9, 12]})
    repeats = pd.DataFrame({"a": {"text": 0.25}, "b": {"text": 0.0}})
    dist = pd.DataFrame({"D": [2, 8], "modality": ["text", "text"], "distortion": [0.6, 0.3],
                         "collision_share_all_modalities": [0.4, 0.0]}).set_index(["D", "modality"])
    text = findings.describe_tokens(stats, repeats, dist)
    assert "text tokens use 210 of 256 ids" in text and "busiest id holds 12 items" in text
    assert "text 25.0 % with a and 0.0 % with b" in text and "0.600 → 0.300" in text and "from 40.0 % to 0.0 %" in text


# ------------------------------------------------------------------------------------- run loops (synthetic data)


def test_studies_train_once_then_read_the_registry(monkeypatch):
    kw = dict(epochs=1)
    budget = studies.token_budget("synthetic", "bpr", [2], [0], **kw)
    assert budget.label.tolist() == ["ID", "D=2"] and budget["item_params / ID table"].iloc[0] == 1.0
    assert 0 <= budget.recall.min() <= budget.recall.max() <= 1
    vec = studies.item_vectors("synthetic", "bpr", 0, n_tokens=2, **kw)
    assert set(vec) == {"ID", "MOTOR"} and vec["ID"].shape == vec["MOTOR"].shape
    runs_ = studies.seed_runs("synthetic", "bpr", ["id", "ms"], [0], n_tokens=2, **kw)
    assert [r.config["item_repr"] for r in runs_] == ["id", "ms"]

    import motor.experiment

    def no_training(*a, **k):
        raise AssertionError("trained although the registry has the run")

    monkeypatch.setattr(motor.experiment, "train", no_training)
    again = studies.token_budget("synthetic", "bpr", [2], [0], **kw)
    pd.testing.assert_frame_equal(again, budget)
    assert np.array_equal(studies.item_vectors("synthetic", "bpr", 0, n_tokens=2, **kw)["MOTOR"], vec["MOTOR"])
    df, missing = studies.compare_runs("synthetic", ["bpr"], ["id"], [0, 5], train_missing=False, n_tokens=2, **kw)
    assert df.run_id.nunique() == 1 and len(missing) == 1 and "-s5-" in missing[0]


def test_ablation_table_has_every_variant():
    abl = studies.ablation_table("synthetic", "bpr", [0], epochs=1, n_tokens=2)
    assert list(abl.index) == list(studies.ablation_variants(["image", "text"]))
    assert abl[("recall@20", "mean")].between(0, 1).all() and (abl[("seeds", "n")] == 1).all()
