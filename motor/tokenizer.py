"""Multimodal tokenizer (paper section 3.3): optimized product quantization per modality -> D token ids, and a
second family, residual k-means (``method="rq"``, :class:`RQTokenizer`), with the same D x K budget.

Per modality, an OPQ rotation ``A`` (d_out x d_in, orthonormal rows) is learned with faiss, the rotated vectors are
cut into D sub-vectors and each is assigned to the nearest of K centroids of its sub-space (eq. 3):
``t_x = argmin_j || (A f)_x - c_{x,j} ||``. The token ids of an item are ``[t_1, ..., t_D]``.

Choices (all documented in :class:`PQTokenizer`):

* D need not divide the feature dimension: OPQ outputs ``d_out = D * floor(min(d, max_dim) / D)`` dimensions
  (rotate-and-reduce); ``max_dim`` (default 512) also keeps 4096-d features tractable.
* K never exceeds what the data supports: k-means needs at least K points, so ``K = min(K, 2**floor(log2(n)))``
  (a power of two, as PQ codes are bit-packed). With fewer than 39 points per centroid faiss would warn; the warning
  is silenced on purpose (each centroid still gets >= 1 point) and the effective K is recorded in the state.
* Fewer items than ``d_out``: faiss's OPQ needs at least as many items as output dimensions (it crashes the process
  otherwise), so such a catalogue gets plain PQ over all its dimensions, with a warning (see :func:`_output_dims`).
  Inputs are checked before faiss sees them (:func:`check_params`, :func:`check_fit_input`); cache entries are
  checked when read (checksum, shapes, id ranges) and rebuilt when they do not fit.
* Speed: fewer OPQ iterations and a training sample (see ``benchmarks/bench_tokenizer.py`` for time and
  distortion against faiss's defaults).

Residual k-means (the "semantic ID" tokenizers of TIGER / OneRec): D stages over the whole (PCA-reduced) vector;
stage x clusters what the earlier stages left, ``t_x = argmin_j || r_x - c_{x,j} ||`` with ``r_1 = P f`` and
``r_{x+1} = r_x - c_{x,t_x}``, so token x refines tokens 1..x-1 instead of describing a separate sub-space.

``TOKENIZER_METHODS`` maps a method name (``RunConfig.tokenizer["method"]``, default ``"opq"``) to its class; both have
``params()``, ``state()`` ({"rotation", "centroids"} arrays), ``set_state``, ``fit``, ``encode``, ``decode`` and
``distortion``, share the content-addressed cache and the diagnostics below; :func:`tokenizer_state` /
:func:`tokenizer_from_state` save and restore either as plain arrays.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from .cache import array_problem, cache_dir, content_key, load_npz, save_npz
from .defaults import N_CENTROIDS, N_TOKENS

_faiss = None


def load_faiss():
    """The faiss module, imported on first use (``import motor`` stays cheap and leaves ``os.environ`` alone).

    faiss and torch each bring their own OpenMP runtime, and each reads OMP_WAIT_POLICY once, when it is loaded.
    faiss's always waits passively: spin-waiting made it several times slower on 2 cores, and an idle faiss thread
    under ACTIVE spins through training. So the variable is PASSIVE only while faiss loads; the caller's setting
    (or none) is put back for torch's runtime, which trains slower under PASSIVE."""
    global _faiss
    if _faiss is None:
        caller = os.environ.get("OMP_WAIT_POLICY")
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            import faiss as module
        finally:
            if caller is None:
                os.environ.pop("OMP_WAIT_POLICY", None)
            else:
                os.environ["OMP_WAIT_POLICY"] = caller
        _faiss = module
    return _faiss


class _LazyFaiss:
    """``faiss.X`` in this module loads faiss on first use (:func:`load_faiss`)."""

    def __getattr__(self, name: str):
        return getattr(load_faiss(), name)


faiss = _LazyFaiss()

TOKENIZER_VERSION = 3  # bump when the algorithm changes: invalidates every cache entry


class _Codebook:
    """What the two tokenizer families share: a projection ``rotation`` (d_out, d_in) and ``centroids`` (D, K, .)
    learned by ``fit``; parameters, state, projection and distortion."""

    rotation: np.ndarray | None
    centroids: np.ndarray | None

    def params(self) -> dict:
        """The constructor's parameters (what the cache key and a saved tokenizer record)."""
        p = asdict(self)
        p.pop("rotation"), p.pop("centroids")
        return p

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    @property
    def k(self) -> int:
        """Effective number of centroids per position (after capping by the data)."""
        return int(self.centroids.shape[1]) if self.fitted else self.n_centroids

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Rotated (and reduced) vectors ``A f``, shape (n, d_out)."""
        self._check(x)
        return _as_f32(x) @ self.rotation.T

    def distortion(self, x: np.ndarray) -> float:
        """Mean squared reconstruction error relative to the total feature variance (0 = perfect)."""
        x = _as_f32(x)
        err = ((x - self.decode(self.encode(x))) ** 2).sum(1).mean()
        return float(err / max(x.var(0).sum(), 1e-12))

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays: ``rotation`` (d_out, d_in) and ``centroids`` (D, K, d_out / D for OPQ, d_out for RQ);
        with ``method`` and :meth:`params` they are the whole tokenizer."""
        return {"rotation": self.rotation, "centroids": self.centroids}

    def set_state(self, arrays) -> "_Codebook":
        """Load the arrays of :meth:`state` (e.g. from the cache); returns ``self``."""
        self.rotation, self.centroids = np.asarray(arrays["rotation"]), np.asarray(arrays["centroids"])
        return self

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]):
        """A fitted tokenizer from :meth:`state`'s arrays (no fitting): it encodes exactly as the saved one."""
        problem = (array_problem(arrays, "centroids", (None, None, None), "f")
                   or array_problem(arrays, "rotation", (None, None), "f"))
        if problem is None:
            D, K, ds = arrays["centroids"].shape
            rows = cls._rotation_rows(D, ds)
            if arrays["rotation"].shape[0] != rows:
                problem = (f"entry 'rotation' has {arrays['rotation'].shape[0]} output rows, expected {rows} for "
                           f"{cls.method} centroids of shape {arrays['centroids'].shape}")
        if problem is not None:
            raise ValueError(problem)
        D, K, _ = arrays["centroids"].shape
        return cls(n_tokens=int(D), n_centroids=int(K), rotation=_as_f32(arrays["rotation"]),
                   centroids=_as_f32(arrays["centroids"]))

    @staticmethod
    def _rotation_rows(n_tokens: int, centroid_dim: int) -> int:
        """Output dimensions of the projection for centroids of width ``centroid_dim``."""
        raise NotImplementedError

    def _check(self, x: np.ndarray) -> None:
        if not self.fitted:
            raise RuntimeError("tokenizer is not fitted: call fit(features) first")
        if x.ndim != 2 or x.shape[1] != self.rotation.shape[1]:
            raise ValueError(f"expected features of shape (n, {self.rotation.shape[1]}), got {x.shape}")


@dataclass
class PQTokenizer(_Codebook):
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

    n_tokens: int = N_TOKENS
    n_centroids: int = N_CENTROIDS
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
    method: ClassVar[str] = "opq"  # the name in TOKENIZER_METHODS, RunConfig.tokenizer["method"] and a saved state

    def fit(self, x: np.ndarray) -> "PQTokenizer":
        """Learn the rotation and codebooks from ``x`` (n, d). Runs on one thread (see :func:`one_thread`)."""
        with one_thread():
            return self._fit(x)

    def _fit(self, x: np.ndarray) -> "PQTokenizer":
        x = _as_f32(x)
        check_params(self)
        check_fit_input(x, self.n_tokens, self.n_centroids)
        n, d = x.shape
        nbits = int(min(np.log2(self.n_centroids), np.floor(np.log2(n))))
        use_opq, d_out = _output_dims(min(n, self.max_train), d, self.n_tokens, self.max_dim, self.opq)
        rng = np.random.default_rng(self.seed)
        sample = x[np.sort(rng.choice(n, self.max_train, replace=False))] if n > self.max_train else x
        if use_opq:
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

    @staticmethod
    def _rotation_rows(n_tokens: int, centroid_dim: int) -> int:
        return n_tokens * centroid_dim  # D sub-spaces side by side

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Approximate features from token ids, in the original space (n, d_in)."""
        D = self.centroids.shape[0]
        xr = np.concatenate([self.centroids[p][token_ids[:, p]] for p in range(D)], axis=1)
        return xr @ self.rotation



@dataclass
class RQTokenizer(_Codebook):
    """Residual k-means for one modality: D stages of K centroids over the whole vector. ``fit`` then ``encode``.

    Parameters: ``n_tokens`` D (stages), ``n_centroids`` K (power of two, <= 256; capped by the data as for OPQ),
    ``niter`` (k-means iterations per stage), ``max_train`` (training sample size), ``max_dim`` (features wider
    than this are projected on their top ``max_dim`` principal axes first; narrower ones are used as they are,
    ``rotation`` = identity), ``seed`` (the sample and stage x's k-means use ``seed`` and ``seed + x``).
    State: ``rotation`` (d_out, d_in) orthonormal rows and ``centroids`` (D, K, d_out), stage by stage.
    """

    n_tokens: int = N_TOKENS
    n_centroids: int = N_CENTROIDS
    niter: int = 25
    max_train: int = 16_384
    max_dim: int = 512
    seed: int = 0
    rotation: np.ndarray | None = field(default=None, repr=False)  # (d_out, d_in)
    centroids: np.ndarray | None = field(default=None, repr=False)  # (D, K, d_out)
    method: ClassVar[str] = "rq"

    @staticmethod
    def _rotation_rows(n_tokens: int, centroid_dim: int) -> int:
        return centroid_dim  # every stage spans the whole projected vector

    def fit(self, x: np.ndarray) -> "RQTokenizer":
        """Learn the projection and the D stages' centroids from ``x`` (n, d), on one thread."""
        with one_thread():
            x = _as_f32(x)
            check_params(self)
            check_fit_input(x, self.n_tokens, self.n_centroids)
            n, d = x.shape
            k = 1 << int(min(np.log2(self.n_centroids), np.floor(np.log2(n))))
            rng = np.random.default_rng(self.seed)
            sample = x[np.sort(rng.choice(n, self.max_train, replace=False))] if n > self.max_train else x
            d_out = min(d, self.max_dim)
            self.rotation = (np.eye(d, dtype=np.float32) if d_out == d
                             else _balanced_pca(sample, d_out, 1, self.seed))  # 1 "sub-space": plain PCA order
            residual = np.ascontiguousarray(sample @ self.rotation.T)
            stages = []
            for stage in range(self.n_tokens):
                km = faiss.Kmeans(d_out, k, niter=self.niter, seed=self.seed + stage, min_points_per_centroid=1,
                                  max_points_per_centroid=1 << 30)
                km.train(residual)
                c = np.ascontiguousarray(km.centroids, dtype=np.float32)
                stages.append(c)
                residual = residual - c[_nearest(residual, c)]
            self.centroids = np.stack(stages)
            return self

    def encode(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """Token ids (n, D) int64: stage by stage, the nearest centroid to what the earlier stages left."""
        self._check(x)
        with one_thread():
            out = np.empty((len(x), self.centroids.shape[0]), dtype=np.int64)
            for s in range(0, len(x), batch):
                residual = self.rotate(x[s:s + batch])
                for stage, c in enumerate(self.centroids):
                    out[s:s + batch, stage] = ids = _nearest(residual, c)
                    residual = residual - c[ids]
            return out

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Approximate features from token ids (the sum of each stage's centroid), in the original space."""
        xr = sum(self.centroids[stage][token_ids[:, stage]] for stage in range(self.centroids.shape[0]))
        return xr @ self.rotation


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n,) index of the nearest row of ``centroids`` (K, d) to each row of ``x`` (n, d), squared L2."""
    dist = (centroids ** 2).sum(1)[None] - 2.0 * (x @ centroids.T)  # ||x||^2 is constant per row
    return dist.argmin(1)


TOKENIZER_METHODS: dict[str, type] = {"opq": PQTokenizer, "rq": RQTokenizer}  # method name -> tokenizer class


def tokenizer_class(method: str) -> type:
    """The tokenizer class of ``method`` (``"opq"`` or ``"rq"``); a ValueError naming the choices otherwise."""
    try:
        return TOKENIZER_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"tokenizer method {method!r} is unknown: use one of {sorted(TOKENIZER_METHODS)} "
                         "(RunConfig.tokenizer['method'])") from None


@contextlib.contextmanager
def one_thread():
    """Run the block with faiss's OpenMP, the BLAS libraries and torch on one thread each, then restore them.

    Parallel reductions (k-means sums, GEMM blocking, eigen-solvers) round differently with different thread
    counts, and an argmin between near-equal distances then flips a token id: on ``scientific``, 1 and 2 threads
    gave different image tokens. One thread makes the token ids a function of the data and the seed alone; fitting
    a tokenizer is a few seconds once per dataset and cached, so the lost parallelism costs little."""
    import torch  # noqa: PLC0415 - loaded after faiss (see load_faiss: the wait policy)
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
    import torch  # noqa: PLC0415 - after faiss (see load_faiss)

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


def check_params(tok: "PQTokenizer | RQTokenizer") -> None:
    """Raise a ValueError naming the parameter when a tokenizer setting is of the wrong type or out of range
    (faiss would otherwise divide by zero or read past a buffer)."""
    def integer(name: str, low: int) -> None:
        v = getattr(tok, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"tokenizer parameter {name}={v!r}: an integer >= {low}")

    integer("n_tokens", 1)
    integer("max_dim", tok.n_tokens if isinstance(tok.n_tokens, (int, np.integer)) and tok.method == "opq" else 1)
    integer("max_train", 2)
    integer("seed", 0)
    if tok.method == "rq":
        integer("niter", 1)
        return
    for name in ("opq_iter", "opq_pq_iter", "opq_pq_iter0", "pq_iter"):
        integer(name, 1)
    for name in ("opq", "subspace_seeds"):
        if not isinstance(getattr(tok, name), (bool, np.bool_)):
            raise ValueError(f"tokenizer parameter {name}={getattr(tok, name)!r}: True or False")
    if tok.init not in ("pca", "random"):
        raise ValueError(f"tokenizer parameter init={tok.init!r}: 'pca' or 'random'")


def check_fit_input(x: np.ndarray, n_tokens: int, n_centroids: int, name: str = "features") -> None:
    """Raise a ValueError naming ``name`` when ``x`` cannot be tokenized with these parameters: not a 2-D
    matrix, fewer than 2 items or 2 dimensions, NaN/inf values, ``n_tokens`` not in [1, d], ``n_centroids`` not a
    power of two in [2, 256]."""
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (items x dims), got shape {x.shape}")
    n, d = x.shape
    if d < 2:
        raise ValueError(f"{name}: {d} dimension(s); a tokenizer cuts each vector into sub-vectors and needs at "
                         "least 2. Fix: drop this modality (modalities=[...]) or give it real feature vectors.")
    if n < 2:
        raise ValueError(f"{name}: {n} item(s); need at least 2 items to learn a tokenizer")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or not 1 <= n_tokens <= d:
        raise ValueError(f"{name}: n_tokens must be an integer in [1, {d}] for {d}-d features, got {n_tokens!r}")
    if (isinstance(n_centroids, bool) or not isinstance(n_centroids, (int, np.integer))
            or n_centroids & (n_centroids - 1) or not 2 <= n_centroids <= 256):
        raise ValueError(f"{name}: n_centroids must be a power of two in [2, 256], got {n_centroids!r}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name}: NaN or inf in row {int(np.flatnonzero(~finite)[0])} "
                         f"({int((~finite).sum())} rows). Fix: impute those vectors before tokenizing.")


def _output_dims(n_train: int, d: int, n_tokens: int, max_dim: int, opq: bool) -> tuple[bool, int]:
    """(learn an OPQ rotation?, output dim d_out). faiss's OPQ needs at least as many training items as output
    dims and otherwise dies (SIGSEGV / heap corruption); below that, plain PQ over all ``d`` dims is used. On
    40-300-item samples of scientific and ml100k features, plain PQ's distortion was 0.2-0.5x that of OPQ with
    d_out cut to the item count in 5 of 9 cases (every image case; 40 items) and 1.1-2.0x in 4 (text, 100-300
    items); on held-out items it was the lower one in 7 of 9."""
    d_out = n_tokens * (min(d, max_dim) // n_tokens)
    if not opq or n_train >= d_out:
        return opq, d_out
    warnings.warn(f"{n_train} items are fewer than the {d_out} output dimensions of the OPQ rotation (OPQ needs "
                  f"at least as many items as dimensions): using plain PQ over all {d} dimensions instead.",
                  stacklevel=4)
    return False, n_tokens * (d // n_tokens)


def duplicate_rows(x: np.ndarray) -> tuple[int, int]:
    """(rows that repeat an earlier row, distinct rows) of a 2-D array, compared bytewise."""
    rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    n_distinct = len(np.unique(rows))
    return len(rows) - n_distinct, n_distinct


def _degenerate_warning(x: np.ndarray, name: str, n_centroids: int) -> None:
    """Warn when many items share one feature vector: identical vectors get identical tokens (constant
    features: every item the same tokens)."""
    n_dup, n_distinct = duplicate_rows(x)
    k = min(n_centroids, 1 << int(np.floor(np.log2(max(len(x), 1)))))
    if n_distinct == 1:
        warnings.warn(f"{name}: all {len(x)} feature rows are identical (constant features): every item gets the "
                      "same tokens, so this modality tells items apart not at all. Fix: check the feature file.",
                      stacklevel=3)
    elif n_dup > 0.25 * len(x) or n_distinct < k:
        warnings.warn(f"{name}: {n_dup} of {len(x)} feature rows repeat another row ({n_distinct} distinct "
                      f"vectors for {k} centroids per sub-space): items with the same vector get the same tokens.",
                      stacklevel=3)


def _token_cache_problem(arrays: dict, n: int, d: int, n_tokens: int, n_centroids: int,
                         method: str = "opq") -> str | None:
    """What makes a token cache entry unusable for (n, d) features (None: it fits)."""
    c = arrays.get("centroids")
    problem = array_problem(arrays, "centroids", (n_tokens, None, None), "f")
    if problem is None:
        k, ds = c.shape[1], c.shape[2]
        if k < 2 or k & (k - 1) or k > n_centroids:
            return f"entry 'centroids' has {k} centroids per sub-space, expected a power of two <= {n_centroids}"
        problem = (array_problem(arrays, "rotation", (n_tokens * ds if method == "opq" else ds, d), "f")
                   or array_problem(arrays, "token_ids", (n, n_tokens), "iu", 0, k))
    return problem


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


def fit_tokenizer(features: np.ndarray, use_cache: bool = True, method: str = "opq",
                  **params) -> "PQTokenizer | RQTokenizer":
    """Fit (or load from the content-addressed cache) a tokenizer of ``method`` (:data:`TOKENIZER_METHODS`) for one
    feature matrix; ``params`` are its class's parameters."""
    tok = tokenizer_class(method)(**params)
    prefix = "pq-tokenizer" if method == "opq" else f"{method}-tokenizer"  # OPQ's keys as before
    key = content_key(prefix, TOKENIZER_VERSION, faiss.__version__, tok.params(), _as_f32(features))
    path = cache_dir() / "tokens" / f"{key}.npz"
    if use_cache:
        hit = load_npz(path, check=lambda a: _token_cache_problem(a, *np.shape(features), tok.n_tokens,
                                                                  tok.n_centroids, method))
        if hit is not None:
            tok.set_state(hit)
            tok.cached_token_ids = hit["token_ids"]  # type: ignore[attr-defined]
            tok.cache_path = path  # type: ignore[attr-defined]
            return tok
    tok.fit(features)
    if use_cache:
        save_npz(path, **tok.state(), token_ids=tok.encode(features))
    tok.cache_path = path  # type: ignore[attr-defined]
    return tok


def fit_tokenizers(dataset, n_tokens: int = N_TOKENS, modalities=None, use_cache: bool = True, items=None,
                   **params) -> dict[str, "PQTokenizer | RQTokenizer"]:
    """One fitted tokenizer per modality of ``dataset`` (no interactions are used). ``items``: indices of the items
    whose features it is fitted on (None: all items; a cold-start split passes its training items). ``params``:
    ``method`` (default ``"opq"``) and that tokenizer's parameters."""
    if isinstance(modalities, str):
        raise ValueError(f"modalities must be a list of modality names, e.g. [{modalities!r}], got the string "
                         f"{modalities!r}")
    mods = modalities or dataset.modalities
    if not mods:
        raise ValueError(f"dataset {dataset.name!r} has no modality features (<modality>_feat.npy) to tokenize")
    unknown = [m for m in mods if m not in dataset.features]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} for dataset {dataset.name!r}; it has "
                         f"{dataset.modalities}. Fix: modalities=None (all) or a list of those.")
    feats = {m: np.asarray(dataset.features[m]) for m in mods}
    if items is not None:
        feats = {m: x[np.asarray(items)] for m, x in feats.items()}
    for m, x in feats.items():
        name = f"dataset {dataset.name!r}, modality {m!r}" + ("" if items is None else f" ({len(x)} fitting items)")
        check_fit_input(x, n_tokens, params.get("n_centroids", PQTokenizer.n_centroids), name)
        _degenerate_warning(x, name, params.get("n_centroids", PQTokenizer.n_centroids))
    return {m: fit_tokenizer(x, use_cache=use_cache, n_tokens=n_tokens, **params) for m, x in feats.items()}


def tokenize(dataset, n_tokens: int = N_TOKENS, use_cache: bool = True, modalities=None, disambiguate: bool = False,
             items=None, **params) -> dict[str, np.ndarray]:
    """Token ids per modality: ``{modality: int64 array (n_items, n_tokens)}``. Cached by content + parameters.

    ``items``: fit the tokenizers on these items only (None: all); every item is encoded.
    ``disambiguate=True`` appends one position per modality that numbers the items sharing a full token tuple
    (:func:`disambiguate_codes`): every item then has distinct codes, shape (n_items, n_tokens + 1).
    """
    toks = fit_tokenizers(dataset, n_tokens=n_tokens, modalities=modalities, use_cache=use_cache, items=items,
                          **params)
    return encode_items(dataset, toks, disambiguate, use_cache and items is None)


def encode_items(dataset, tokenizers: dict, disambiguate: bool = False, use_cached: bool = False
                 ) -> dict[str, np.ndarray]:
    """Token ids of every item of ``dataset`` under fitted ``tokenizers`` ({modality: tokenizer}); ``use_cached``
    takes the ids a cache hit of :func:`fit_tokenizer` holds (fitted on these very features)."""
    out = {}
    for m, tok in tokenizers.items():
        cached = getattr(tok, "cached_token_ids", None) if use_cached else None  # checked when loaded
        ids = cached if cached is not None else tok.encode(dataset.features[m])
        out[m] = ids.astype(np.int64)
        if disambiguate:
            out[m] = disambiguate_codes(out[m], tok.k)
    return out


def tokenizer_state(tok) -> dict[str, np.ndarray]:
    """A fitted tokenizer as plain arrays (no pickles): ``method`` (its family, a key of
    :data:`TOKENIZER_METHODS`), ``K`` (centroids per position), ``D`` (positions) and the family's own arrays."""
    return {"method": np.array(tok.method), "K": np.array(tok.k), "D": np.array(tok.n_tokens), **tok.state()}


def tokenizer_from_state(arrays: dict[str, np.ndarray]):
    """The fitted tokenizer that :func:`tokenizer_state` wrote (nothing is fitted). A ValueError names the bad
    entry."""
    method = str(arrays.get("method", ""))
    cls = TOKENIZER_METHODS.get(method)
    if cls is None:
        raise ValueError(f"tokenizer method {method!r} is not one this motor knows ({sorted(TOKENIZER_METHODS)})")
    tok = cls.from_state({k: v for k, v in arrays.items() if k not in ("method", "K", "D")})
    if "K" in arrays and "D" in arrays and (int(arrays["K"]), int(arrays["D"])) != (tok.k, tok.n_tokens):
        raise ValueError(f"entries K={int(arrays['K'])}, D={int(arrays['D'])} do not match the arrays "
                         f"(K={tok.k}, D={tok.n_tokens})")
    return tok


def n_centroids_of(token_ids: dict[str, np.ndarray]) -> int:
    """Smallest power of two (at least 2) that holds every token id (the effective K of a tokenization)."""
    top = max(int(t.max()) for t in token_ids.values()) + 1
    k = 2
    while k < top:
        k *= 2
    return k


# ----------------------------------------------------------------------------------------------- diagnostics


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def token_stats(token_ids: dict[str, np.ndarray], n_centroids: int = 256) -> pd.DataFrame:
    """Per modality and position: tokens used (of K), entropy (bits, max log2 K), items per used token, and the
    modality's collision share (:func:`collision_share`, the same on every row of a modality)."""
    rows = []
    share = collision_share(token_ids)
    for m, ids in token_ids.items():
        for p in range(ids.shape[1]):
            counts = np.bincount(ids[:, p], minlength=n_centroids)
            used = counts[counts > 0]
            rows.append({"modality": m, "position": p, "tokens_used": int(len(used)), "K": n_centroids,
                         "entropy_bits": _entropy_bits(counts), "max_entropy_bits": float(np.log2(n_centroids)),
                         "items_per_token_median": float(np.median(used)), "items_per_token_max": int(used.max()),
                         "collision_share": share[m]})
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
    correlated, the clusters stay aligned, and items near that item get code j everywhere. Position tables are
    separate, so this is not a collision, but those items' positions carry correlated rather than independent
    information.
    """
    return {m: float((ids == ids[:, :1]).all(axis=1).mean()) for m, ids in token_ids.items() if ids.shape[1] > 1}


def _tuple_groups(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group index per item, group sizes) of the items' full code rows."""
    _, inverse, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
    return inverse.ravel(), counts


def collision_share(token_ids: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of items whose full token tuple is shared with at least one other item, per modality and over all
    modalities together (key ``"all"``). Such items get identical token inputs (identical vectors under ``ms`` /
    ``ma`` when every modality collides)."""
    n = len(next(iter(token_ids.values())))
    return {m: c / max(n, 1) for m, c in collisions(token_ids).items()}


def token_summary(token_ids: dict[str, np.ndarray], n_centroids: int | None = None) -> pd.DataFrame:
    """One row per modality and one for all modalities together: positions, tokens used per position (mean),
    collision share and count, the largest group of items with one code, and the share of items whose id is the
    same at every position (:func:`same_id_every_position`)."""
    k = n_centroids or n_centroids_of(token_ids)
    mats = dict(token_ids)
    mats["all"] = np.concatenate([token_ids[m] for m in sorted(token_ids)], axis=1)
    share, count, same = collision_share(token_ids), collisions(token_ids), same_id_every_position(token_ids)
    rows = []
    for m, ids in mats.items():
        _, sizes = _tuple_groups(ids)
        used = [len(np.unique(ids[:, p])) for p in range(ids.shape[1])]
        rows.append({"modality": m, "positions": ids.shape[1], "K": k, "tokens_used_mean": float(np.mean(used)),
                     "collision_share": share[m], "colliding_items": count[m], "largest_group": int(sizes.max()),
                     "same_id_every_position": same.get(m, float("nan"))})
    return pd.DataFrame(rows).set_index("modality")


def disambiguate_codes(ids: np.ndarray, n_centroids: int = 256) -> np.ndarray:
    """``ids`` (n, D) with one more column that numbers the items of each group sharing a full code row, in item
    order (0 for an item whose code is unique and for the first item of a group), so that every row is distinct,
    as semantic-ID recommenders do. The new position's vocabulary is the largest group size, which must not
    exceed ``n_centroids`` (the token tables' rows)."""
    ids = np.asarray(ids, dtype=np.int64)
    group, sizes = _tuple_groups(ids)
    if len(sizes) and sizes.max() > n_centroids:
        raise ValueError(f"disambiguate: {int(sizes.max())} items share one token code, more than K={n_centroids} "
                         "values of the extra position. Fix: use more tokens per modality (n_tokens) or a larger "
                         "n_centroids.")
    order = np.lexsort((np.arange(len(ids)), group))  # items sorted by group, then by item id
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids)) - np.repeat(starts, sizes)
    return np.concatenate([ids, rank[:, None]], axis=1)


def compare_collisions(dataset, n_tokens: int = 4, **params) -> pd.DataFrame:
    """:func:`token_summary` of the plain OPQ codes and of the disambiguated ones (:func:`disambiguate_codes`),
    index (codes, modality), with each modality's distortion, which is the same for both: the extra position
    carries no geometry."""
    toks = fit_tokenizers(dataset, n_tokens=n_tokens, **params)
    plain = tokenize(dataset, n_tokens, **params)
    dis = {m: disambiguate_codes(plain[m], t.k) for m, t in toks.items()}
    k = max(t.k for t in toks.values())
    out = pd.concat({"OPQ": token_summary(plain, k), "OPQ + disambiguation": token_summary(dis, k)},
                    names=["codes"]).drop(columns="same_id_every_position")  # not meaningful with the extra position
    dist = {m: t.distortion(dataset.features[m]) for m, t in toks.items()}
    out["distortion"] = [dist.get(m, np.nan) for m in out.index.get_level_values("modality")]
    return out


def compare_tokenizers(dataset, n_tokens: int = 4, methods=("opq", "rq"), **params) -> pd.DataFrame:
    """The tokenizer families side by side at one D x K budget: :func:`token_summary` of each ``method``'s codes
    (index (method, modality)) plus the mean entropy of a position's ids (bits, :func:`token_stats`) and each
    modality's distortion (the "all" rows: NaN). ``params``: shared parameters (``n_centroids``, ``seed``, ...)."""
    frames, k = {}, params.get("n_centroids", N_CENTROIDS)
    for method in methods:
        toks = fit_tokenizers(dataset, n_tokens=n_tokens, method=method, **params)
        ids = tokenize(dataset, n_tokens, method=method, **params)
        table = token_summary(ids, k)
        entropy = token_stats(ids, k).groupby("modality").entropy_bits.mean()
        table["entropy_bits_mean"] = [entropy.get(m, np.nan) for m in table.index]
        table["distortion"] = [toks[m].distortion(dataset.features[m]) if m in toks else np.nan
                               for m in table.index]
        frames[method] = table
    return pd.concat(frames, names=["method"])

