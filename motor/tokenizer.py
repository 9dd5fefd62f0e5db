"""Multimodal tokenizer (paper section 3.3): optimized product quantization per modality -> D token ids.

Per modality, an OPQ rotation ``A`` (d_out x d_in, orthonormal rows) is learned with faiss, the rotated vectors are
cut into D sub-vectors and each is assigned to the nearest of K centroids of its sub-space (eq. 3):
``t_x = argmin_j || (A f)_x - c_{x,j} ||``. The token ids of an item are ``[t_1, ..., t_D]``.

Choices (all documented in :class:`PQTokenizer`):

* D need not divide the feature dimension: OPQ outputs ``d_out = D * floor(min(d, max_dim) / D)`` dimensions
  (rotate-and-reduce); ``max_dim`` (default 512) also keeps 4096-d features tractable.
* K never exceeds what the data supports: k-means needs at least K points, so ``K = min(K, 2**floor(log2(n)))``
  (a power of two, as PQ codes are bit-packed). With fewer than 39 points per centroid faiss would warn; the warning
  is silenced on purpose (each centroid still gets >= 1 point) and the effective K is recorded in the state.
* Speed: fewer OPQ iterations and a training sample (see ``benchmarks/bench_tokenizer.py`` for time and
  distortion against faiss's defaults).
"""
from __future__ import annotations

import os

# faiss and torch each bring their own OpenMP runtime, and each reads OMP_WAIT_POLICY once, when it is loaded.
# faiss's always waits passively: spin-waiting made it 4-7x slower on 2 cores, and an idle faiss thread under ACTIVE
# spins through training. The caller's setting (or none) is put back for torch's: PASSIVE made LightGCN epochs about
# 1.25x slower (ml100k, 2 cores).
_caller_policy = os.environ.get("OMP_WAIT_POLICY")
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import contextlib  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

import faiss  # noqa: E402

if _caller_policy is None:
    del os.environ["OMP_WAIT_POLICY"]
else:
    os.environ["OMP_WAIT_POLICY"] = _caller_policy

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .cache import cache_dir, content_key, load_npz, save_npz  # noqa: E402

TOKENIZER_VERSION = 3  # bump when the algorithm changes: invalidates every cache entry


@dataclass
class PQTokenizer:
    """OPQ + PQ for one modality. ``fit`` then ``encode`` (any rows, including unseen items).

    Parameters: ``n_tokens`` D (sub-spaces), ``n_centroids`` K (power of two, <= 256), ``opq`` (learn a rotation;
    False = plain PQ on the first d_out dims), ``init`` (``"pca"``: start OPQ from the top-d_out principal axes
    dealt round-robin to the sub-spaces so each gets a balanced share of variance; ``"random"``: faiss's random
    rotation), ``opq_iter``/``opq_pq_iter``/``opq_pq_iter0`` (faiss defaults: random init, 50/4/40; ours PCA init,
    3/4/10), ``pq_iter`` (k-means iterations of the final codebooks, faiss default 25),
    ``max_train`` (training sample size; faiss default 65,536), ``max_dim`` (cap of the OPQ output dim), ``seed``,
    ``subspace_seeds`` (False: faiss's PQ, whose k-means uses one seed for every sub-space, so centroid j of every
    sub-space starts from the same training item and ids repeat across positions, see
    :func:`same_id_every_position`; True: the final codebook of sub-space x is trained with seed ``seed + 1 + x``).
    """

    n_tokens: int = 4
    n_centroids: int = 256
    opq: bool = True
    init: str = "pca"
    opq_iter: int = 3
    opq_pq_iter: int = 4
    opq_pq_iter0: int = 10
    pq_iter: int = 25
    max_train: int = 16_384
    max_dim: int = 512
    seed: int = 0
    subspace_seeds: bool = False
    rotation: np.ndarray | None = field(default=None, repr=False)  # (d_out, d_in)
    centroids: np.ndarray | None = field(default=None, repr=False)  # (D, K, d_out / D)

    def params(self) -> dict:
        p = asdict(self)
        p.pop("rotation"), p.pop("centroids")
        return p

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    @property
    def k(self) -> int:
        """Effective number of centroids per sub-space (after capping by the data)."""
        return int(self.centroids.shape[1]) if self.fitted else self.n_centroids

    def fit(self, x: np.ndarray) -> "PQTokenizer":
        """Learn the rotation and codebooks from ``x`` (n, d). Runs on one thread (see :func:`one_thread`)."""
        with one_thread():
            return self._fit(x)

    def _fit(self, x: np.ndarray) -> "PQTokenizer":
        x = _as_f32(x)
        n, d = x.shape
        if self.n_tokens < 1 or self.n_tokens > d:
            raise ValueError(f"n_tokens must be in [1, {d}] for {d}-d features, got {self.n_tokens}")
        if self.n_centroids & (self.n_centroids - 1) or not 2 <= self.n_centroids <= 256:
            raise ValueError(f"n_centroids must be a power of two in [2, 256], got {self.n_centroids}")
        if n < 2:
            raise ValueError("need at least 2 items to learn a tokenizer")
        nbits = int(min(np.log2(self.n_centroids), np.floor(np.log2(n))))
        d_out = self.n_tokens * (min(d, self.max_dim) // self.n_tokens)
        rng = np.random.default_rng(self.seed)
        sample = x[np.sort(rng.choice(n, self.max_train, replace=False))] if n > self.max_train else x
        if self.opq:
            opq = faiss.OPQMatrix(d, self.n_tokens, d_out)
            opq.niter, opq.niter_pq, opq.niter_pq_0 = self.opq_iter, self.opq_pq_iter, self.opq_pq_iter0
            opq.max_train_points = len(sample)
            opq.pq = _new_pq(d_out, self.n_tokens, nbits, self.opq_pq_iter0, self.seed)
            if self.init == "pca":
                faiss.copy_array_to_vector(_balanced_pca(sample, d_out, self.n_tokens, self.seed).ravel(), opq.A)
            elif self.init != "random":
                raise ValueError(f"init must be 'pca' or 'random', got {self.init!r}")
            opq.train(sample)
            rotation = faiss.vector_to_array(opq.A).reshape(d_out, d)
        else:
            rotation = np.eye(d_out, d, dtype=np.float32)
        rotated = np.ascontiguousarray(sample @ rotation.T)
        self.rotation = rotation.astype(np.float32)
        if self.subspace_seeds:
            self.centroids = _subspace_kmeans(rotated, self.n_tokens, 1 << nbits, self.pq_iter, self.seed)
            return self
        pq = _new_pq(d_out, self.n_tokens, nbits, self.pq_iter, self.seed)
        pq.train(rotated)
        self.centroids = faiss.vector_to_array(pq.centroids).reshape(self.n_tokens, 1 << nbits, d_out // self.n_tokens)
        return self

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Rotated (and reduced) vectors ``A f``, shape (n, d_out)."""
        self._check(x)
        return _as_f32(x) @ self.rotation.T

    def encode(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Token ids (n, D) int64: nearest centroid per rotated sub-vector (eq. 3). Works for unseen items."""
        with one_thread():
            return self._encode(x, batch)

    def _encode(self, x: np.ndarray, batch: int) -> np.ndarray:
        D, K, ds = self.centroids.shape
        out = np.empty((len(x), D), dtype=np.int64)
        c_sq = (self.centroids ** 2).sum(-1)  # (D, K)
        for s in range(0, len(x), batch):
            xr = self.rotate(x[s:s + batch]).reshape(-1, D, ds)
            # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is constant per row
            dist = c_sq[None] - 2.0 * np.einsum("nds,dks->ndk", xr, self.centroids)
            out[s:s + batch] = dist.argmin(-1)
        return out

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Approximate features from token ids, in the original space (n, d_in)."""
        D = self.centroids.shape[0]
        xr = np.concatenate([self.centroids[p][token_ids[:, p]] for p in range(D)], axis=1)
        return xr @ self.rotation

    def distortion(self, x: np.ndarray) -> float:
        """Mean squared reconstruction error relative to the total feature variance (0 = perfect)."""
        x = _as_f32(x)
        err = ((x - self.decode(self.encode(x))) ** 2).sum(1).mean()
        return float(err / max(x.var(0).sum(), 1e-12))

    def state(self) -> dict[str, np.ndarray]:
        return {"rotation": self.rotation, "centroids": self.centroids}

    def _check(self, x: np.ndarray) -> None:
        if not self.fitted:
            raise RuntimeError("tokenizer is not fitted: call fit(features) first")
        if x.ndim != 2 or x.shape[1] != self.rotation.shape[1]:
            raise ValueError(f"expected features of shape (n, {self.rotation.shape[1]}), got {x.shape}")


@contextlib.contextmanager
def one_thread():
    """Run the block with faiss's OpenMP, the BLAS libraries and torch on one thread each, then restore them.

    Parallel reductions (k-means sums, GEMM blocking, eigen-solvers) round differently with different thread
    counts, and an argmin between near-equal distances then flips a token id: on ``scientific``, 1 and 2 threads
    gave different image tokens. One thread makes the token ids a function of the data and the seed alone; fitting
    a tokenizer is a few seconds once per dataset and cached, so the lost parallelism costs little."""
    import torch
    from threadpoolctl import threadpool_limits

    faiss_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        faiss.omp_set_num_threads(faiss_threads)
        torch.set_num_threads(torch_threads)


def _balanced_pca(x: np.ndarray, d_out: int, n_sub: int, seed: int) -> np.ndarray:
    """(d_out, d_in) orthonormal rows: the top-d_out principal axes, dealt round-robin to the ``n_sub`` sub-spaces
    (sub-space s gets components s, s + n_sub, ...) so that every sub-space holds a similar share of variance."""
    import torch

    xc = torch.from_numpy(x - x.mean(0, keepdims=True))
    if x.shape[1] <= 1024:
        _, vecs = torch.linalg.eigh(xc.T @ xc)
        axes = vecs.flip(1)[:, :d_out]
    else:  # randomized SVD: never a d_in x d_in eigen-decomposition for 4096-d features
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's global RNG
            torch.manual_seed(seed)
            _, _, v = torch.svd_lowrank(xc, q=min(d_out + 16, min(x.shape)), niter=3)
        axes = v[:, :d_out]
    order = np.concatenate([np.arange(s, d_out, n_sub) for s in range(n_sub)])
    return np.ascontiguousarray(axes[:, order].T.numpy(), dtype=np.float32)


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _new_pq(d: int, m: int, nbits: int, niter: int, seed: int) -> "faiss.ProductQuantizer":
    pq = faiss.ProductQuantizer(d, m, nbits)
    pq.cp.niter = niter
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # small catalogues: fewer than 39 points per centroid is expected here
    pq.cp.max_points_per_centroid = 1 << 30  # we subsample ourselves (max_train)
    return pq


def _subspace_kmeans(rotated: np.ndarray, n_sub: int, k: int, niter: int, seed: int) -> np.ndarray:
    """(n_sub, k, d_out / n_sub) codebooks: k-means per sub-space as faiss's PQ, but with seed ``seed + 1 + x``."""
    ds = rotated.shape[1] // n_sub
    out = []
    for x in range(n_sub):
        km = faiss.Kmeans(ds, k, niter=niter, seed=seed + 1 + x, min_points_per_centroid=1,
                          max_points_per_centroid=1 << 30)
        km.train(np.ascontiguousarray(rotated[:, x * ds:(x + 1) * ds]))
        out.append(km.centroids)
    return np.stack(out)


# ----------------------------------------------------------------------------------------------- dataset level


def fit_tokenizer(features: np.ndarray, use_cache: bool = True, **params) -> PQTokenizer:
    """Fit (or load from the content-addressed cache) a tokenizer for one feature matrix."""
    tok = PQTokenizer(**params)
    key = content_key("pq-tokenizer", TOKENIZER_VERSION, faiss.__version__, tok.params(), _as_f32(features))
    path = cache_dir() / "tokens" / f"{key}.npz"
    if use_cache:
        hit = load_npz(path)
        if hit is not None:
            tok.rotation, tok.centroids = hit["rotation"], hit["centroids"]
            tok.cache_path = path  # type: ignore[attr-defined]
            return tok
    tok.fit(features)
    if use_cache:
        save_npz(path, **tok.state(), token_ids=tok.encode(features))
    tok.cache_path = path  # type: ignore[attr-defined]
    return tok


def fit_tokenizers(dataset, n_tokens: int = 4, modalities=None, use_cache: bool = True,
                   **params) -> dict[str, PQTokenizer]:
    """One fitted tokenizer per modality of ``dataset`` (all items' features; no interactions are used)."""
    mods = modalities or dataset.modalities
    if not mods:
        raise ValueError(f"dataset {dataset.name!r} has no modality features (<modality>_feat.npy) to tokenize")
    return {m: fit_tokenizer(dataset.features[m], use_cache=use_cache, n_tokens=n_tokens, **params) for m in mods}


def tokenize(dataset, n_tokens: int = 4, use_cache: bool = True, modalities=None, **params) -> dict[str, np.ndarray]:
    """Token ids per modality: ``{modality: int64 array (n_items, n_tokens)}``. Cached by content + parameters."""
    toks = fit_tokenizers(dataset, n_tokens=n_tokens, modalities=modalities, use_cache=use_cache, **params)
    out = {}
    for m, tok in toks.items():
        cached = load_npz(tok.cache_path) if use_cache else None
        ids = cached["token_ids"] if cached is not None and "token_ids" in cached else tok.encode(dataset.features[m])
        out[m] = ids.astype(np.int64)
    return out


def n_centroids_of(token_ids: dict[str, np.ndarray], requested: int = 256) -> int:
    """Smallest power of two that holds every token id (the effective K of a tokenization)."""
    top = max(int(t.max()) for t in token_ids.values()) + 1
    k = 1
    while k < top:
        k *= 2
    return min(max(k, 2), max(requested, k))


# ----------------------------------------------------------------------------------------------- diagnostics


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def token_stats(token_ids: dict[str, np.ndarray], n_centroids: int = 256) -> pd.DataFrame:
    """Per modality and position: tokens used (of K), entropy (bits, max log2 K), items per used token."""
    rows = []
    for m, ids in token_ids.items():
        for p in range(ids.shape[1]):
            counts = np.bincount(ids[:, p], minlength=n_centroids)
            used = counts[counts > 0]
            rows.append({"modality": m, "position": p, "tokens_used": int(len(used)), "K": n_centroids,
                         "entropy_bits": _entropy_bits(counts), "max_entropy_bits": float(np.log2(n_centroids)),
                         "items_per_token_median": float(np.median(used)), "items_per_token_max": int(used.max())})
    return pd.DataFrame(rows)


def items_per_token(token_ids: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table (modality, position, token, n_items) — the data behind the paper's Fig. 6."""
    frames = []
    for m, ids in token_ids.items():
        for p in range(ids.shape[1]):
            tok, cnt = np.unique(ids[:, p], return_counts=True)
            frames.append(pd.DataFrame({"modality": m, "position": p, "token": tok, "n_items": cnt}))
    return pd.concat(frames, ignore_index=True)


def collisions(token_ids: dict[str, np.ndarray]) -> dict[str, int]:
    """Items whose full token tuple is shared with at least one other item: per modality and all modalities."""
    out = {}
    mats = dict(token_ids)
    mats["all"] = np.concatenate([token_ids[m] for m in sorted(token_ids)], axis=1)
    for m, ids in mats.items():
        _, inverse, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
        out[m] = int((counts[inverse.ravel()] > 1).sum())
    return out


def same_id_every_position(token_ids: dict[str, np.ndarray]) -> dict[str, float]:
    """Per modality, the fraction of items whose token id is the same at every position (e.g. 231 231 231 231).

    Chance level is K^-(D-1). It is far higher with faiss's PQ: every sub-quantizer's k-means starts from the
    items (one seed), so centroid j starts from the same item in every sub-space; sub-spaces of real features are
    correlated, the clusters stay aligned, and items near that item get code j everywhere (scientific, D=4: 21 %
    of items for image, 29 % for text; ml100k: 15 % and 16 %). Position tables are separate, so this is not a
    collision, but those items' positions carry correlated rather than independent information.
    """
    return {m: float((ids == ids[:, :1]).all(axis=1).mean()) for m, ids in token_ids.items() if ids.shape[1] > 1}
