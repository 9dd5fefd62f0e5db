"""Item representations — the one seam MOTOR changes — and their registry.

A backbone asks its item representation for item vectors: ``item_repr()`` -> (n_items, d) or
``item_repr(index)`` -> (len(index), d), and never branches on which one it got. The registered ones
(``ITEM_REPRS``: name -> class; ``RunConfig.item_repr`` names one, ``RunConfig.tcn`` holds its keyword arguments):

* ``"id"`` :class:`IDEmbedding` — the ID-based baseline: one free row per item, O(N d) parameters.
* ``"ms"`` :class:`ModalSpecific` — MOTOR (sections 3.4-3.5): token tables, one Token Cross Network per modality,
  outputs summed (eq. 9); O(D K d) parameters shared by all items.
* ``"ma"`` :class:`ModalAgnostic` — one Token Cross Network over the tokens of every modality (eq. 10).
* ``"mean"`` :class:`MeanOfTokens`, ``"linear"`` :class:`LinearOfTokens` — the paper's ablations without a cross
  network (Table 4).
* ``"ms+id"`` :class:`TokensPlusID` — ``"ms"`` plus a per-item ID row with its own step size, L2 weight and
  dropout.
* ``"ms+gate"`` :class:`PopularityGated` — ``"ms"`` plus a per-item ID row scaled by a learned monotone gate of the
  item's train interaction count, exactly 0 for items without any (they stay token-only).

A new representation is one class and one line: subclass :class:`ItemRepresentation` (or
:class:`TokenRepresentation`, which holds the token ids and tables and gathers an item's token embeddings) and
decorate it with ``@register_item_repr("name")``. :func:`build_item_repr` constructs any of them by name.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Mapping, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .defaults import DIM, N_CENTROIDS
from .sparse import spmm
from .tcn import CrossNetwork, cross_all_items

ITEM_REPRS: dict[str, type["ItemRepresentation"]] = {}  # name -> class, in registration order

R = TypeVar("R", bound=type)


def register_item_repr(name: str, *, headline: bool = False) -> Callable[[R], R]:
    """Class decorator: register an :class:`ItemRepresentation` subclass under ``name`` (its ``name`` attribute).

    ``headline``: compared in the headline tables (paper Table 2; ``python -m motor compare``'s default grid).
    Registering a name twice replaces the earlier class (re-running a notebook cell that defines one)."""
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"item representation name {name!r} must be non-empty, without '/', '\\' or spaces "
                         "(it becomes part of run ids and folder names)")

    def register(cls: R) -> R:
        if not (isinstance(cls, type) and issubclass(cls, ItemRepresentation)):
            raise TypeError(f"@register_item_repr({name!r}) decorates ItemRepresentation subclasses, got {cls!r}")
        cls.name, cls.headline = name, headline
        ITEM_REPRS[name] = cls
        return cls

    return register


def item_repr_class(name: str) -> type["ItemRepresentation"]:
    """The registered class for ``name``; a ValueError listing the registered names otherwise."""
    try:
        return ITEM_REPRS[name]
    except KeyError:
        raise ValueError(f"unknown item_repr {name!r}; registered: {sorted(ITEM_REPRS)} "
                         "(motor.item_repr.register_item_repr adds one)") from None


def headline_item_reprs() -> list[str]:
    """Names of the representations compared in the headline tables, in registration order."""
    return [name for name, cls in ITEM_REPRS.items() if cls.headline]


def build_item_repr(kind: str, n_items: int, dim: int = DIM, token_ids: Mapping[str, np.ndarray] | None = None,
                    n_centroids: int = N_CENTROIDS, modalities: Sequence[str] | None = None,
                    item_popularity: np.ndarray | None = None, **hparams) -> "ItemRepresentation":
    """The registered representation ``kind`` for ``n_items`` items of size ``dim``; ``token_ids`` ({modality:
    (n_items, D)} from :func:`motor.tokenize`), ``n_centroids`` and ``modalities`` are used by token-based ones,
    ``item_popularity`` ((n_items,) train interactions per item, ``Dataset.item_popularity``) by those whose class
    sets ``needs_popularity``; ``hparams`` are the class's own keyword arguments (``RunConfig.tcn``)."""
    return item_repr_class(kind).build(n_items, dim, token_ids=token_ids, n_centroids=n_centroids,
                                       modalities=modalities, item_popularity=item_popularity, **hparams)


def _popularity_kwarg(cls: type, item_popularity) -> dict:
    """``{"item_popularity": ...}`` for classes that need it (an error when it is missing), else ``{}``."""
    if not cls.needs_popularity:
        return {}
    if item_popularity is None:
        raise ValueError(f"item_repr {cls.name!r} needs item_popularity (train interactions per item, "
                         "Dataset.item_popularity); motor.run passes it")
    return {"item_popularity": item_popularity}


class ItemRepresentation(nn.Module):
    """The contract: ``forward(index=None)`` -> (n_items, dim) item vectors, or those of ``index`` (a long tensor);
    ``n_items`` and ``dim`` attributes. :meth:`build` constructs it from the run's data (see
    :func:`build_item_repr`); subclasses whose constructor differs override it."""

    name: ClassVar[str] = ""  # set by register_item_repr
    headline: ClassVar[bool] = False
    needs_tokens: ClassVar[bool] = False  # the run tokenizes the dataset only for representations that need it
    needs_popularity: ClassVar[bool] = False  # the constructor takes ``item_popularity`` (train counts per item)
    n_items: int
    dim: int

    @classmethod
    def build(cls, n_items: int, dim: int, token_ids=None, n_centroids: int = N_CENTROIDS, modalities=None,
              item_popularity=None, **hparams) -> "ItemRepresentation":
        return cls(n_items, dim, **_popularity_kwarg(cls, item_popularity), **hparams)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def rows(self, *indices: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A matrix holding the vectors of every item in ``indices`` and each index tensor re-mapped into it:
        ``m, (a, b) = rep.rows(pos, neg)`` gives ``m[a] == rep(pos)``. For losses that read rows from a table
        themselves (:func:`motor.backbones.losses.bpr_table_loss`). Default: all items, indices unchanged."""
        return self(), indices


@register_item_repr("id", headline=True)
class IDEmbedding(ItemRepresentation):
    """Item-ID embedding table (n_items, d), Xavier-uniform init (the paper's and MMRec's default)."""

    def __init__(self, n_items: int, dim: int = DIM):
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.weight = nn.Parameter(torch.empty(n_items, dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.weight if index is None else self.weight.index_select(0, index)


class TokenRepresentation(ItemRepresentation):
    """Base of the ID-free representations: token ids and learnable token tables; subclasses say how an item's
    token embeddings become its vector (:meth:`represent`).

    ``token_ids``: {modality: int array (n_items, D)} (from :func:`motor.tokenize`); ``n_centroids``: K (table rows);
    ``modalities``: subset to use (default all, sorted). One table per (modality, position), Xavier-initialised
    like ID embeddings (random, not the PQ centroids), stored as one (P, K, d) tensor so the lookup is one gather.
    Class attribute ``bags_per_modality``: whether :meth:`gather_sum` sums per (item, modality) instead of per item.
    """

    needs_tokens = True
    bags_per_modality: ClassVar[bool] = False

    @classmethod
    def build(cls, n_items: int, dim: int, token_ids=None, n_centroids: int = N_CENTROIDS, modalities=None,
              item_popularity=None, **hparams) -> "TokenRepresentation":
        if token_ids is None:
            raise ValueError(f"item_repr {cls.name!r} needs token_ids (motor.tokenize(dataset))")
        rep = cls(token_ids, n_centroids, dim, modalities=modalities, **_popularity_kwarg(cls, item_popularity),
                  **hparams)
        if rep.n_items != n_items:
            raise ValueError(f"token ids cover {rep.n_items} items, the dataset has {n_items}: tokenize this dataset")
        return rep

    def __init__(self, token_ids: Mapping[str, np.ndarray | torch.Tensor], n_centroids: int = N_CENTROIDS,
                 dim: int = DIM, modalities: Sequence[str] | None = None):
        super().__init__()
        mods = list(modalities) if modalities else sorted(token_ids)
        missing = [m for m in mods if m not in token_ids]
        if missing:
            raise KeyError(f"no token ids for modalities {missing}; have {sorted(token_ids)}")
        ids = [torch.as_tensor(np.asarray(token_ids[m]), dtype=torch.long) for m in mods]
        n_items = {t.shape[0] for t in ids}
        if len(n_items) != 1:
            raise ValueError(f"token id matrices disagree on the number of items: {n_items}")
        top = max(int(t.max()) for t in ids)
        if top >= n_centroids:
            raise ValueError(f"token id {top} >= n_centroids {n_centroids}")
        self.modalities, self.dim, self.n_centroids = mods, dim, n_centroids
        self.n_items = n_items.pop()
        self.widths = [t.shape[1] for t in ids]  # tokens per modality
        n_pos = sum(self.widths)
        offsets = torch.arange(n_pos) * n_centroids
        self.register_buffer("flat_ids", torch.cat(ids, dim=1) + offsets[None], persistent=False)
        # (item or (item, modality)) x (P*K) 0/1 incidence: representing every item is then one sparse product
        self.register_buffer("incidence", self._incidence(self.flat_ids, n_pos * n_centroids), persistent=False)
        self.register_buffer("bag_offsets", self._offsets(self.n_items), persistent=False)
        self.tables = nn.Parameter(torch.empty(n_pos, n_centroids, dim))
        nn.init.xavier_uniform_(self.tables.view(n_pos * n_centroids, dim))

    def represent(self, index: torch.Tensor | None) -> torch.Tensor:
        """(n, d) vectors of the items in ``index`` (all items if None); what a subclass implements."""
        raise NotImplementedError

    def forward(self, index: torch.Tensor | None = None) -> torch.Tensor:
        if index is None or 4 * index.numel() >= self.n_items:
            out = self.represent(None)  # cheaper to represent every item once than a large batch with repeats
            return out if index is None else out.index_select(0, index)
        if index.numel() > 64:
            # batches repeat items (popular ones often): represent each distinct item once
            uniq, inverse = torch.unique(index, return_inverse=True)
            if len(uniq) < index.numel():
                return self.represent(uniq).index_select(0, inverse)
        return self.represent(index)

    def rows(self, *indices: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """As :meth:`ItemRepresentation.rows`: every item when the batch is large (as :meth:`forward`), else only
        the distinct items of ``indices``, with the indices re-mapped to them."""
        if 4 * sum(i.numel() for i in indices) >= self.n_items:
            return self.represent(None), indices
        uniq, inverse = torch.unique(torch.cat(indices), return_inverse=True)
        return self.represent(uniq), inverse.split([i.numel() for i in indices])

    def token_embeddings(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(n, P, d) token embeddings of the items in ``index`` (all items if None)."""
        ids = self.flat_ids if index is None else self.flat_ids[index]
        return torch.nn.functional.embedding(ids, self.tables.view(-1, self.dim))

    def gather_sum(self, index: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """Sum of ``rows`` (P*K, c) over each item's tokens -> (n, c), or over each (item, modality)'s tokens when
        ``bags_per_modality`` -> (n * M, c). All items: one product with the cached incidence matrix; a subset:
        ``embedding_bag``."""
        if index is None:
            return spmm(self.incidence, rows)
        ids = self.flat_ids[index]
        return F.embedding_bag(ids.reshape(-1), rows, self._offsets(len(ids), ids.device), mode="sum")

    def _bag_starts(self) -> list[int]:
        return list(np.cumsum([0] + self.widths[:-1])) if self.bags_per_modality else [0]

    def _incidence(self, flat_ids: torch.Tensor, n_cols: int) -> torch.Tensor:
        n, n_pos = flat_ids.shape
        bounds = self._bag_starts() + [n_pos]
        bag_of_pos = torch.repeat_interleave(torch.arange(len(bounds) - 1), torch.as_tensor(np.diff(bounds)))
        rows = (torch.arange(n)[:, None] * (len(bounds) - 1) + bag_of_pos[None]).reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rows, flat_ids.reshape(-1)]), torch.ones(n * n_pos),
                                       (n * (len(bounds) - 1), n_cols), check_invariants=False).coalesce()

    def _offsets(self, n: int, device=None) -> torch.Tensor:
        """Start of each item's (or (item, modality)'s) bag in the flattened (n, P) token-id matrix."""
        starts = torch.as_tensor(self._bag_starts(), device=device)
        return (torch.arange(n, device=device)[:, None] * sum(self.widths) + starts[None]).reshape(-1)


class _CrossTokens(TokenRepresentation):
    """Token Cross Networks over groups of positions (:mod:`motor.tcn`), outputs summed. ``hidden``/``activation``:
    the networks' hidden layer widths (default none: one P*d -> d layer) and activation (default tanh)."""

    def __init__(self, token_ids, n_centroids: int = N_CENTROIDS, dim: int = DIM, modalities=None,
                 hidden: Sequence[int] = (), activation: str = "tanh"):
        super().__init__(token_ids, n_centroids, dim, modalities)
        self.nets = nn.ModuleList(CrossNetwork(w, dim, hidden, activation) for w in self.net_widths())

    def net_widths(self) -> list[int]:
        """Positions per network (one network per bag of :meth:`gather_sum`)."""
        return list(self.widths) if self.bags_per_modality else [sum(self.widths)]

    def represent(self, index: torch.Tensor | None) -> torch.Tensor:
        """Item vectors from per-token tables and one gather-sum (see :mod:`motor.tcn`)."""
        widths = self.net_widths()
        if index is None:
            return cross_all_items(self.nets, self.tables, widths, self.flat_ids, self.bag_offsets, self.incidence)
        parts = torch.split(self.tables, widths, dim=0)
        rows = torch.cat([net.token_tables(t) for net, t in zip(self.nets, parts)]).flatten(0, 1)
        sums = self.gather_sum(index, rows).view(-1, len(widths), rows.shape[1])
        return sum(net.finish(sums[:, m]) for m, net in enumerate(self.nets))


@register_item_repr("ms", headline=True)
class ModalSpecific(_CrossTokens):
    """MOTOR's modal-specific form (eq. 9): one Token Cross Network per modality over its D tokens, outputs summed."""

    bags_per_modality = True


@register_item_repr("ma", headline=True)
class ModalAgnostic(_CrossTokens):
    """MOTOR's modal-agnostic form (eq. 10): one Token Cross Network over the tokens of every modality."""


@register_item_repr("mean")
class MeanOfTokens(TokenRepresentation):
    """Ablation: the average of an item's token embeddings (no cross network)."""

    def represent(self, index: torch.Tensor | None) -> torch.Tensor:
        return self.gather_sum(index, self.tables.view(-1, self.dim)) / self.tables.shape[0]


@register_item_repr("linear")
class LinearOfTokens(TokenRepresentation):
    """Ablation: a linear map of the concatenated token embeddings (P*d -> d; no cross terms)."""

    def __init__(self, token_ids, n_centroids: int = N_CENTROIDS, dim: int = DIM, modalities=None):
        super().__init__(token_ids, n_centroids, dim, modalities)
        self.linear = nn.Linear(self.tables.shape[0] * dim, dim)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def represent(self, index: torch.Tensor | None) -> torch.Tensor:
        n_pos, k, d = self.tables.shape
        # the map of a concatenation is the sum of its d-column blocks: apply each block to its table once
        w = self.linear.weight.view(d, n_pos, d)
        proj = torch.einsum("pkd,hpd->pkh", self.tables, w).reshape(n_pos * k, d)
        return self.gather_sum(index, proj) + self.linear.bias


class _DecayRows(torch.autograd.Function):
    """Identity in the forward pass; the backward adds ``weight * rows``, the gradient of
    ``weight / 2 * ||rows||^2``: an L2 penalty on exactly the rows a forward pass used, with no loss term to add."""

    @staticmethod
    def forward(ctx, rows, weight):
        ctx.save_for_backward(rows)
        ctx.weight = weight
        return rows.clone()

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        return grad + ctx.weight * rows, None


def _check_id_options(id_scale: float, id_reg: float, id_dropout: float) -> None:
    """Raise a ValueError naming the ``RunConfig.tcn`` key of a bad ID-part option."""
    if not (np.isfinite(id_scale) and id_scale > 0):
        raise ValueError(f"id_scale must be a finite number > 0 (RunConfig.tcn['id_scale']), got {id_scale!r}")
    if not id_reg >= 0:
        raise ValueError(f"id_reg must be >= 0 (RunConfig.tcn['id_reg']), got {id_reg!r}")
    if not 0 <= id_dropout < 1:
        raise ValueError(f"id_dropout must be in [0, 1) (RunConfig.tcn['id_dropout']), got {id_dropout!r}")


class _TokensAndRows(ModalSpecific):
    """Base of the hybrids: the ``"ms"`` vector plus a per-item ID part built from learnable rows ``theta``
    (zeros at the start: training starts from the pure token model, and a row that no training pass uses stays
    exactly zero). The ID row used is ``id_scale * theta``: under Adam a parameter moves about ``lr`` per step
    whatever its gradient's size, so ``id_scale`` sets how fast the ID part can grow next to the token part
    (whose output sums and multiplies many token rows and so grows much faster than one row at the same ``lr``).
    ``id_reg``: L2 weight on ``theta`` (every training forward pass adds ``id_reg * theta_i`` to the gradient of
    each row it used; the reported loss does not include it). ``id_dropout``: probability that an item's whole ID
    part is dropped from a training forward pass (the kept ones scaled by 1 / (1 - p)), so the tokens must also
    represent items alone. Neither applies in evaluation. Subclasses say which rows exist and how they are
    weighted (:meth:`id_part`)."""

    def __init__(self, token_ids, n_centroids: int, dim: int, modalities, hidden: Sequence[int], activation: str,
                 n_rows: int, id_scale: float, id_reg: float, id_dropout: float):
        super().__init__(token_ids, n_centroids, dim, modalities, hidden, activation)
        _check_id_options(id_scale, id_reg, id_dropout)
        self.id_scale, self.id_reg, self.id_dropout = float(id_scale), float(id_reg), float(id_dropout)
        self.id_rows = nn.Parameter(torch.zeros(n_rows, dim))  # theta; zeros: no RNG draw, "ms"'s init kept

    def represent(self, index: torch.Tensor | None) -> torch.Tensor:
        return super().represent(index) + self.id_part(index)

    def id_part(self, index: torch.Tensor | None) -> torch.Tensor:
        """(n, d) ID part of the items in ``index`` (all items if None)."""
        raise NotImplementedError

    def parts(self, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(token part, ID part), each (n, d), of the items in ``index`` (all if None), as in evaluation (no
        dropout), without gradients; their sum is the item vector."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                return ModalSpecific.represent(self, index).detach(), self.id_part(index).detach()
        finally:
            self.train(was)

    def _train_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``id_scale * rows`` with the L2 penalty and whole-row dropout in training."""
        if self.training and self.id_reg > 0:
            rows = _DecayRows.apply(rows, self.id_reg)
        rows = rows * self.id_scale if self.id_scale != 1.0 else rows
        if self.training and self.id_dropout > 0:
            keep = torch.rand(rows.shape[0], 1, device=rows.device) >= self.id_dropout
            rows = rows * keep.to(rows.dtype).mul_(1.0 / (1.0 - self.id_dropout))
        return rows


@register_item_repr("ms+id")
class TokensPlusID(_TokensAndRows):
    """Hybrid: the ``"ms"`` vector plus a per-item ID row, ``v_i = TCN(tokens of i) + id_scale * theta_i``.

    One row per item (so it cannot score items added after training). Options as :class:`_TokensAndRows`;
    ``hidden``/``activation`` as ``"ms"``. Defaults: the ID part's step size 10x the rows' own (``id_scale``), no
    extra L2, no dropout, so an item's ID part reaches a norm comparable to its token part's
    (:func:`motor.diagnostics.id_token_norms`); items without train interactions keep a zero row.
    """

    def __init__(self, token_ids, n_centroids: int = N_CENTROIDS, dim: int = DIM, modalities=None,
                 hidden: Sequence[int] = (), activation: str = "tanh", id_scale: float = 10.0, id_reg: float = 0.0,
                 id_dropout: float = 0.0):
        n_items = len(next(iter(token_ids.values())))
        super().__init__(token_ids, n_centroids, dim, modalities, hidden, activation, n_items, id_scale, id_reg,
                         id_dropout)

    def id_part(self, index: torch.Tensor | None) -> torch.Tensor:
        return self._train_rows(self.id_rows if index is None else self.id_rows.index_select(0, index))


@register_item_repr("ms+gate")
class PopularityGated(_TokensAndRows):
    """Popularity-gated residual: ``v_i = TCN(tokens of i) + g(n_i) * id_scale * theta_i``, ``n_i`` the item's
    train interactions (``item_popularity``, fixed when built).

    ``g(n) = (s(a (l - b)) - s(-a b)) / (1 - s(-a b))`` with ``l = log(1 + n)``, ``s`` the logistic function,
    slope ``a = softplus(.) > 0`` and centre ``b`` learned: increasing in ``n``, 0 at ``n = 0`` (set exactly) and
    -> 1 for popular items. Rows exist only for items with ``n_i > 0`` (``n_warm`` of them): an item without
    train interactions has no row and its vector is exactly its token vector, so a catalogue grown by new items
    (:func:`motor.score_new_items`) loads the same weights. ``gate_center`` / ``gate_slope``: initial ``n`` at
    which g is about half-way (``b = log(1 + gate_center)``) and initial ``a``; ``learn_gate=False`` keeps them
    fixed. Other options as :class:`_TokensAndRows`.
    """

    needs_popularity = True

    def __init__(self, token_ids, n_centroids: int = N_CENTROIDS, dim: int = DIM, modalities=None,
                 hidden: Sequence[int] = (), activation: str = "tanh", item_popularity=None,
                 gate_center: float = 10.0, gate_slope: float = 2.0, learn_gate: bool = True,
                 id_scale: float = 10.0, id_reg: float = 0.0, id_dropout: float = 0.0):
        n_items = len(next(iter(token_ids.values())))
        counts = np.asarray(item_popularity) if item_popularity is not None else None
        if counts is None or counts.shape != (n_items,) or not np.issubdtype(counts.dtype, np.number) \
                or not np.isfinite(counts).all() or (counts < 0).any():
            raise ValueError(f"item_popularity must be {n_items} finite counts >= 0 (train interactions per item, "
                             f"Dataset.item_popularity), got {None if counts is None else counts.shape}")
        if not (np.isfinite(gate_center) and gate_center > 0):
            raise ValueError(f"gate_center must be a number > 0 (RunConfig.tcn['gate_center']), got {gate_center!r}")
        if not (np.isfinite(gate_slope) and gate_slope > 0):
            raise ValueError(f"gate_slope must be a number > 0 (RunConfig.tcn['gate_slope']), got {gate_slope!r}")
        warm = counts > 0
        super().__init__(token_ids, n_centroids, dim, modalities, hidden, activation, int(warm.sum()), id_scale,
                         id_reg, id_dropout)
        self.n_warm = int(warm.sum())
        row = np.where(warm, np.cumsum(warm) - 1, -1)
        self.register_buffer("row_of_item", torch.as_tensor(row, dtype=torch.long), persistent=False)  # -1: none
        self.register_buffer("warm_items", torch.as_tensor(np.flatnonzero(warm), dtype=torch.long), persistent=False)
        self.register_buffer("log_count", torch.log1p(torch.as_tensor(counts, dtype=torch.float32)),
                             persistent=False)
        slope_raw = float(np.log(np.expm1(gate_slope)))  # softplus^-1
        center = float(np.log1p(gate_center))
        self.gate_slope_raw = nn.Parameter(torch.tensor(slope_raw), requires_grad=learn_gate)
        self.gate_center = nn.Parameter(torch.tensor(center), requires_grad=learn_gate)

    def gate(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) gate values g(n_i) of the items in ``index`` (all if None); exactly 0 where n_i = 0."""
        log_n = self.log_count if index is None else self.log_count.index_select(0, index)
        a = F.softplus(self.gate_slope_raw)
        at_zero = torch.sigmoid(-a * self.gate_center)
        g = (torch.sigmoid(a * (log_n - self.gate_center)) - at_zero) / (1 - at_zero).clamp_min(1e-6)
        return torch.where(log_n > 0, g, torch.zeros_like(g))

    def id_part(self, index: torch.Tensor | None) -> torch.Tensor:
        items = torch.arange(self.n_items, device=self.id_rows.device) if index is None else index
        out = torch.zeros(len(items), self.dim, dtype=self.id_rows.dtype, device=self.id_rows.device)
        if self.n_warm == 0:
            return out
        if index is None:
            at, rows = self.warm_items, self.id_rows
        else:
            row = self.row_of_item.index_select(0, items)
            at = torch.nonzero(row >= 0).squeeze(1)
            rows = self.id_rows.index_select(0, row.index_select(0, at))
        gated = self.gate(items.index_select(0, at))[:, None] * self._train_rows(rows)
        return out.index_copy(0, at, gated)
