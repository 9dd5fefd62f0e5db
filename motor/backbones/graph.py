"""Graph utilities shared by every graph backbone (written once, here).

* :func:`bipartite_edges` / :func:`normalized_adjacency` — the symmetric-normalised user-item adjacency
  ``D^-1/2 A D^-1/2`` of the (users + items) graph as a torch sparse COO tensor; :func:`propagate` multiplies with
  it through :func:`motor.sparse.spmm` (cached CSR of A and A^T).
* :func:`degree_sensitive_dropout` — keep a fraction of edges sampled with probability proportional to
  ``1/sqrt(d_u d_i)`` (LayerGCN / FREEDOM), then re-normalise.
* :func:`knn_graph` — top-k cosine item-item graph, vectorised in chunks, never an n x n dense matrix;
  :func:`cached_knn_graph` — the same, cached on disk by a hash of the features and parameters.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..cache import array_problem, cache_dir, content_key, load_npz, save_npz
from ..sparse import csr_mm, csr_pair, spmm


def bipartite_edges(train: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, item) index tensors of the train interactions."""
    coo = train.tocoo()
    return torch.as_tensor(coo.row, dtype=torch.long), torch.as_tensor(coo.col, dtype=torch.long)


def sym_norm_values(rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
    """1/sqrt(deg_r deg_c) for each edge of a symmetric edge list over n nodes."""
    deg = torch.bincount(rows, minlength=n).float()
    inv = deg.pow(-0.5)
    inv[torch.isinf(inv)] = 0.0
    return inv[rows] * inv[cols]


def adjacency_from_edges(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """Symmetric-normalised (n_users + n_items)^2 sparse adjacency from (user, item) edges."""
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    vals = sym_norm_values(rows, cols, n)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    u, i = bipartite_edges(train)
    return adjacency_from_edges(u, i, train.shape[0], train.shape[1])


def degree_sensitive_dropout(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int, rate: float,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Adjacency over a (1 - rate) sample of the edges, drawn without replacement with weight 1/sqrt(d_u d_i)."""
    if rate <= 0:
        return adjacency_from_edges(users, items, n_users, n_items)
    du = torch.bincount(users, minlength=n_users).float()
    di = torch.bincount(items, minlength=n_items).float()
    weight = (du[users] * di[items]).rsqrt()
    keep = int(len(users) * (1.0 - rate))
    idx = torch.multinomial(weight, keep, replacement=False, generator=generator)
    return adjacency_from_edges(users[idx], items[idx], n_users, n_items)


class PrunedAdjacency(torch.nn.Module):
    """The full normalised adjacency (``full``, for evaluation) and a degree-sensitive sample of it (``pruned``,
    redrawn by :meth:`resample` each epoch) — LayerGCN's edge dropout and FREEDOM's edge pruning."""

    def __init__(self, train: sp.csr_matrix, rate: float):
        super().__init__()
        self.rate, self.n_users, self.n_items = rate, train.shape[0], train.shape[1]
        u, i = bipartite_edges(train)
        self.register_buffer("edge_users", u, persistent=False)
        self.register_buffer("edge_items", i, persistent=False)
        self.register_buffer("full", adjacency_from_edges(u, i, self.n_users, self.n_items), persistent=False)
        self.register_buffer("pruned", self.full, persistent=False)

    def resample(self, generator: torch.Generator) -> None:
        """Draw a new pruned graph from ``generator`` (on CPU, then moved to the graph's device)."""
        self.pruned = degree_sensitive_dropout(self.edge_users.cpu(), self.edge_items.cpu(), self.n_users,
                                               self.n_items, self.rate, generator).to(self.full.device)


def propagate(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """[E_0, A E_0, A^2 E_0, ...] (n_layers + 1 tensors)."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(spmm(adj, layers[-1]))
    return layers


class _LayerMean(torch.autograd.Function):
    """mean(E, A E, ..., A^L E), or only its rows ``rows`` together with E[rows], with a hand-written backward.

    Forward: h_1 = s A E and h_l = A h_{l-1} (s = 1/(L+1) folded into the first product), summed in place into the
    last product. Backward, by linearity: dE = s G + s A^T G + ... + s (A^T)^L G, the same recurrence with A^T. With
    ``rows`` the output is a gather and the incoming gradient is scattered once into G (the last layer itself is
    still computed in full: its rows need all of the previous layer). Autograd's version of the same sum spent most
    of a LightGCN step on full-size adds, divisions and gradient accumulations, not on the sparse products.
    """

    @staticmethod
    def forward(ctx, ego, a, a_t, n_layers, rows):
        s = 1.0 / (n_layers + 1)
        ctx.a_t, ctx.n_layers, ctx.n = a_t, n_layers, ego.shape[0]
        ctx.save_for_backward(*([] if rows is None else [rows]))
        hs = [csr_mm(a, ego, s)]
        for _ in range(n_layers - 1):
            hs.append(csr_mm(a, hs[-1]))
        if rows is None:
            acc = hs[-1]
            for h in hs[:-1]:
                acc.add_(h)
            return acc.add_(ego, alpha=s), ego.new_empty(0)
        ego_rows = ego.index_select(0, rows)
        acc = ego_rows * s
        for h in hs:
            acc.add_(h.index_select(0, rows))
        return acc, ego_rows

    @staticmethod
    def backward(ctx, g, g_ego_rows):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        s, rows = 1.0 / (ctx.n_layers + 1), (ctx.saved_tensors or [None])[0]
        if rows is not None:  # scatter the row gradients once; the s * G term is added back sparsely below
            big = g.new_zeros(ctx.n, g.shape[1]).index_add_(0, rows, g)
        else:
            big = g.contiguous()
        ts = [csr_mm(ctx.a_t, big, s)]
        for _ in range(ctx.n_layers - 1):
            ts.append(csr_mm(ctx.a_t, ts[-1]))
        grad = ts[-1]
        for t in ts[:-1]:
            grad.add_(t)
        if rows is None:
            return grad.add_(big, alpha=s), None, None, None, None
        # gradients of unused outputs arrive as zeros (autograd materialises them)
        return grad.index_add_(0, rows, torch.add(g_ego_rows, g, alpha=s)), None, None, None, None


def layer_mean(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """mean(E_0, A E_0, ..., A^L E_0) — LightGCN's layer combination (fused; see :class:`_LayerMean`)."""
    if n_layers == 0:
        return ego
    if adj.requires_grad:  # a learned adjacency: let autograd differentiate the products
        return torch.stack(propagate(adj, ego, n_layers)).mean(0)
    return _LayerMean.apply(ego, *csr_pair(adj), n_layers, None)[0]


def layer_mean_rows(adj: torch.Tensor, ego: torch.Tensor, n_layers: int,
                    rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(layer_mean(adj, ego, n_layers)[rows], ego[rows])`` without materialising the full mean or its gradient
    (LightGCN's loss reads only the batch rows)."""
    if n_layers == 0 or adj.requires_grad:
        return layer_mean(adj, ego, n_layers).index_select(0, rows), ego.index_select(0, rows)
    return _LayerMean.apply(ego, *csr_pair(adj), n_layers, rows)


def knn_graph(features: np.ndarray | torch.Tensor, k: int = 10, chunk: int = 4096,
              normalize: str = "sym") -> torch.Tensor:
    """Sparse (n, n) item-item graph keeping each item's top-k cosine neighbours (self excluded).

    ``normalize``: ``"sym"`` -> D^-1/2 A D^-1/2 of the 0/1 kNN graph (FREEDOM, LATTICE); ``"none"`` -> 0/1 entries.
    Memory is O(chunk * n), never n * n.
    """
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = x.shape[0]
    k = min(k, n - 1)
    rows, cols = [], []
    for s in range(0, n, chunk):
        sim = x[s:s + chunk] @ x.T
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -float("inf")
        top = sim.topk(k, dim=1).indices
        rows.append(torch.arange(s, s + sim.shape[0]).repeat_interleave(k))
        cols.append(top.reshape(-1))
    r, c = torch.cat(rows), torch.cat(cols)
    if normalize == "sym":
        deg = torch.bincount(r, minlength=n).float()
        vals = deg[r].rsqrt() * deg[c].rsqrt()
    else:
        vals = torch.ones(len(r))
    return torch.sparse_coo_tensor(torch.stack([r, c]), vals, (n, n), check_invariants=False).coalesce()


def cached_knn_graph(features: np.ndarray | torch.Tensor, k: int = 10, normalize: str = "sym",
                     chunk: int = 4096) -> torch.Tensor:
    """:func:`knn_graph`, stored on disk under ``cache_dir()/knn`` keyed by the feature bytes and every parameter.

    The key hashes the float32 feature matrix itself (not a dataset name), so changing any feature value
    rebuilds the graph; files are written atomically, an unreadable file is rebuilt.
    """
    x = np.ascontiguousarray(np.asarray(features.detach().cpu() if torch.is_tensor(features) else features,
                                        dtype=np.float32))
    key = content_key("knn-graph", 1, {"k": int(k), "normalize": normalize}, x)
    path = cache_dir() / "knn" / f"{key}.npz"
    n = x.shape[0]
    nnz = n * min(k, n - 1)  # every item keeps exactly k neighbours
    hit = load_npz(path, check=lambda a: array_problem(a, "indices", (2, nnz), "i", 0, n)
                   or array_problem(a, "values", (nnz,), "f", 0.0, 1.0 + 1e-6))
    if hit is not None:  # checksum, shapes and index ranges checked: safe without sparse invariant checks
        return torch.sparse_coo_tensor(torch.from_numpy(hit["indices"]), torch.from_numpy(hit["values"]), (n, n),
                                       check_invariants=False).coalesce()
    graph = knn_graph(x, k=k, chunk=chunk, normalize=normalize)
    save_npz(path, indices=graph.indices().numpy(), values=graph.values().numpy())
    return graph
