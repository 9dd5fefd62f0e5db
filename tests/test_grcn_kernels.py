"""GRCN's hand-written edge functions equal their plain torch definitions, in value and gradient (float64).

The edge pattern has an isolated user, an item without users and users and items of several edges, so a missing
transpose, a wrong edge order or an unnormalised group shows.
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import motor
from motor.backbones import build
from motor.backbones.grcn import EdgePattern, EdgeScores, ToItems, ToUsers, segment_softmax
from motor.item_repr import build_item_repr

N_USERS, N_ITEMS, DIM = 6, 5, 3
# (user, item) edges: user 3 has none, item 2 has none; given out of order on purpose
EDGES = [(5, 4), (0, 1), (0, 3), (1, 0), (2, 1), (2, 3), (2, 4), (4, 0), (4, 1), (4, 3), (0, 0), (5, 1)]


def pattern_of(train: sp.csr_matrix) -> tuple[EdgePattern, torch.Tensor, torch.Tensor]:
    """The EdgePattern of a (users x items) matrix, and the (user, item) of each edge in its edge order."""
    train = train.tocsr(copy=True)
    train.sort_indices()
    n_users, n_items = train.shape
    users = np.repeat(np.arange(n_users), np.diff(train.indptr))
    perm = np.argsort(train.indices, kind="stable")
    item_crow = np.concatenate([[0], np.cumsum(np.bincount(train.indices, minlength=n_items))])
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    g = EdgePattern(t(train.indptr), t(train.indices), t(item_crow), t(perm), t(users[perm]), n_users, n_items)
    return g, t(users), t(train.indices)


@pytest.fixture
def edges():
    u, i = zip(*EDGES)
    g, eu, ei = pattern_of(sp.csr_matrix((np.ones(len(EDGES)), (u, i)), shape=(N_USERS, N_ITEMS)))
    return g, eu, ei


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_pattern_matrices_match_the_edges(edges):
    g, eu, ei = edges
    values = _rand(len(eu))
    dense = torch.zeros(N_USERS, N_ITEMS, dtype=torch.float64)
    dense[eu, ei] = values
    torch.testing.assert_close(g.by_user(values).to_dense(), dense)
    torch.testing.assert_close(g.by_item(values).to_dense(), dense.T)
    a, b = _rand(N_USERS, DIM, seed=1), _rand(N_ITEMS, DIM, seed=2)
    torch.testing.assert_close(g.sddmm(a, b), (a[eu] * b[ei]).sum(1))


def _check(fn, reference, inputs, upstream):
    """Value and gradient of ``fn`` against ``reference`` on the same float64 inputs, then gradcheck of ``fn``."""
    ours = [x.clone().requires_grad_() for x in inputs]
    ref = [x.clone().requires_grad_() for x in inputs]
    got, want = fn(*ours), reference(*ref)
    torch.testing.assert_close(got, want)
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)
    assert torch.autograd.gradcheck(fn, tuple(x.clone().requires_grad_() for x in inputs))


def test_edge_scores_equal_row_dot_products(edges):
    g, eu, ei = edges
    _check(lambda p, f: EdgeScores.apply(p, f, g), lambda p, f: (p[eu] * f[ei]).sum(1),
           [_rand(N_USERS, DIM, seed=1), _rand(N_ITEMS, DIM, seed=2)], _rand(len(eu), seed=3))


def test_to_users_equals_index_add_of_weighted_item_rows(edges):
    g, eu, ei = edges

    def reference(values, f):
        return torch.zeros(N_USERS, DIM, dtype=f.dtype).index_add(0, eu, values[:, None] * f[ei])

    _check(lambda values, f: ToUsers.apply(values, f, g), reference,
           [_rand(len(eu), seed=4), _rand(N_ITEMS, DIM, seed=5)], _rand(N_USERS, DIM, seed=6))


def test_to_items_equals_index_add_of_weighted_user_rows(edges):
    g, eu, ei = edges

    def reference(values, p):
        return torch.zeros(N_ITEMS, DIM, dtype=p.dtype).index_add(0, ei, values[:, None] * p[eu])

    _check(lambda values, p: ToItems.apply(values, p, g), reference,
           [_rand(len(eu), seed=7), _rand(N_USERS, DIM, seed=8)], _rand(N_ITEMS, DIM, seed=9))


@pytest.mark.parametrize("by", ["user", "item"])
def test_segment_softmax_equals_softmax_per_group(edges, by):
    g, eu, ei = edges
    index, n = (eu, N_USERS) if by == "user" else (ei, N_ITEMS)

    def reference(scores):
        out = torch.zeros_like(scores)
        for k in range(n):
            members = torch.nonzero(index == k).flatten()
            if len(members):
                out = out.index_put((members,), torch.softmax(scores[members], 0))
        return out

    scores = _rand(len(index), seed=10) * 5
    scores[0] = 800.0  # a large score: the per-group shift keeps exp finite
    _check(lambda s: segment_softmax(s, index, n), reference, [scores], _rand(len(index), seed=11))
    sums = torch.zeros(n, dtype=torch.float64).index_add(0, index, segment_softmax(scores, index, n))
    present = torch.bincount(index, minlength=n) > 0
    torch.testing.assert_close(sums[present], torch.ones(int(present.sum()), dtype=torch.float64))


def test_grcn_builds_the_pattern_of_its_training_matrix():
    ds = motor.synthetic(n_users=40, n_items=30, n_interactions=200, seed=2)
    model = build("grcn", ds, build_item_repr("id", ds.n_items, 8), dim=8, content_dim=8)
    g = model.pattern()
    ones = torch.ones(ds.train.nnz)
    torch.testing.assert_close(g.by_user(ones).to_dense(), torch.as_tensor(ds.train.toarray(), dtype=torch.float32))
    torch.testing.assert_close(g.by_item(ones).to_dense(), torch.as_tensor(ds.train.toarray().T, dtype=torch.float32))
    dense = torch.as_tensor(ds.train.toarray(), dtype=torch.float32)
    assert (dense[model.edge_users, model.edge_items] == 1).all()  # the edge lists name the same edges
