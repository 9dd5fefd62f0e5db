"""Losses and the small kernels backbones share: BPR (fused), InfoNCE (fused), L2 penalties (motor's and
MMRec's), row normalisation, dropout masks, row gathers. Each hand-written backward is tested against the torch
expression it replaces (``tests/test_building_blocks.py``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..perf import numba_kernels_apply


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout (zero with probability ``p``, scale the rest by 1/(1-p)) from the global torch RNG.

    Same distribution as ``F.dropout`` up to p's resolution of 2^-16: the mask takes four 16-bit uniforms from each
    64-bit draw of torch's generator, a quarter of the draws of one per element (faster on CPU than ``bernoulli_``;
    BM3 draws four masks a step).
    """
    if not training or p <= 0:
        return x
    if p >= 1:
        return torch.zeros_like(x)
    n = x.numel()
    bits = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    u16 = bits.view(torch.int16)[:n].view(x.shape)  # uniform on [-2^15, 2^15)
    keep = u16 >= int(round(p * (1 << 16))) - (1 << 15)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))  # torch.where is about 3x slower here


class _DiagonalCrossEntropy(torch.autograd.Function):
    """mean_i [logsumexp_j z_ij - z_ii] with one exp pass: the softmax kept from the forward is the backward."""

    @staticmethod
    def forward(ctx, logits):
        top = logits.amax(1, keepdim=True)
        # exp of anything below -87 is a float32 denormal, computed ~20x slower on x86; e^-80 ~ 1e-35 is zero anyway
        prob = (logits - top).clamp_(min=-80.0).exp_()
        total = prob.sum(1, keepdim=True)
        loss = (total.log() + top).squeeze(1) - logits.diagonal()
        ctx.save_for_backward(prob.div_(total))
        return loss.mean()

    @staticmethod
    def backward(ctx, grad):
        (prob,) = ctx.saved_tensors
        scale = grad / prob.shape[0]
        out = prob * scale
        out.diagonal().sub_(scale)
        return out


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: cross-entropy of ``a @ b.T / temperature`` with the diagonal as targets
    (callers normalise ``a`` and ``b`` for cosine similarities). Equal to ``F.cross_entropy(logits, arange)``,
    about twice as fast on CPU, where the (batch x batch) exponentials dominate SLMRec's and MGCN's epochs."""
    logits = (a / temperature) @ b.T  # scale the (batch, d) side, not the (batch, batch) logits
    return _DiagonalCrossEntropy.apply(logits)


class _GroupedDiagonalCrossEntropy(torch.autograd.Function):
    """:class:`_DiagonalCrossEntropy` of the (n, n) batch logits ``L[rows][:, cols]`` computed from the (U, V)
    logits ``L`` of the distinct rows and columns: row i of the batch is row ``rows[i]`` of L, its positive is column
    ``cols[i]``, and the batch's n columns are the V distinct ones repeated ``count_v`` times, so
    logsumexp_j z_ij = log sum_v count_v exp(L[rows[i], v]). Same loss and gradients as the batch form (up to the
    order of float sums), with U x V exponentials instead of n x n."""

    @staticmethod
    def forward(ctx, logits, rows, cols):
        n = rows.shape[0]
        count = torch.bincount(cols, minlength=logits.shape[1]).to(logits.dtype)
        mult = torch.bincount(rows, minlength=logits.shape[0]).to(logits.dtype)
        top = logits.amax(1, keepdim=True)
        prob = (logits - top).clamp_(min=-80.0).exp_().mul_(count)  # see _DiagonalCrossEntropy for the clamp
        total = prob.sum(1, keepdim=True)
        lse = (total.log() + top).squeeze(1)
        loss = (torch.dot(mult, lse) - logits[rows, cols].sum()) / n
        ctx.save_for_backward(prob.div_(total), mult, rows, cols)
        return loss

    @staticmethod
    def backward(ctx, grad):
        prob, mult, rows, cols = ctx.saved_tensors
        scale = grad / rows.shape[0]
        out = prob.mul_((mult * scale).unsqueeze(1))  # the saved softmax is used once: scaled in place
        out.index_put_((rows, cols), (-scale).expand(rows.shape[0]), accumulate=True)
        return out, None, None


def grouped_info_nce(a: torch.Tensor, b: torch.Tensor, a_index: torch.Tensor, b_index: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """``info_nce(a[a_index], b[b_index], temperature)`` where ``a`` and ``b`` hold distinct rows and the batch
    repeats them (a batch of 2048 draws from ml100k's 943 users and 1,682 items holds a few hundred distinct ones).

    Only the distinct (U, V) logits are formed when that is cheaper than the (n, n) batch form; repeated columns
    enter the softmax with their multiplicity, so duplicates of the positive stay in-batch negatives exactly as
    in the batch form (MMRec's)."""
    n = a_index.shape[0]
    if a.shape[0] * b.shape[0] > 0.6 * n * n:  # few repeats: the batch form is as cheap and skips the gathers
        return info_nce(a.index_select(0, a_index), b.index_select(0, b_index), temperature)
    logits = (a / temperature) @ b.T
    return _GroupedDiagonalCrossEntropy.apply(logits, a_index, b_index)


def info_nce_rows(a: torch.Tensor, b: torch.Tensor, a_rows: torch.Tensor, b_rows: torch.Tensor,
                  temperature: float, normalize: bool = False) -> torch.Tensor:
    """``info_nce(f(a[a_rows]), f(b[b_rows]), temperature)``, f = :func:`normalize_rows` when ``normalize`` else
    the identity, computed on the distinct rows of ``a_rows`` and ``b_rows`` (:func:`grouped_info_nce`)."""
    ua, ia = torch.unique(a_rows, return_inverse=True)
    ub, ib = torch.unique(b_rows, return_inverse=True)
    a, b = a.index_select(0, ua), b.index_select(0, ub)
    if normalize:
        a, b = normalize_rows(a), normalize_rows(b)
    return grouped_info_nce(a, b, ia, ib, temperature)


class _NormalizeRows(torch.autograd.Function):
    """y = x / max(|x|, eps) per row (``F.normalize(x, dim=1)``) with a hand-written backward:
    dx = (dy - y (y . dy)) / |x| where |x| > eps, else dy / eps. Autograd's version (norm, clamp, expand,
    division and their backward) made about twice the passes; GRCN normalises every user, item and
    prototype matrix several times a step."""

    @staticmethod
    def forward(ctx, x, eps):
        raw = x.norm(dim=1, keepdim=True)
        inv = raw.clamp_min(eps).reciprocal_()
        y = x * inv
        ctx.save_for_backward(y, inv, raw > eps)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, inv, free = ctx.saved_tensors
        dot = (y * dy).sum(1, keepdim=True).mul_(free)  # a clamped norm is a constant: no projection
        return torch.addcmul(dy, y, dot, value=-1.0).mul_(inv), None


def normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` (rows scaled to unit L2 norm, norms clamped at ``eps``) with a fused backward."""
    return _NormalizeRows.apply(x, eps)


def take(x: torch.Tensor, *indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows of ``x`` at each index tensor, gathered by one ``index_select`` (one scatter-add in backward instead
    of one full-size zero-fill and accumulate per index)."""
    return x.index_select(0, torch.cat(indices)).split([len(i) for i in indices])


def joint_rows(n_users: int, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Rows of a joint [users; items] matrix for a batch: [users, positives, negatives] concatenated."""
    return torch.cat([users, pos + n_users, neg + n_users])


def joint_bpr_loss(out_rows: torch.Tensor, ego_rows: torch.Tensor, reg_weight: float, penalty=None,
                   bpr_sum: bool = False) -> torch.Tensor:
    """BPR on the :func:`joint_rows` rows of a joint [users; items] output plus ``reg_weight`` x ``penalty`` (default
    :func:`l2_reg`) on the same rows of the ego matrix (LightGCN, LayerGCN). ``bpr_sum``: the BPR term summed over
    the batch instead of averaged (MMRec's LayerGCN)."""
    bpr = bpr_triplet_loss(*out_rows.chunk(3))
    if bpr_sum:
        bpr = bpr * (out_rows.shape[0] // 3)
    return bpr + reg_weight * (penalty or l2_reg)(*ego_rows.chunk(3))


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(y_ui - y_uj) (Rendle et al. 2009)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def _scaled(grads: tuple[torch.Tensor, ...], g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients computed in the forward pass for an upstream gradient of 1, scaled by the actual one."""
    if g.device.type == "cpu" and float(g) == 1.0:
        return grads
    return tuple(x * g for x in grads)


class _BPRTriplet(torch.autograd.Function):
    """-mean_b log sigmoid(u_b . (p_b - n_b)) with a hand-written backward: with w_b = -sigmoid(-x_b) / B,
    du = w (p - n), dp = w u, dn = -w u. On contiguous float32 CPU rows the loss and all three gradients come from
    one numba pass (:func:`motor.kernels.bpr_rows`), saved for the backward; elsewhere three torch passes each way,
    where autograd's version of ``bpr_loss((u * p).sum(1), (u * n).sum(1))`` made about a dozen."""

    @staticmethod
    def forward(ctx, u, p, n):
        if numba_kernels_apply(u, p, n):
            from .. import kernels

            grads = tuple(torch.empty_like(t) for t in (u, p, n))
            loss = kernels.bpr_rows(*(kernels.as_array(t) for t in (u, p, n, *grads)))
            ctx.save_for_backward(*grads)
            ctx.fused = True
            return torch.tensor(loss, dtype=u.dtype)
        diff = p - n
        x = (u * diff).sum(1)
        ctx.save_for_backward(u, diff, x)
        ctx.fused = False
        return F.softplus(-x).mean()  # = -log sigmoid(x), stable for large |x|

    @staticmethod
    def backward(ctx, g):
        if ctx.fused:
            return _scaled(ctx.saved_tensors, g)
        u, diff, x = ctx.saved_tensors
        w = torch.sigmoid(-x).mul_(-g / x.shape[0]).unsqueeze(1)
        dp = u * w
        return diff * w, dp, -dp


def bpr_triplet_loss(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR on (user, positive, negative) vector rows: ``bpr_loss((u * pos).sum(1), (u * neg).sum(1))``, fused."""
    return _BPRTriplet.apply(u, pos, neg)


class _BPRTables(torch.autograd.Function):
    """:func:`bpr_table_loss` on CPU: one numba pass (:func:`motor.kernels.bpr_tables`) gives the loss and the
    gradients with respect to both tables, saved for the backward."""

    @staticmethod
    def forward(ctx, user_table, item_table, users, pos, neg, reg_weight, form):
        from .. import kernels

        du, di = torch.zeros_like(user_table), torch.zeros_like(item_table)
        arrays = [kernels.as_array(t) for t in (user_table, item_table, users, pos, neg)]
        loss = kernels.bpr_tables(*arrays, float(reg_weight), form, kernels.as_array(du), kernels.as_array(di))
        ctx.save_for_backward(du, di)
        return torch.tensor(loss, dtype=user_table.dtype)

    @staticmethod
    def backward(ctx, g):
        return (*_scaled(ctx.saved_tensors, g), None, None, None, None, None)


def bpr_table_loss(user_table: torch.Tensor, item_table: torch.Tensor, users: torch.Tensor, pos: torch.Tensor,
                   neg: torch.Tensor, reg_weight: float = 0.0, penalty=None) -> torch.Tensor:
    """``bpr_triplet_loss(u, p, n) + reg_weight * penalty(u, p, n)`` for the rows u = ``user_table[users]``,
    p = ``item_table[pos]``, n = ``item_table[neg]``; ``penalty``: :func:`l2_reg` (default), :func:`emb_loss` or
    None. On contiguous float32 CPU tables with int64 indices it is one numba pass that never gathers the rows and
    writes the tables' gradients directly (BPR, ml100k: loss forward and backward about 10x faster than the
    gathers, the dozen torch passes and the scatter-adds); elsewhere the torch expression."""
    penalty = l2_reg if penalty is None and reg_weight else penalty
    if (penalty in (l2_reg, emb_loss) or not reg_weight) and numba_kernels_apply(user_table, item_table) and all(
            t.dtype == torch.int64 and t.device.type == "cpu" and t.is_contiguous() for t in (users, pos, neg)):
        from .. import kernels

        form = (kernels.PENALTY_NONE if not reg_weight else
                kernels.PENALTY_L2 if penalty is l2_reg else kernels.PENALTY_NORM)
        return _BPRTables.apply(user_table, item_table, users, pos, neg, reg_weight, form)
    u = user_table.index_select(0, users)
    ip, ineg = take(item_table, pos, neg)
    loss = bpr_triplet_loss(u, ip, ineg)
    return loss + reg_weight * penalty(u, ip, ineg) if reg_weight else loss


# ``reg_form`` hyper-parameter of BPR, LightGCN, VBPR and LayerGCN: which L2 penalty ``reg_weight`` scales.
# "motor": :func:`l2_reg` (the default); "mmrec": MMRec's penalty for that backbone (:func:`emb_loss` for BPR,
# LightGCN and VBPR; summed BPR + :func:`half_squared_l2` for LayerGCN), so MMRec's reg_weight values carry over.
REG_FORMS = ("motor", "mmrec")


def check_reg_form(backbone: str, reg_form: str) -> str:
    """``reg_form`` if it is one of :data:`REG_FORMS`, else a ValueError naming the backbone and the fix."""
    if reg_form not in REG_FORMS:
        raise ValueError(f"{backbone}: reg_form must be one of {list(REG_FORMS)} (RunConfig.hparams['reg_form']), "
                         f"got {reg_form!r}")
    return reg_form


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """Sum of the squared L2 norms of all rows, divided by the first tensor's row count (the batch size): motor's
    penalty (``reg_form="motor"``). Not MMRec's: see :func:`emb_loss` and :func:`half_squared_l2`."""
    return sum(t.pow(2).sum() for t in tensors) / tensors[0].shape[0]


def emb_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss`` (its BPR, LightGCN, VBPR and BM3): the sum of the tensors' unsquared Frobenius norms,
    divided by the last tensor's row count (the batch size for (B, d) batch rows). Its gradient on a (B, d) matrix
    E is E / (|E|_F B), against :func:`l2_reg`'s 2 E / B: far weaker at the same weight once |E|_F > 1/2."""
    return sum(t.norm() for t in tensors) / tensors[-1].shape[0]


def half_squared_l2(*tensors: torch.Tensor) -> torch.Tensor:
    """MMRec's ``L2Loss`` (its LayerGCN): half the sum of squares of all entries, not divided by the batch size."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors)
