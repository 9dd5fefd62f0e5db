"""The second tokenizer family, residual k-means (``method="rq"``): the same contract and checks as OPQ."""
import numpy as np
import pytest

from motor.tokenizer import (
    TOKENIZER_METHODS,
    RQTokenizer,
    compare_tokenizers,
    fit_tokenizer,
    tokenize,
    tokenizer_class,
    tokenizer_from_state,
    tokenizer_state,
)


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(600, 40)) @ rng.normal(size=(40, 40))).astype(np.float32)


def test_codes_are_nearest_centroid_per_residual_stage(feats):
    tok = RQTokenizer(n_tokens=3, n_centroids=32).fit(feats)
    codes = tok.encode(feats)
    assert codes.shape == (600, 3) and codes.dtype == np.int64 and tok.centroids.shape == (3, 32, 40)
    residual = feats.astype(np.float64) @ tok.rotation.T.astype(np.float64)
    for stage in range(3):  # naive: every distance written out, argmin, subtract the chosen centroid
        dist = ((residual[:, None, :] - tok.centroids[stage][None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, stage], dist.argmin(1), err_msg=f"stage {stage}")
        residual = residual - tok.centroids[stage][codes[:, stage]]
    # decoding sums one centroid per stage; with every stage the error is what the last stage left
    np.testing.assert_allclose(tok.decode(codes), feats - residual @ tok.rotation, atol=1e-3)


def test_stages_refine_and_beat_opq_at_the_same_budget(feats):
    errors = [RQTokenizer(n_tokens=d, n_centroids=64).fit(feats).distortion(feats) for d in (1, 2, 4)]
    assert 0 < errors[2] < errors[1] < errors[0] < 1
    opq = TOKENIZER_METHODS["opq"](n_tokens=4, n_centroids=64).fit(feats)
    assert errors[2] < opq.distortion(feats)  # whole-vector stages vs 10-d sub-spaces, same D x K


def test_wide_features_are_projected_and_unseen_items_encoded(feats):
    wide = np.concatenate([feats, feats[:, :20] * 0.01], axis=1)  # 60-d, max_dim 32
    tok = RQTokenizer(n_tokens=2, n_centroids=16, max_dim=32).fit(wide[:500])
    r = tok.rotation
    assert r.shape == (32, 60)
    np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-4)
    new = tok.encode(wide[500:])
    assert new.shape == (100, 2) and new.max() < 16
    assert RQTokenizer(n_tokens=2, n_centroids=64).fit(feats[:40]).k == 32  # K capped by the items as for OPQ


def test_same_seed_same_codes_and_bad_parameters(feats):
    a = RQTokenizer(n_tokens=2, n_centroids=16, seed=3).fit(feats).encode(feats)
    b = RQTokenizer(n_tokens=2, n_centroids=16, seed=3).fit(feats).encode(feats)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="niter"):
        RQTokenizer(niter=0).fit(feats)
    with pytest.raises(ValueError, match="power of two"):
        RQTokenizer(n_centroids=100).fit(feats)
    with pytest.raises(ValueError, match="tokenizer method 'pq2' is unknown"):
        tokenizer_class("pq2")
    with pytest.raises(RuntimeError, match="not fitted"):
        RQTokenizer().encode(feats)


def test_cache_round_trip_and_keys(small_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path))
    x = small_synth.features["text"]
    a = fit_tokenizer(x, method="rq", n_tokens=2, n_centroids=16)
    b = fit_tokenizer(x, method="rq", n_tokens=2, n_centroids=16)  # hit: the state from the file
    assert type(b) is RQTokenizer and b.cache_path == a.cache_path
    assert set(b.state()) == {"rotation", "centroids"} and b.method == "rq"
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(b.cached_token_ids, a.encode(x))
    fresh = RQTokenizer(**a.params()).set_state(a.state())  # params + state + method: the whole tokenizer
    np.testing.assert_array_equal(fresh.encode(x), a.encode(x))
    saved = tokenizer_state(a)  # what a run folder stores (plain arrays)
    assert str(saved["method"]) == "rq" and int(saved["K"]) == 16 and int(saved["D"]) == 2
    restored = tokenizer_from_state(saved)
    assert type(restored) is RQTokenizer
    np.testing.assert_array_equal(restored.encode(x), a.encode(x))
    with pytest.raises(ValueError, match="output rows"):
        RQTokenizer.from_state({"rotation": a.rotation[:-1], "centroids": a.centroids})
    opq = fit_tokenizer(x, n_tokens=2, n_centroids=16)
    assert opq.cache_path != a.cache_path and len(list((tmp_path / "tokens").glob("*.npz"))) == 2
    ids = tokenize(small_synth, 2, n_centroids=16, method="rq")
    again = tokenize(small_synth, 2, n_centroids=16, method="rq", use_cache=False)
    for m in ids:
        np.testing.assert_array_equal(ids[m], again[m])


def test_compare_tokenizers_side_by_side(small_synth):
    table = compare_tokenizers(small_synth, n_tokens=2, n_centroids=16)
    assert list(table.index.get_level_values("method").unique()) == ["opq", "rq"]
    assert {"collision_share", "tokens_used_mean", "entropy_bits_mean", "distortion"} <= set(table.columns)
    assert table.loc[("rq", "text"), "tokens_used_mean"] <= 16
    assert 0 < table.loc[("rq", "text"), "distortion"] < 1 and np.isnan(table.loc[("rq", "all"), "distortion"])


def test_runs_and_is_searchable_by_name():
    from motor.experiment import ConfigError, RunConfig, run
    from motor.tune import plan

    RunConfig(dataset="synthetic", tokenizer={"method": "rq", "niter": 5}).validate()
    assert RunConfig(tokenizer={"method": "opq"}).run_id() == RunConfig().run_id()  # the default family
    assert RunConfig(tokenizer={"method": "rq"}).run_id() != RunConfig().run_id()
    with pytest.raises(ConfigError, match="method"):
        RunConfig(tokenizer={"method": "vq"}).validate()
    with pytest.raises(ConfigError, match="unknown key.*opq_iter"):
        RunConfig(tokenizer={"method": "rq", "opq_iter": 2}).validate()
    trials = plan("synthetic", "bpr", ["ms", "id"], {"tokenizer.method": ["opq", "rq"]}, epochs=1)
    assert [t.config.tokenizer for t in trials if t.item_repr == "ms"] == [{}, {"method": "rq"}]  # opq: default
    assert [t.config.tokenizer for t in trials if t.item_repr == "id"] == [{}]  # ID models have no tokens
    res = run(dataset="synthetic", backbone="bpr", item_repr="ms", n_tokens=2, epochs=1, progress=False,
              tokenizer={"method": "rq"})
    assert np.isfinite(res.valid["recall@20"]) and res.config["tokenizer"] == {"method": "rq"}
    from motor import runs
    from motor.experiment import read_tokenizers, run_tokens

    toks, ids = read_tokenizers(runs.locate(res.run_id))  # the run folder keeps the rq tokenizer and its codes
    assert all(type(t) is RQTokenizer for t in toks.values())
    cfg = RunConfig(dataset="synthetic", backbone="bpr", item_repr="ms", n_tokens=2, epochs=1,
                    tokenizer={"method": "rq"})
    from motor.experiment import get_dataset
    fresh = run_tokens(cfg, get_dataset("synthetic"))
    for m in ids:
        np.testing.assert_array_equal(ids[m], fresh[m])
