import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from motor.tokenizer import (
    PQTokenizer,
    collisions,
    fit_tokenizer,
    items_per_token,
    n_centroids_of,
    same_id_every_position,
    token_stats,
    tokenize,
)


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(600, 40)) @ rng.normal(size=(40, 40))).astype(np.float32)


def test_codes_are_nearest_centroid_argmin(feats):
    tok = PQTokenizer(n_tokens=4, n_centroids=256).fit(feats)  # 8-bit codes: faiss stores one byte per token
    codes = tok.encode(feats)
    xr = feats @ tok.rotation.T
    D, K, ds = tok.centroids.shape
    for p in range(D):
        sub = xr[:, p * ds:(p + 1) * ds]
        dist = ((sub[:, None, :] - tok.centroids[p][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, p], dist.argmin(1))
    # faiss's own PQ on the same centroids assigns the same codes and reconstructs the same vectors
    pq = faiss.ProductQuantizer(xr.shape[1], D, int(np.log2(K)))
    faiss.copy_array_to_vector(tok.centroids.ravel(), pq.centroids)
    faiss_codes = pq.compute_codes(np.ascontiguousarray(xr))
    np.testing.assert_array_equal(faiss_codes.astype(np.int64), codes)
    np.testing.assert_allclose(pq.decode(faiss_codes) @ tok.rotation, tok.decode(codes), atol=1e-4)


def test_rotation_is_orthonormal_and_reduces_distortion(feats):
    opq = PQTokenizer(n_tokens=4, n_centroids=64).fit(feats)
    r = opq.rotation
    np.testing.assert_allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-4)
    plain = PQTokenizer(n_tokens=4, n_centroids=64, opq=False).fit(feats)
    assert 0 < opq.distortion(feats) < plain.distortion(feats) < 1


def test_encode_unseen_items(feats):
    tok = PQTokenizer(n_tokens=2, n_centroids=32).fit(feats[:500])
    new = tok.encode(feats[500:])
    assert new.shape == (100, 2) and new.dtype == np.int64 and new.max() < 32
    # a seen item perturbed slightly keeps most of its tokens
    near = tok.encode(feats[:50] + 1e-4)
    assert (near == tok.encode(feats[:50])).mean() > 0.95


def test_dimension_not_divisible_and_few_items():
    x = np.random.default_rng(1).normal(size=(40, 30)).astype(np.float32)
    tok = PQTokenizer(n_tokens=4).fit(x)  # 30 % 4 != 0 -> 28 dims; 40 items -> K = 32
    assert tok.rotation.shape == (28, 30)
    assert tok.k == 32
    assert tok.encode(x).max() < 32
    with pytest.raises(ValueError, match="n_tokens"):
        PQTokenizer(n_tokens=64).fit(x)
    with pytest.raises(ValueError, match="power of two"):
        PQTokenizer(n_centroids=100).fit(x)


def test_cache_hit_miss_and_invalidation(small_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path))
    x = small_synth.features["text"].copy()
    a = fit_tokenizer(x, n_tokens=2, n_centroids=16)
    files = list((tmp_path / "tokens").glob("*.npz"))
    assert len(files) == 1 and a.cache_path == files[0]
    files[0].touch()
    b = fit_tokenizer(x, n_tokens=2, n_centroids=16)  # hit: same file, same state
    assert b.cache_path == a.cache_path and np.array_equal(a.centroids, b.centroids)
    x[17, 3] += 1e-3  # one value changes -> new key
    c = fit_tokenizer(x, n_tokens=2, n_centroids=16)
    assert c.cache_path != a.cache_path
    d = fit_tokenizer(x, n_tokens=2, n_centroids=16, seed=1)  # one parameter changes -> new key
    assert d.cache_path not in (a.cache_path, c.cache_path)
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 3
    assert not list((tmp_path / "tokens").glob(".*tmp"))  # no half-written files left behind


def test_tokenize_dataset_and_diagnostics(small_synth):
    ids = tokenize(small_synth, n_tokens=4, n_centroids=64)
    assert set(ids) == {"text", "image"}
    assert all(v.shape == (small_synth.n_items, 4) and v.dtype == np.int64 for v in ids.values())
    again = tokenize(small_synth, n_tokens=4, n_centroids=64, use_cache=False)
    for m in ids:
        np.testing.assert_array_equal(ids[m], again[m])  # same seed, same tokens; cache == fresh
    stats = token_stats(ids, 64)
    assert len(stats) == 8 and (stats.tokens_used <= 64).all() and (stats.entropy_bits <= 6 + 1e-9).all()
    ipt = items_per_token(ids)
    assert ipt.groupby(["modality", "position"]).n_items.sum().eq(small_synth.n_items).all()
    col = collisions(ids)
    assert col["all"] <= min(col["text"], col["image"])


def test_collisions_hand_example():
    ids = {"a": np.array([[0, 1], [0, 1], [2, 3]]), "b": np.array([[5], [6], [6]])}
    assert collisions(ids) == {"a": 2, "b": 2, "all": 0}


def test_text_tokens_share_semantics(small_synth):
    """Items sharing more text tokens are in the same planted cluster more often than random pairs."""
    ids = tokenize(small_synth, n_tokens=4, n_centroids=32)["text"]
    cluster = np.array([int(t.split("cluster ")[1].rstrip(")")) for t in small_synth.item_text])
    shared = (ids[:, None, :] == ids[None, :, :]).sum(-1)
    np.fill_diagonal(shared, 0)
    same = cluster[:, None] == cluster[None, :]
    assert same[shared >= 2].mean() > 3 * same.mean()


def test_same_id_every_position_fraction():
    ids = {"text": np.array([[3, 3, 3], [1, 2, 3], [0, 0, 0], [5, 5, 4]]), "image": np.array([[1], [2], [3], [4]])}
    assert same_id_every_position(ids) == {"text": 0.5}  # one position: nothing to compare


def test_subspace_seeds_remove_cross_position_repeats_at_equal_distortion():
    """Clustered features: faiss's one-seed PQ starts centroid j of every sub-space from the same item, so many
    items get the same id at every position; a seed per sub-space removes that (chance level 16^-3)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(16, 32)) * 3
    x = (centers[rng.integers(0, 16, 2000)] + rng.normal(size=(2000, 32))).astype(np.float32)
    default = PQTokenizer(n_tokens=4, n_centroids=16).fit(x)
    seeded = PQTokenizer(n_tokens=4, n_centroids=16, subspace_seeds=True).fit(x)
    assert same_id_every_position({"a": default.encode(x)})["a"] > 0.05
    assert same_id_every_position({"a": seeded.encode(x)})["a"] < 0.01
    assert seeded.distortion(x) < 1.05 * default.distortion(x)
    ids = seeded.encode(x)  # still the nearest centroid of each rotated sub-vector
    sub = seeded.rotate(x).reshape(len(x), 4, -1)
    np.testing.assert_array_equal(ids, ((sub[:, :, None] - seeded.centroids[None]) ** 2).sum(-1).argmin(-1))


_POLICY_PROBE = r"""
import os, resource, time
import numpy as np
from motor.tokenizer import load_faiss
faiss = load_faiss()  # faiss is loaded on first use, with its own OpenMP wait policy
caller = os.environ.get("OMP_WAIT_POLICY")
faiss.omp_set_num_threads(2)
x = np.random.default_rng(0).normal(size=(20000, 32)).astype("float32")
faiss.Kmeans(32, 64, niter=3, seed=0).train(x)  # starts faiss's OpenMP worker thread
cpu = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
before = cpu()
time.sleep(0.5)
print(caller, round(cpu() - before, 3))
"""


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_faiss_threads_sleep_and_torch_keeps_the_callers_wait_policy(policy):
    """faiss's OpenMP runtime always waits passively (spinning made it 4-7x slower on 2 cores, and an ACTIVE idle
    faiss thread would spin through training), while the caller's OMP_WAIT_POLICY, or none, is left for torch's
    own runtime (PASSIVE made LightGCN epochs 1.25x slower)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", _POLICY_PROBE], env=env, capture_output=True, text=True, check=True)
    seen, idle_cpu = out.stdout.split()
    assert seen == str(policy)  # what torch's runtime will read when it loads
    assert float(idle_cpu) < 0.15  # a spinning faiss worker would burn about 0.5 s of CPU in the 0.5 s sleep


@pytest.mark.parametrize("max_id, k", [(1, 2), (3, 4), (4, 8), (127, 128), (128, 256), (255, 256)])
def test_n_centroids_of_holds_the_largest_id(max_id, k):
    """The effective K is the smallest power of two above the largest id: a largest id that is itself a power of
    two (4, 128) needs the next one up (a K equal to it would have no row for that id)."""
    assert n_centroids_of({"text": np.array([[0, max_id]]), "image": np.array([[1, 0]])}) == k
