"""CPU kernels compiled with numba: fused passes where torch would make one pass over memory per operation.

On CPU a training step of the light backbones is bound by memory traffic, not arithmetic: BPR's loss on a batch of
2,048 (user, positive, negative) rows of width 64 is a dozen elementwise torch passes forward and backward, each
reading and writing (2048, 64) float32 matrices, plus the gathers and scatter-adds of the rows. These kernels do
the same arithmetic in one loop over the batch. They are serial (no threads), so their results do not depend on
the thread count; dot products use eight float32 partial sums in a fixed order, so they do not depend on the
machine's vector width either. Callers use them only for contiguous float32 CPU
tensors and keep the torch expression for every other case (CUDA, float64), which the tests compare against.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .cache import use_numba_cache

_JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy", "boundscheck": False}
_NUMBA_CACHE_BEFORE = use_numba_cache()  # compiled kernels go to motor's cache folder; restored at the end

PENALTY_L2, PENALTY_NORM, PENALTY_NONE = 0, 1, 2  # motor's l2_reg, MMRec's emb_loss, no penalty


@numba.njit(**_JIT)
def _softplus_neg(x: float) -> float:
    """log(1 + exp(-x)) = -log sigmoid(x), stable for large |x|."""
    return max(-x, 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(**_JIT)
def _sigmoid_neg(x: float) -> float:
    """sigmoid(-x), stable for large |x|."""
    if x >= 0:
        e = math.exp(-x)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(x))


@numba.njit(**_JIT)
def _diff_dot(a, b, c) -> float:
    """a . (b - c) for float32 rows of equal length: eight float32 partial sums (a fixed order, so the result
    does not depend on the machine's vector width), reduced pairwise."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    d = a.shape[0]
    k = 0
    while k + 8 <= d:
        s0 += a[k] * (b[k] - c[k])
        s1 += a[k + 1] * (b[k + 1] - c[k + 1])
        s2 += a[k + 2] * (b[k + 2] - c[k + 2])
        s3 += a[k + 3] * (b[k + 3] - c[k + 3])
        s4 += a[k + 4] * (b[k + 4] - c[k + 4])
        s5 += a[k + 5] * (b[k + 5] - c[k + 5])
        s6 += a[k + 6] * (b[k + 6] - c[k + 6])
        s7 += a[k + 7] * (b[k + 7] - c[k + 7])
        k += 8
    while k < d:
        s0 += a[k] * (b[k] - c[k])
        k += 1
    return float(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))


@numba.njit(**_JIT)
def _dot(a, b) -> float:
    """a . b for float32 rows of equal length, in the order of :func:`_diff_dot`."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    d = a.shape[0]
    k = 0
    while k + 8 <= d:
        s0 += a[k] * b[k]
        s1 += a[k + 1] * b[k + 1]
        s2 += a[k + 2] * b[k + 2]
        s3 += a[k + 3] * b[k + 3]
        s4 += a[k + 4] * b[k + 4]
        s5 += a[k + 5] * b[k + 5]
        s6 += a[k + 6] * b[k + 6]
        s7 += a[k + 7] * b[k + 7]
        k += 8
    while k < d:
        s0 += a[k] * b[k]
        k += 1
    return float(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))


@numba.njit(**_JIT)
def _sum_sq(tab, index) -> float:
    """Sum of the squares of the rows ``tab[index]``: per row eight float32 partial sums, rows summed in float64."""
    total = 0.0
    for r in range(index.shape[0]):
        total += _dot(tab[index[r]], tab[index[r]])
    return total


@numba.njit(**_JIT)
def bpr_tables(u_tab, i_tab, users, pos, neg, reg, form, du, di):
    """BPR + ``reg`` x penalty of the rows ``u_tab[users]``, ``i_tab[pos]``, ``i_tab[neg]``, and its gradients.

    Loss = mean_b softplus(-u_b . (p_b - n_b)) + reg * penalty (``form``: PENALTY_L2 = sum of squared row norms / B,
    PENALTY_NORM = (|U|_F + |P|_F + |N|_F) / B, PENALTY_NONE). The gradients with respect to the tables are
    accumulated into ``du`` and ``di`` (zero-initialised, shaped like the tables), so no (B, d) row matrix is
    ever gathered or scattered. Returns the loss.
    """
    b = users.shape[0]
    d = u_tab.shape[1]
    pen = 0.0
    cu = cp = cn = 0.0
    if form != PENALTY_NONE and reg != 0.0:
        su, sp, sn = _sum_sq(u_tab, users), _sum_sq(i_tab, pos), _sum_sq(i_tab, neg)
        if form == PENALTY_L2:  # sum of squared row norms / B: gradient 2 x / B
            pen = (su + sp + sn) / b
            cu = cp = cn = 2.0 * reg / b
        else:  # |E|_F / B per matrix: gradient E / (|E|_F B); zero where the norm is zero, as torch's
            nu, npos, nneg = math.sqrt(su), math.sqrt(sp), math.sqrt(sn)
            pen = (nu + npos + nneg) / b
            cu = reg / (b * nu) if nu > 0 else 0.0
            cp = reg / (b * npos) if npos > 0 else 0.0
            cn = reg / (b * nneg) if nneg > 0 else 0.0
    cu32, cp32, cn32 = np.float32(cu), np.float32(cp), np.float32(cn)
    total = 0.0
    for r in range(b):
        ur, pr, nr = u_tab[users[r]], i_tab[pos[r]], i_tab[neg[r]]
        x = _diff_dot(ur, pr, nr)
        total += _softplus_neg(x)
        w = np.float32(-_sigmoid_neg(x) / b)
        dur, dpr, dnr = du[users[r]], di[pos[r]], di[neg[r]]
        for k in range(d):
            uk, pk, nk = ur[k], pr[k], nr[k]
            dur[k] += w * (pk - nk) + cu32 * uk
            dpr[k] += w * uk + cp32 * pk
            dnr[k] += cn32 * nk - w * uk
    return total / b + reg * pen


@numba.njit(**_JIT)
def bpr_rows(u, p, n, du, dp, dn):
    """mean_b softplus(-u_b . (p_b - n_b)) of (B, d) row matrices and its gradients written into ``du``, ``dp``,
    ``dn`` (same shapes): du = w (p - n), dp = w u, dn = -w u with w_b = -sigmoid(-x_b) / B. Returns the loss."""
    b, d = u.shape
    total = 0.0
    for r in range(b):
        x = _diff_dot(u[r], p[r], n[r])
        total += _softplus_neg(x)
        w = np.float32(-_sigmoid_neg(x) / b)
        for k in range(d):
            uk = u[r, k]
            du[r, k] = w * (p[r, k] - n[r, k])
            dp[r, k] = w * uk
            dn[r, k] = -w * uk
    return total / b


def as_array(t) -> np.ndarray:
    """The numpy view of a contiguous CPU tensor (no copy), detached."""
    return t.detach().numpy()


# Rational minimax approximation of tanh on [-c, c] (odd degree-13 numerator, even degree-6 denominator; Eigen's
# float tanh): branch-free, so the loops that use it vectorise; within a few float32 ulps of tanh (tested).
_TANH_CLAMP, _TANH_TINY = np.float32(7.90531110763549805), np.float32(0.0004)
_A1, _A3, _A5, _A7 = (np.float32(c) for c in (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05,
                                              5.12229709037114e-08))
_A9, _A11, _A13 = (np.float32(c) for c in (-8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(c) for c in (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04,
                                              1.19825839466702e-06))


@numba.njit(**_JIT)
def tanh32(x):
    """tanh of a float32 in float32 arithmetic (the approximation above); NaN stays NaN."""
    if abs(x) < _TANH_TINY:
        return x
    a = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    a2 = a * a
    p = ((((((_A13 * a2 + _A11) * a2 + _A9) * a2 + _A7) * a2 + _A5) * a2 + _A3) * a2 + _A1) * a
    q = ((_B6 * a2 + _B4) * a2 + _B2) * a2 + _B0
    return p / q


@numba.njit(**_JIT)
def tanh_array(x, out) -> None:
    """``out = tanh32(x)`` elementwise for 1-d float32 arrays (for tests and callers outside the kernels)."""
    for k in range(x.shape[0]):
        out[k] = tanh32(x[k])


@numba.njit(**_JIT)
def _add(acc, x) -> None:
    """acc += x for 1-d float32 arrays of equal length (one loop per pair, so the compiler can vectorise it)."""
    for k in range(acc.shape[0]):
        acc[k] += x[k]


@numba.njit(**_JIT)
def tcn_forward(tables, w, proj, bias, ids, starts, one, t, out) -> None:
    """The all-items Token Cross Network with one-layer tanh networks (:class:`motor.tcn._TanhCross`), forward.

    ``tables`` (R, d) token rows (R = P K), ``w`` (P,) position weights, ``proj`` (R, d) each row's first-layer
    block product ``W_x e``, ``bias`` (M, d) each bag's layer bias, ``ids`` (n, P) each item's token rows, ``starts``
    (M + 1,) bag m = positions ``starts[m]:starts[m + 1]``. Per item and bag, one pass over its tokens sums
    ``one = sum w_x e``, ``sq = sum (w_x e)^2`` and ``pre = sum W_x e``; then ``t = tanh(pre + b)`` and the bag's
    ``one + (one^2 - sq) / 2 + t`` is added to ``out`` (n, d, zero-initialised). ``one`` and ``t`` (n, M, d) are
    written for the backward. Items, bags and positions are visited in order (serial, a fixed summation order).
    Rows are indexed in place, not sliced: a slice in the inner loop costs a reference count."""
    n, d = out.shape
    half = np.float32(0.5)
    acc_one, acc_sq, acc_pre = np.empty(d, np.float32), np.empty(d, np.float32), np.empty(d, np.float32)
    for i in range(n):
        for m in range(starts.shape[0] - 1):
            for k in range(d):
                acc_one[k] = acc_sq[k] = acc_pre[k] = 0
            for x in range(starts[m], starts[m + 1]):
                r, wx = ids[i, x], w[x]
                for k in range(d):
                    s = wx * tables[r, k]
                    acc_one[k] += s
                    acc_sq[k] += s * s
                for k in range(d):
                    acc_pre[k] += proj[r, k]
            for k in range(d):
                o, tk = acc_one[k], tanh32(acc_pre[k] + bias[m, k])
                one[i, m, k] = o
                t[i, m, k] = tk
                out[i, k] += o + half * o * o - half * acc_sq[k] + tk


@numba.njit(**_JIT)
def tcn_backward(tables, w, ids, starts, one, t, g, g_scaled, g_proj, g_bias) -> None:
    """Backward of :func:`tcn_forward` down to the token rows.

    ``g`` (n, d) gradient of ``out``; ``one``, ``t`` (n, M, d) from the forward. Accumulates into zero-initialised
    ``g_scaled`` (R, d), the gradient of each row's ``w_x e`` (through ``one``: ``g (1 + one)``, and through
    ``sq``: ``-g/2 x 2 w_x e``), ``g_proj`` (R, d), that of its ``W_x e`` (``g (1 - t^2)``), and ``g_bias`` (M, d).
    Items are visited in order, so every row sums its items in ascending order (serial, a fixed summation order)."""
    n, d = g.shape
    g_one, g_pre = np.empty(d, dtype=np.float32), np.empty(d, dtype=np.float32)
    for i in range(n):
        for m in range(starts.shape[0] - 1):
            for k in range(d):
                gk, tk = g[i, k], t[i, m, k]
                g_one[k] = gk + gk * one[i, m, k]
                g_pre[k] = gk - gk * (tk * tk)
                g_bias[m, k] += g_pre[k]
            for x in range(starts[m], starts[m + 1]):
                r, wx = ids[i, x], w[x]
                for k in range(d):
                    g_scaled[r, k] += g_one[k] - (wx * tables[r, k]) * g[i, k]
                for k in range(d):
                    g_proj[r, k] += g_pre[k]


@numba.njit(**_JIT)
def tcn_token_grads(tables, w, g_scaled, g_tables, g_w) -> None:
    """The token-level end of the backward: ``g_tables += w_x g_scaled`` (R, d; ``g_tables`` holds the part through
    the first layer) and ``g_w[x] = sum_rows g_scaled . e`` (P,) over position x's K rows; per row eight float32
    partial sums, rows summed in float64 (a fixed order)."""
    n_pos = w.shape[0]
    k_rows, d = tables.shape[0] // n_pos, tables.shape[1]
    for x in range(n_pos):
        wx = w[x]
        total = 0.0
        for r in range(x * k_rows, (x + 1) * k_rows):
            for k in range(d):
                g_tables[r, k] += wx * g_scaled[r, k]
            total += _dot(g_scaled[r], tables[r])
        g_w[x] = total


@numba.njit(**_JIT)
def _worse(va, ja, vb, jb) -> bool:
    """Whether (score va, column ja) ranks below (vb, jb): a lower score, or an equal score and a later column."""
    return va < vb or (va == vb and ja > jb)


@numba.njit(**_JIT)
def _sift_down(vals, idx, k) -> None:
    """Restore the heap (worst entry at the root) after the root was replaced."""
    i = 0
    while True:
        c = 2 * i + 1
        if c >= k:
            return
        if c + 1 < k and _worse(vals[c + 1], idx[c + 1], vals[c], idx[c]):
            c += 1
        if not _worse(vals[c], idx[c], vals[i], idx[i]):
            return
        vals[i], vals[c] = vals[c], vals[i]
        idx[i], idx[c] = idx[c], idx[i]
        i = c


@numba.njit(**_JIT)
def _sift_up(vals, idx, i) -> None:
    """Restore the heap after appending entry ``i``."""
    while i > 0:
        p = (i - 1) // 2
        if not _worse(vals[i], idx[i], vals[p], idx[p]):
            return
        vals[i], vals[p] = vals[p], vals[i]
        idx[i], idx[p] = idx[p], idx[i]
        i = p


@numba.njit(**_JIT)
def _topk_row(s, k, mask_indices, p, p_end, vals, idx) -> int:
    """The ``k`` best unmasked columns of one score row ``s`` into ``vals``/``idx`` (best first); returns how many.

    A k-entry heap whose root is the worst kept entry; a column enters only with a score strictly above the
    root's, so among equal scores the lower column ranks first. ``mask_indices[p:p_end]`` (sorted) are skipped;
    NaN scores are never kept.
    """
    m = s.shape[0]
    count = 0
    thr = vals[0]
    start = 0
    while start < m:
        stop = mask_indices[p] if p < p_end else m  # the unmasked run start:stop
        j = start
        while count < k and j < stop:  # filling the heap
            v = s[j]
            if v == v:
                vals[count] = v
                idx[count] = j
                _sift_up(vals, idx, count)
                count += 1
                thr = vals[0]
            j += 1
        while j < stop:  # the common case: one comparison per column
            v = s[j]
            if v > thr:
                vals[0] = v
                idx[0] = j
                _sift_down(vals, idx, k)
                thr = vals[0]
            j += 1
        start = stop + 1
        p += 1
    for a in range(count):  # best first: insertion sort of the kept entries
        v, j = vals[a], idx[a]
        b = a
        while b > 0 and _worse(vals[b - 1], idx[b - 1], v, j):
            vals[b] = vals[b - 1]
            idx[b] = idx[b - 1]
            b -= 1
        vals[b] = v
        idx[b] = j
    return count


@numba.njit(**_JIT)
def topk_masked(scores, k, mask_indptr, mask_indices, out):
    """Per row of ``scores`` (n, m): the ``k`` highest-scoring columns, best first, skipping the row's masked
    columns (CSR ``mask_indptr``/``mask_indices``, row i of the mask for row i of the scores, indices sorted).

    Among equal scores the lower column ranks first (a fixed, documented order, where ``torch.topk`` leaves ties
    in no specified order). When a row has fewer than k unmasked columns the list is completed with its masked
    columns in ascending order (they score -inf for the caller). NaN scores are never selected. Writes ``out``
    (n, k) int64.
    """
    n = scores.shape[0]
    vals = np.empty(k, dtype=scores.dtype)
    idx = np.empty(k, dtype=np.int64)
    for r in range(n):
        p, p_end = mask_indptr[r], mask_indptr[r + 1]
        count = _topk_row(scores[r], k, mask_indices, p, p_end, vals, idx)
        row = out[r]
        for a in range(count):
            row[a] = idx[a]
        while count < k and p < p_end:
            row[count] = mask_indices[p]
            count += 1
            p += 1


@numba.njit(**_JIT)
def _is_masked(mask_indices, p, p_end, j) -> bool:
    """Whether column ``j`` is in the sorted ``mask_indices[p:p_end]`` (binary search)."""
    lo, hi = p, p_end
    while lo < hi:
        mid = (lo + hi) // 2
        if mask_indices[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo < p_end and mask_indices[lo] == j


@numba.njit(**_JIT)
def _count_equal(s, v, mask_indices, p, p_end) -> int:
    """How many unmasked columns of ``s`` score exactly ``v``."""
    m = s.shape[0]
    n_eq = 0
    start = 0
    while start < m:
        stop = mask_indices[p] if p < p_end else m
        for j in range(start, stop):
            if s[j] == v:
                n_eq += 1
        start = stop + 1
        p += 1
    return n_eq


@numba.njit(**_JIT)
def held_ranks(scores, k, mask_indptr, mask_indices, held_indptr, held_indices, top_scores, above, tied, first):
    """Where each row's held-out columns rank among its unmasked columns, ties kept as ties.

    ``scores`` (n, m); ``mask_*`` and ``held_*``: CSR rows (sorted indices) for the same n rows. For every held
    entry e (column j of row r) whose score is at least the row's k-th best unmasked score: ``above[e]`` =
    unmasked columns scoring strictly higher, ``tied[e]`` = unmasked columns scoring exactly the same (j
    included), ``first[e]`` = its rank when ties go to the lower column (-1 beyond k). Out of reach (a lower
    score, masked, NaN): above = first = -1, tied = 0. ``top_scores`` (n, k + 1) receives each row's k + 1 best
    unmasked scores, best first (-inf where a row has fewer columns), which show ties at a cut-off.
    """
    n = scores.shape[0]
    vals = np.empty(k + 1, dtype=scores.dtype)
    idx = np.empty(k + 1, dtype=np.int64)
    for r in range(n):
        s = scores[r]
        p, p_end = mask_indptr[r], mask_indptr[r + 1]
        count = _topk_row(s, k + 1, mask_indices, p, p_end, vals, idx)
        for a in range(k + 1):
            top_scores[r, a] = vals[a] if a < count else -np.inf
        n_list = min(count, k)  # the top-k list: every column scoring above the k-th best score is in it
        short = count < k  # fewer than k unmasked columns: the list holds them all
        kth = vals[k - 1] if not short else vals[0]
        n_kth = -1  # unmasked columns scoring exactly the k-th best score, counted once when needed
        for e in range(held_indptr[r], held_indptr[r + 1]):
            j = held_indices[e]
            above[e] = -1
            tied[e] = 0
            first[e] = -1
            v = s[j]
            if v != v or _is_masked(mask_indices, p, p_end, j) or (not short and v < kth):
                continue
            n_gt = 0
            n_eq = 0
            for a in range(n_list):
                if vals[a] > v:
                    n_gt += 1
                elif vals[a] == v:
                    n_eq += 1
                if idx[a] == j:
                    first[e] = a
            if not short and v == kth:  # its tie group may run past the list: count it in the whole row
                if n_kth < 0:
                    n_kth = _count_equal(s, kth, mask_indices, p, p_end)
                n_eq = n_kth
            above[e] = n_gt
            tied[e] = n_eq


numba.config.CACHE_DIR = _NUMBA_CACHE_BEFORE  # other packages' numba caches stay where they were
