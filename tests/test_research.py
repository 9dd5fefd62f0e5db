"""Issue 14's research tools: trainer settings per backbone, the cold-candidate protocol, token collisions and the
collision-free tokenizer option, training diagnostics, the sparsity sweep."""
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

from motor import train as train_mod
from motor.backbones import MGCN, LightGCN, SLMRec
from motor.data import from_interactions
from motor.evaluate import cold_candidates, evaluate, evaluate_cold_candidates
from motor.experiment import RunConfig, get_dataset, run
from motor.item_repr import build_item_repr
from motor.synthetic import synthetic
from motor.tokenizer import tokenize
from motor.train import TrainConfig, scheduled_lr, trainer_settings


@pytest.fixture(scope="module")
def small_synth():
    return synthetic(n_users=300, n_items=200, n_interactions=3000, seed=1)

# ------------------------------------------------------------------------------------------ trainer settings


def test_backbones_declare_their_mmrec_trainer_settings():
    assert trainer_settings(SLMRec) == {"weight_decay": 1e-4, "lr_schedule": None}
    assert trainer_settings(MGCN) == {"weight_decay": 0.0, "lr_schedule": (0.96, 50.0)}
    assert trainer_settings(LightGCN) == {"weight_decay": 0.0, "lr_schedule": None}
    # explicit values win; a factor of 1 is the constant rate
    assert trainer_settings(SLMRec, weight_decay=0.0)["weight_decay"] == 0.0
    assert trainer_settings(MGCN, lr_schedule=(1.0, 50))["lr_schedule"] is None
    assert trainer_settings(LightGCN, 1e-3, [0.5, 10]) == {"weight_decay": 1e-3, "lr_schedule": (0.5, 10.0)}
    for bad in ((0.0, 50), (1.5, 50), (0.9, 0), (0.9,)):
        with pytest.raises(ValueError, match="lr_schedule"):
            trainer_settings(None, lr_schedule=bad)
    with pytest.raises(ValueError, match="weight_decay"):
        trainer_settings(None, weight_decay=-1)


def test_scheduled_lr_is_mmrecs_lambda():
    # MMRec: LambdaLR(lambda e: factor ** (e / epochs)), stepped after every epoch -> epoch e trains with this lr
    assert scheduled_lr(1e-3, None, 123) == 1e-3
    assert scheduled_lr(1e-3, (0.96, 50), 0) == 1e-3
    assert scheduled_lr(1e-3, (0.96, 50), 50) == pytest.approx(0.96e-3)
    assert scheduled_lr(1e-3, (0.96, 50), 25) == pytest.approx(1e-3 * 0.96 ** 0.5)


def _capture_optimizer(monkeypatch):
    made = []
    real = train_mod.make_optimizer

    def spy(*a, **kw):
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(train_mod, "make_optimizer", spy)
    return made


def test_trainer_applies_backbone_defaults_and_explicit_settings(small_synth, monkeypatch):
    made = _capture_optimizer(monkeypatch)
    rep = build_item_repr("id", small_synth.n_items, 16)
    model = SLMRec(small_synth, rep, dim=16, n_layers=1)
    res = train_mod.train(model, small_synth, TrainConfig(epochs=1, progress=False))
    assert made[-1].param_groups[0]["weight_decay"] == 1e-4
    assert res.extra["trainer"]["weight_decay"] == 1e-4
    # an explicit schedule reaches the optimizer epoch by epoch (history records the rate each epoch used)
    rep = build_item_repr("id", small_synth.n_items, 16)
    model = LightGCN(small_synth, rep, dim=16)
    res = train_mod.train(model, small_synth, TrainConfig(epochs=3, progress=False, patience=10,
                                                          lr_schedule=(0.5, 1), weight_decay=0.0))
    assert made[-1].param_groups[0]["weight_decay"] == 0.0
    np.testing.assert_allclose(res.history["lr"], [1e-3, 5e-4, 2.5e-4])
    res = train_mod.train(model, small_synth, TrainConfig(epochs=1, progress=False))
    assert "lr" not in res.history  # no schedule: the history keeps its columns


def test_run_ids_of_existing_runs_are_unchanged_and_new_settings_change_them():
    # ids from the committed registry (made before keep / weight_decay / lr_schedule existed)
    assert RunConfig(dataset="scientific", backbone="lightgcn", item_repr="id", seed=0).run_id() == \
        "scientific-random-lightgcn-id-all-D4-s0-190929e1"
    # cold_item runs saved before strict cold start fitted the tokenizer on all items: that setting keeps their id
    assert RunConfig(dataset="scientific", split="cold_item", backbone="lightgcn", item_repr="ms",
                     tokenizer_items="all").run_id() == "scientific-cold_item-lightgcn-ms-all-D4-s0-d5dda232"
    assert RunConfig(dataset="scientific", split="cold_item", backbone="lightgcn", item_repr="ms").run_id() != \
        "scientific-cold_item-lightgcn-ms-all-D4-s0-d5dda232"
    assert RunConfig(dataset="ml100k", backbone="bm3", item_repr="id").run_id() == \
        "ml100k-random-bm3-id-all-D4-s0-15dd0924"
    # SLMRec and MGCN trained with weight decay 0 / a constant rate: those are their old ids, the defaults are new
    assert RunConfig(dataset="scientific", backbone="slmrec", item_repr="id", weight_decay=0.0).run_id() == \
        "scientific-random-slmrec-id-all-D4-s0-c9701dc8"
    assert RunConfig(dataset="scientific", backbone="mgcn", item_repr="id", lr_schedule=[1.0, 50]).run_id() == \
        "scientific-random-mgcn-id-all-D4-s0-fa67d46a"
    assert RunConfig(dataset="scientific", backbone="slmrec", item_repr="id").run_id() != \
        "scientific-random-slmrec-id-all-D4-s0-c9701dc8"
    assert RunConfig(dataset="scientific", backbone="mgcn", item_repr="id").run_id() != \
        "scientific-random-mgcn-id-all-D4-s0-fa67d46a"
    # the backbone's own value given explicitly is the same run
    assert RunConfig(backbone="slmrec", weight_decay=1e-4).run_id() == RunConfig(backbone="slmrec").run_id()
    # keep: 1.0 is the old id, another share is a new dataset
    sparse = RunConfig(keep=0.4).run_id()
    assert sparse != RunConfig().run_id() and sparse.startswith("scientific@keep0.4-random-")


def test_variant_names_new_settings():
    from motor.runs import variant_of

    assert variant_of({"keep": 1.0, "weight_decay": None, "lr_schedule": None}) == ""
    assert variant_of({"keep": 0.4}) == "keep=0.4"
    assert variant_of({"weight_decay": 0.0, "lr_schedule": [0.5, 10]}) == "weight_decay=0.0,lr_schedule=[0.5, 10]"


def test_run_records_effective_trainer_settings_and_sparsified_data():
    r = run(dataset="synthetic", backbone="lightgcn", item_repr="id", epochs=1, keep=0.5,
                             lr_schedule=[0.5, 1], progress=False, save=False)
    assert r.config["trainer"] == {"weight_decay": 0.0, "lr_schedule": [0.5, 1.0]}
    full = get_dataset("synthetic")
    half = get_dataset("synthetic", keep=0.5)
    n_full, n_half = full.all_interactions().nnz, half.all_interactions().nnz
    assert r.config["dataset_summary"]["interactions"] == n_half and 0.45 < n_half / n_full < 0.6


# ------------------------------------------------------------------------------------------ cold candidates


class _FixedScores(torch.nn.Module):
    """A 'model' with a fixed user x item score matrix (the evaluation contract: evaluating() and score())."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    @contextmanager
    def evaluating(self):
        yield self

    def score(self, users):
        return self.scores[users]


def _cold_example():
    # items 0-2 warm; 3 and 4 are cold test items, 5 a cold valid item (not a test candidate)
    rows = [(0, 0, 0), (0, 2, 0), (1, 1, 0), (1, 2, 0), (2, 0, 0), (2, 2, 0),
            (0, 3, 2), (0, 1, 2), (1, 4, 2), (2, 1, 2), (0, 5, 1)]
    u, i, lab = zip(*rows)
    ds = from_interactions("cold", u, i, lab, 3, 6)
    scores = [[9, 8, 7, 1, 5, 3],  # user 0: candidates 4 (5) > 3 (1); held-out candidate 3 at rank 2
              [0, 9, 0, 2, 6, 8],  # user 1: 4 (6) > 3 (2); held-out candidate 4 at rank 1 (item 5 is no candidate)
              [1, 9, 1, 2, 3, 4]]  # user 2: no cold test item -> not evaluated
    return ds, _FixedScores(scores)


def test_cold_candidate_protocol_hand_computed():
    ds, model = _cold_example()
    assert cold_candidates(ds, "test").tolist() == [3, 4]
    res = evaluate_cold_candidates(model, ds, "test", ks=(1, 3))
    assert res.per_user.user.tolist() == [0, 1]
    assert res.per_user["recall@1"].tolist() == [0.0, 1.0]
    assert res.per_user["recall@3"].tolist() == [1.0, 1.0]  # k > 2 candidates: the list is padded
    assert res.per_user["ndcg@3"].tolist() == pytest.approx([1 / np.log2(3), 1.0])
    assert res.metrics == pytest.approx({"recall@1": 0.5, "ndcg@1": 0.5, "recall@3": 1.0,
                                         "ndcg@3": (1 / np.log2(3) + 1) / 2, "n_users": 2, "n_candidates": 2})
    # the all-items protocol ranks the cold items among every item: user 0's item 3 (score 1) is last of the
    # 4 unmasked items, user 1's item 4 (score 6) second after item 5 (score 8)
    allitems = evaluate(model, ds, "test", ks=(1, 3), buckets=(1,))
    cold_row = allitems.buckets.set_index("bucket").loc["cold (0)"]
    assert cold_row["recall@3"] == pytest.approx(0.5)


def test_cold_candidates_mask_train_items_and_handle_no_candidates():
    ds, model = _cold_example()
    # as candidates, a user's train items are excluded: user 0's train item 2 (score 7) cannot take rank 1
    res = evaluate_cold_candidates(model, ds, "test", ks=(1,), candidates=np.array([1, 2, 3, 4]))
    assert res.per_user.set_index("user").loc[0, "recall@1"] == 0.5  # item 1 (8) ranks first, held out
    assert res.per_user.set_index("user").loc[2, "recall@1"] == 1.0  # user 2: train items 0, 2 masked
    res = evaluate_cold_candidates(model, ds, "valid", ks=(1,), candidates=np.array([], dtype=np.int64))
    assert res.metrics["n_users"] == 0 and np.isnan(res.metrics["recall@1"])


def test_cold_item_runs_store_both_protocols():
    r = run(dataset="synthetic", split="cold_item", backbone="bpr", item_repr="ms", n_tokens=2,
                             epochs=1, progress=False, save=False)
    assert {"cold_candidates_recall@20", "cold_candidates_ndcg@10", "cold_candidates_n_candidates"} <= set(r.test)
    assert r.test["cold_candidates_n_users"] > 0
    warm = run(dataset="synthetic", backbone="bpr", item_repr="id", epochs=1, progress=False,
                                save=False)
    assert not any(k.startswith("cold_candidates") for k in warm.test)


# ------------------------------------------------------------------------------------------ token collisions


def _hand_tokens():
    # image: items 0 and 2 share (1, 2); items 1, 3, 4 share (5, 5); item 5 unique -> 5 of 6 collide
    # text: items 0 and 2 share (7, 7), the rest unique -> 2 of 6; all modalities: only items 0 and 2 -> 2 of 6
    image = np.array([[1, 2], [5, 5], [1, 2], [5, 5], [5, 5], [0, 3]])
    text = np.array([[7, 7], [1, 0], [7, 7], [2, 0], [3, 0], [4, 0]])
    return {"image": image, "text": text}


def test_collision_share_hand_example():
    from motor.tokenizer import collision_share, token_stats, token_summary

    share = collision_share(_hand_tokens())
    assert share == pytest.approx({"image": 5 / 6, "text": 2 / 6, "all": 2 / 6})
    summary = token_summary(_hand_tokens(), n_centroids=8)
    assert summary.loc["image", "largest_group"] == 3 and summary.loc["all", "positions"] == 4
    assert summary.loc["text", "colliding_items"] == 2
    assert summary.loc["image", "same_id_every_position"] == pytest.approx(3 / 6)
    stats = token_stats(_hand_tokens(), 8)
    assert stats.groupby("modality").collision_share.first().to_dict() == pytest.approx(
        {"image": 5 / 6, "text": 2 / 6})


def test_disambiguated_codes_are_unique_and_number_groups():
    from motor.tokenizer import collision_share, disambiguate_codes

    ids = _hand_tokens()["image"]
    out = disambiguate_codes(ids, 8)
    np.testing.assert_array_equal(out[:, :2], ids)  # the OPQ codes are kept
    assert out[:, 2].tolist() == [0, 0, 1, 1, 2, 0]  # the k-th item of a group (item order) gets k - 1
    assert len(np.unique(out, axis=0)) == len(out)
    assert collision_share({"image": out})["image"] == 0.0
    with pytest.raises(ValueError, match="share one token code"):
        disambiguate_codes(ids, 2)  # a group of 3 does not fit K = 2
    rng = np.random.default_rng(0)
    many = rng.integers(0, 3, size=(500, 2))  # 9 codes for 500 items: big groups
    out = disambiguate_codes(many, 256)
    assert len(np.unique(out, axis=0)) == 500 and out[:, 2].max() + 1 == np.unique(many, axis=0,
                                                                                  return_counts=True)[1].max()


def test_tokenize_disambiguate_feeds_the_token_representation(small_synth):
    from motor.tokenizer import collision_share, n_centroids_of

    # few centroids: many collisions on the synthetic set
    plain = tokenize(small_synth, 2, n_centroids=32)
    dis = tokenize(small_synth, 2, n_centroids=32, disambiguate=True)
    assert collision_share(plain)["text"] > 0.2
    assert all(v == 0.0 for v in collision_share(dis).values())
    for m in plain:
        np.testing.assert_array_equal(dis[m][:, :2], plain[m])
        assert dis[m].shape == (small_synth.n_items, 3)
    k = n_centroids_of(dis)
    rep = build_item_repr("ms", small_synth.n_items, 8, token_ids=dis, n_centroids=k)
    assert rep.widths == [3, 3]
    with torch.no_grad():
        vec = rep().numpy()
    assert len(np.unique(vec.round(6), axis=0)) == small_synth.n_items  # distinct codes -> distinct vectors


# ------------------------------------------------------------------------------------------ training diagnostics


def test_item_vector_spread_against_naive_pairs():
    from motor.diagnostics import item_vector_spread

    v = np.random.default_rng(0).normal(size=(40, 5)) + 0.3
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = unit @ unit.T
    naive = cos[~np.eye(40, dtype=bool)].mean()
    assert item_vector_spread(v) == pytest.approx(naive, abs=1e-12)
    collapsed = np.outer(np.arange(1, 11), [1.0, 2.0, -1.0])  # one direction, different lengths
    assert item_vector_spread(collapsed) == pytest.approx(1.0)
    assert item_vector_spread(np.array([[1.0, 0], [-1.0, 0]])) == pytest.approx(-1.0)


def test_diagnostic_callbacks_fill_the_history(small_synth):
    from motor.diagnostics import item_vector_spread, model_item_vectors, spread_callback, train_recall_callback
    from motor.evaluate import metrics_from_topk

    model = LightGCN(small_synth, build_item_repr("id", small_synth.n_items, 16), dim=16)
    cbs = [spread_callback(model), train_recall_callback(model, small_synth, k=10, n_users=50)]
    res = train_mod.train(model, small_synth, TrainConfig(epochs=2, progress=False), callbacks=cbs)
    for col in ("item_cosine_final", "item_cosine_repr", "train_recall@10"):
        assert res.history[col].notna().all()
    # the definition, checked on the trained weights against a naive top-k
    value = train_recall_callback(model, small_synth, k=10, n_users=50)
    rec = {}
    value(0, rec)
    u, i = (x.detach().numpy() for x in model.embeddings())
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(np.flatnonzero(np.diff(small_synth.train.indptr) > 0), 50, replace=False))
    top = np.argsort(-(u[users] @ i.T), axis=1, kind="stable")[:, :10]
    naive = metrics_from_topk(top, small_synth.train, users, (10,))["recall@10"].mean()
    assert rec["train_recall@10"] == pytest.approx(naive)
    assert item_vector_spread(model) == pytest.approx(item_vector_spread(model_item_vectors(model)))


def test_mgcn_gate_stats(small_synth):
    from motor.backbones.features import project
    from motor.diagnostics import mgcn_gate_stats

    torch.manual_seed(0)
    model = MGCN(small_synth, build_item_repr("id", small_synth.n_items, 16), dim=16)
    st = mgcn_gate_stats(model)
    mods = sorted(small_synth.features)
    assert set(st[st.what == "purifier"].modality) == set(mods)
    assert st[st.what == "beta"]["mean"].sum() == pytest.approx(1.0)  # attention weights sum to 1 per row
    m = mods[0]
    with torch.no_grad():
        gate = model.purifier_gates[m](project(model.projections[m], getattr(model, f"features_{m}")))
    row = st[(st.what == "purifier") & (st.modality == m)].iloc[0]
    assert row["mean"] == pytest.approx(float(gate.mean()), rel=1e-5)
    assert row["share_above_0.9"] == pytest.approx(float((gate > 0.9).float().mean()))
    norms = st[st.what == "norm"].set_index("modality")["mean"]
    assert norms["item_repr"] == pytest.approx(float(model.item_repr().detach().norm(dim=1).mean()), rel=1e-5)


# ------------------------------------------------------------------------------------------ sparsity sweep


def test_sparsity_sweep_summary_crossover_and_figure():
    from motor.analysis import sparsity_crossover, sparsity_summary
    from motor.plots import sparsity_figure
    from motor.studies import sparsity_sweep

    sweep = sparsity_sweep("synthetic", backbones=("bpr",), keeps=(1.0, 0.5), seeds=(0, 1), epochs=1, n_tokens=2)
    assert len(sweep) == 4 and set(sweep.keep) == {1.0, 0.5}
    dense, sparse = (sweep[sweep.keep == k].iloc[0] for k in (1.0, 0.5))
    assert sparse.per_user < dense.per_user and sparse.interactions < dense.interactions
    assert sweep["improvement_%"].to_numpy() == pytest.approx(100 * (sweep.ms / sweep.id - 1))
    summary = sparsity_summary(sweep)
    assert len(summary) == 2 and (summary.seeds == 2).all() and summary.t_pvalue.between(0, 1).all()
    fig = sparsity_figure(summary)
    assert len(fig.data) == 2 and fig.layout.xaxis.type == "log"
    sparsity_crossover(summary)  # runs on real output; the interpolation is checked on a hand example below


def test_sparsity_crossover_hand_example():
    from motor.analysis import sparsity_crossover

    summary = pd.DataFrame({
        "backbone": ["a"] * 3 + ["b"] * 2,
        "per_user": [2.0, 4.0, 8.0, 2.0, 8.0], "per_item": [1.0, 2.0, 4.0, 1.0, 4.0],
        "improvement_%": [30.0, 10.0, -10.0, 5.0, np.nan], "mean_diff": [0.03, 0.01, -0.01, 0.005, 0.002]})
    out = sparsity_crossover(summary).set_index("backbone")
    # a: +10 at 4, -10 at 8 -> zero half-way in log scale: sqrt(4 * 8)
    assert out.loc["a", "crossover_per_user"] == pytest.approx(np.sqrt(32))
    assert out.loc["a", "crossover_per_item"] == pytest.approx(np.sqrt(8))
    assert "ahead at the sparsest" in out.loc["a", "statement"]
    assert np.isnan(out.loc["b", "crossover_per_user"]) and "ahead of ID at every density" in out.loc["b", "statement"]
    # the sign comes from the difference: an ID run at 0 (no ratio) still counts as a gain for MOTOR
    summary.loc[4, "mean_diff"] = -0.002
    out = sparsity_crossover(summary).set_index("backbone")
    assert out.loc["b", "crossover_per_user"] == pytest.approx(np.exp(np.log(2) + 5 / 7 * np.log(4)))
    assert "-0.0020 (baseline 0)" in out.loc["b", "statement"]


def test_bm3_uniformity_option(small_synth):
    from motor.backbones.bm3 import BM3, uniformity_loss

    x = torch.randn(30, 6, dtype=torch.float64)
    z = torch.nn.functional.normalize(x, dim=1)
    naive = torch.log(torch.exp(-2.0 * torch.pdist(z) ** 2).mean())  # each pair once: the same mean
    assert float(uniformity_loss(x)) == pytest.approx(float(naive))
    assert float(uniformity_loss(torch.ones(5, 3))) == pytest.approx(0.0, abs=1e-6)  # collapsed: the maximum
    users, pos = torch.tensor([0, 1, 2, 2]), torch.tensor([3, 4, 5, 5])
    losses = []
    for w in (0.0, 0.5):
        torch.manual_seed(0)
        model = BM3(small_synth, build_item_repr("id", small_synth.n_items, 16), dim=16, uniformity=w)
        torch.manual_seed(1)
        losses.append(model.loss(users, pos))
    # the default is BM3's objective; the option adds its term (negative: log of a mean below 1)
    torch.manual_seed(0)
    faithful = BM3(small_synth, build_item_repr("id", small_synth.n_items, 16), dim=16)
    torch.manual_seed(1)
    assert float(faithful.loss(users, pos)) == float(losses[0])
    assert float(losses[1]) < float(losses[0])
    losses[1].backward()


def test_cold_start_protocols_table_remakes_runs_saved_without_them():
    import json

    from motor import runs
    from motor.findings import describe_cold_protocols
    from motor.studies import cold_start_protocols

    kw = dict(epochs=1, n_tokens=2)
    first = run(dataset="synthetic", split="cold_item", backbone="bpr", item_repr="id", seed=0, progress=False, **kw)
    meta = runs.run_path(first.run_id) / "metrics.json"
    saved = json.loads(meta.read_text())
    saved["test"] = {k: v for k, v in saved["test"].items() if not k.startswith("cold_candidates")}
    meta.write_text(json.dumps(saved))  # as a run saved before the protocol existed
    table = cold_start_protocols("synthetic", "bpr", ["id", "ms"], [0], **kw)
    assert list(table.index) == ["id", "ms"] and (table.seeds == 1).all()
    assert table.loc["id", "cold candidates · Recall@20"] == pytest.approx(first.test["cold_candidates_recall@20"])
    n = table.candidates.iloc[0]
    assert n > 0 and table["random · Recall@20"].iloc[0] == pytest.approx(min(20, n) / n)
    assert "cold_candidates_recall@20" in runs.read(first.run_id)["test"]  # re-made
    assert "random ranking" in describe_cold_protocols(table)


def test_compare_collisions_table(small_synth):
    from motor.tokenizer import compare_collisions

    t = compare_collisions(small_synth, 2, n_centroids=32)
    assert (t.loc["OPQ + disambiguation", "collision_share"] == 0).all()
    assert t.loc["OPQ", "collision_share"]["text"] > 0
    assert t.loc[("OPQ", "text"), "positions"] == 2 and t.loc[("OPQ + disambiguation", "text"), "positions"] == 3
    assert t.loc[("OPQ", "text"), "distortion"] == t.loc[("OPQ + disambiguation", "text"), "distortion"]
