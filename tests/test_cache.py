"""Tokenizer and cache hardening (issue 16 points 1, 2): small catalogues and damaged cache entries end in a
working run or a clear message, never a dead process. The two crash cases run in a subprocess, so a regression
fails a test instead of killing the test runner."""
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import motor
from motor.backbones.graph import cached_knn_graph
from motor.cache import cache_dir, load_npz, save_npz
from motor.tokenizer import PQTokenizer, tokenize

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"MOTOR_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------------------ point 1: n < d crash


def test_fewer_items_than_dimensions_tokenize_in_a_subprocess(tmp_path):
    out = _python("""
        import warnings
        import numpy as np
        from motor.tokenizer import PQTokenizer
        for n, d in [(40, 48), (300, 512), (63, 64), (3, 32)]:
            x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                tok = PQTokenizer(n_tokens=4).fit(x)
            ids = tok.encode(x)
            assert ids.shape == (n, 4) and ids.min() >= 0 and ids.max() < tok.k
            assert any("plain PQ" in str(m.message) for m in w)
            print("ok", n, d, tok.distortion(x))
        # a shop with 40 items and 48-d features, through the dataset path (cache included)
        from motor.data import from_interactions
        from motor.tokenizer import tokenize
        rng = np.random.default_rng(0)
        ds = from_interactions("shop", rng.integers(0, 30, 400), rng.integers(0, 40, 400), np.zeros(400), 30, 40,
                               features={"text": rng.normal(size=(40, 48)).astype(np.float32)})
        assert tokenize(ds, 4, n_centroids=16)["text"].shape == (40, 4)
        print("ok dataset")
        try:  # max_dim < n_tokens made an empty rotation: faiss divided by zero (SIGFPE)
            PQTokenizer(n_tokens=4, max_dim=0).fit(x)
        except ValueError as exc:
            assert "max_dim=0" in str(exc)
            print("ok max_dim")
    """, tmp_path)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # was -11 (SIGSEGV) or -6 (double free)
    assert out.stdout.count("ok") == 6


def test_enough_items_keep_opq():
    x = np.random.default_rng(0).normal(size=(80, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        tok = PQTokenizer(n_tokens=4, n_centroids=16).fit(x)
    assert not np.allclose(tok.rotation, np.eye(32))  # a learned rotation


def test_one_dimensional_modality_is_a_clear_error(small_synth):
    ds = motor.data.with_features(small_synth, text=np.arange(small_synth.n_items, dtype=np.float32)[:, None])
    with pytest.raises(ValueError, match="modality 'text'.*1 dimension"):
        tokenize(ds, 1, use_cache=False)


def test_constant_features_warn_with_the_count(small_synth):
    n = small_synth.n_items
    ds = motor.data.with_features(small_synth, text=np.ones((n, 8), np.float32))
    with pytest.warns(UserWarning, match=f"all {n} feature rows are identical"):
        tokenize(ds, 2, n_centroids=16, use_cache=False, modalities=["text"])
    x = np.repeat(np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32), n // 5, axis=0)
    ds = motor.data.with_features(small_synth, text=x)
    with pytest.warns(UserWarning, match=f"{n - 5} of {n} feature rows repeat another row \\(5 distinct"):
        tokenize(ds, 2, n_centroids=16, use_cache=False, modalities=["text"])


def test_modalities_as_a_string_is_a_clear_error(small_synth):
    with pytest.raises(ValueError, match="list of modality names"):
        tokenize(small_synth, 2, modalities="text")


# ------------------------------------------------------------------------------------------ point 2: cache entries


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    # every test finds its own cache entries by listing the cache folder: it must hold no other test's files
    monkeypatch.setenv("MOTOR_CACHE", str(tmp_path / "cache"))


def _knn_case(tmp_path):
    x = np.random.default_rng(1).normal(size=(60, 8)).astype(np.float32)
    graph = cached_knn_graph(x, k=5)  # writes the cache entry
    path = next((cache_dir() / "knn").glob("*.npz"))
    return x, graph, path


def test_out_of_range_knn_cache_index_is_rebuilt_in_a_subprocess(tmp_path):
    out = _python("""
        import warnings
        import numpy as np
        import torch
        from motor.backbones.graph import cached_knn_graph, knn_graph
        from motor.cache import cache_dir, payload_checksum, CHECKSUM_KEY
        x = np.random.default_rng(1).normal(size=(60, 8)).astype(np.float32)
        cached_knn_graph(x, k=5)
        path = next((cache_dir() / "knn").glob("*.npz"))
        z = dict(np.load(path))
        z.pop(CHECKSUM_KEY, None)
        z["indices"][1, 7] = 10 ** 9  # out of range; a valid checksum, so only the range check can catch it
        np.savez(path, **z, **{CHECKSUM_KEY: np.array(payload_checksum(z))})
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            g = cached_knn_graph(x, k=5)
        from motor.sparse import spmm
        y = spmm(g, torch.ones(60, 4))  # where the unchecked index corrupted the heap
        assert torch.isfinite(y).all()
        messages = [str(m.message) for m in w]
        assert any(str(path) in m and "1000000000" in m for m in messages), messages
        ref = knn_graph(x, k=5)
        assert torch.equal(g.indices(), ref.indices()) and torch.equal(g.values(), ref.values())
        print("ok")
    """, tmp_path)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # was -11 (heap corruption in sparse.py)
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("damage", ["truncate", "flip", "shuffle", "scale", "not_zip"])
def test_damaged_knn_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    x, graph, path = _knn_case(tmp_path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:300] + bytes([raw[300] ^ 0x55]) + raw[301:])
    elif damage == "not_zip":
        path.write_bytes(b"hello")
    else:
        z = dict(np.load(path))
        if damage == "shuffle":
            z["indices"] = z["indices"][:, np.random.default_rng(0).permutation(z["indices"].shape[1])]
        else:
            z["values"] = z["values"] * 3
        np.savez(path, **z)  # keeps the old checksum entry
    with pytest.warns(UserWarning, match=f"cache file {path} is not used"):
        again = cached_knn_graph(x, k=5)
    assert torch.equal(again.indices(), graph.indices()) and torch.equal(again.values(), graph.values())
    assert load_npz(path) is not None  # rewritten intact


def _token_case(small_synth):
    ids = tokenize(small_synth, 2, n_centroids=16)
    paths = sorted((cache_dir() / "tokens").glob("*.npz"))
    assert paths
    return ids, paths


@pytest.mark.parametrize("damage", ["shuffle", "beyond_k", "scale", "truncate", "flip"])
def test_damaged_token_cache_is_rebuilt_with_a_warning(small_synth, damage):
    ids, paths = _token_case(small_synth)
    for path in paths:
        raw = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(raw[:-40])
            continue
        if damage == "flip":
            path.write_bytes(raw[:200] + bytes([raw[200] ^ 0x01]) + raw[201:])
            continue
        z = dict(np.load(path))
        if damage == "shuffle":
            z["token_ids"] = z["token_ids"][::-1].copy()
        elif damage == "beyond_k":
            z["token_ids"][0, 0] = 999
        else:
            z["centroids"] = z["centroids"] * 2
        np.savez(path, **z)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = tokenize(small_synth, 2, n_centroids=16)
    named = [str(m.message) for m in w if "is not used" in str(m.message)]
    assert {p for p in paths if any(str(p) in m for m in named)} == set(paths)
    for m in ids:
        np.testing.assert_array_equal(again[m], ids[m])


def test_cache_entry_with_wrong_shapes_is_refused_even_with_a_valid_checksum(small_synth):
    ids, paths = _token_case(small_synth)
    z = dict(np.load(paths[0]))
    z.pop("__checksum__")
    z["token_ids"] = z["token_ids"][:-1]
    save_npz(paths[0], **z)
    with pytest.warns(UserWarning, match="entry 'token_ids' has shape"):
        again = tokenize(small_synth, 2, n_centroids=16)
    for m in ids:
        np.testing.assert_array_equal(again[m], ids[m])


def test_unreadable_cache_file_is_not_an_exception_without_a_path(tmp_path):
    path = tmp_path / "x.npz"
    save_npz(path, a=np.arange(4))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.warns(UserWarning, match=str(path)):
        assert load_npz(path) is None
    with pytest.raises(zipfile.BadZipFile):  # what np.load alone raises: no path, never rebuilt before
        np.load(path)


def test_token_incidence_from_a_checked_cache_has_valid_indices(small_synth):
    # every cached id that reaches the item representation's sparse incidence matrix is in [0, K)
    ids, _ = _token_case(small_synth)
    ids = tokenize(small_synth, 2, n_centroids=16)
    for t in ids.values():
        assert t.min() >= 0 and t.max() < 16
    rep = motor.item_repr.build_item_repr("ms", small_synth.n_items, 8, token_ids=ids, n_centroids=16)
    assert torch.isfinite(rep()).all()
