"""The backbone contract: a model computes its loss for a batch and scores all items for a batch of users.

How a backbone is made: ``motor.backbones.build(name, dataset, item_repr, **hparams)`` calls
``cls(dataset, item_repr, dim=..., **hparams)`` with

* ``dataset`` — a :class:`motor.data.Dataset`: ``n_users``, ``n_items``, ``train`` (the only interactions a model
  may read), ``features`` ({modality: (n_items, d_m)}, only the run's ``modalities``) and ``item_popularity``;
* ``item_repr`` — the item representation (:mod:`motor.item_repr`): ``item_repr()`` -> (n_items, dim),
  ``item_repr(index)`` -> (len(index), dim). A backbone only ever calls these, never asks which kind it got: that
  is what makes it ID-free with MOTOR tokens;
* ``dim`` — the size of the item representation's vectors (``RunConfig.dim``; not passed when the class sets
  ``takes_dim = False``), and the backbone's own hyper-parameters (``RunConfig.hparams``) as keyword arguments.

What a backbone implements (a subclass of :class:`Backbone`, which it initialises with
``super().__init__(n_users, n_items, item_repr, dim)``; :class:`MultimodalBackbone` also reads the features):

* ``embeddings()`` -> final (n_users, d') user and (n_items, d') item matrices; scores are their dot products;
* ``loss(users, pos, neg)`` -> a scalar for a batch of (user, positive item, sampled negative item) index tensors
  of equal length (the trainer always samples one negative per positive; a backbone without negatives, e.g. BM3
  or SLMRec's in-batch softmax, ignores ``neg``);
* optionally ``on_epoch_start(generator)`` (per-epoch randomness such as edge dropout, drawn from ``generator``),
  class attributes ``trainable`` (False: nothing to train, e.g. Pop), ``takes_dim`` and ``trainer_defaults``
  (the backbone's own Adam weight decay / lr schedule, see :func:`motor.train.trainer_settings`).

Register the class in ``motor/backbones/__init__.py`` (``REGISTRY``). Losses and shared kernels are in
:mod:`motor.backbones.losses`, graph code in :mod:`motor.backbones.graph`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from ..defaults import DIM
from .features import modality_features


class Backbone(nn.Module):
    """Subclasses implement :meth:`embeddings` (final user and item matrices) and :meth:`loss`.

    ``score(users)`` = dot products with every item; inside ``with model.evaluating():`` the (possibly graph-
    propagated) embeddings are computed once per evaluation pass and reused for every user batch.
    """

    trainable = True
    takes_dim = True  # build() passes RunConfig.dim as ``dim``

    def __init__(self, n_users: int, n_items: int, item_repr: nn.Module, dim: int = DIM):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.item_repr = item_repr
        self._eval_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eval_items_t: torch.Tensor | None = None

    # --- to implement -------------------------------------------------------------------------------------
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (n_users, d') user and (n_items, d') item representations; y_ui = h_u . h_i (eq. 11)."""
        raise NotImplementedError

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------------------
    def on_epoch_start(self, generator: torch.Generator) -> None:
        """Hook for per-epoch randomness (e.g. edge dropout); draws only from ``generator``."""

    @contextmanager
    def evaluating(self):
        """Eval mode with embeddings computed once for the whole pass."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self._eval_cache = self.embeddings()
                # the item matrix transposed once: the scoring product with a contiguous (d, n_items) operand
                # is about 1.4x faster on CPU than with the transposed view, and gives the same floats
                self._eval_items_t = self._eval_cache[1].T.contiguous()
                yield self
        finally:
            self._eval_cache = self._eval_items_t = None
            self.train(was_training)

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), n_items) preference scores."""
        if self._eval_cache is not None:
            return self._eval_cache[0][users] @ self._eval_items_t
        u, i = self.embeddings()
        return u[users] @ i.T

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """(n_items, d') final item vectors as :meth:`score` uses them (eval mode, no gradient, detached)."""
        if self._eval_cache is not None:
            return self._eval_cache[1].detach()
        with self.evaluating():
            return self._eval_cache[1].detach()

    def item_parameters(self) -> int:
        return sum(p.numel() for p in self.item_repr.parameters())

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class MultimodalBackbone(Backbone):
    """A backbone that also reads the dataset's modality features (the setup every multimodal backbone shares).

    Sets ``modalities`` (the dataset's, sorted), a free user table ``user_emb`` (n_users, dim; Xavier-uniform) and
    one matrix per modality, ``features_<m>`` = ``transform(features)`` (default: the features as float32), read
    with :meth:`features`. By default the matrices are frozen buffers (data: backbones train projections of them);
    ``train_features=True`` makes each one a trainable float32 ``nn.Parameter`` initialised from a copy of the
    data (the dataset's arrays are never modified), optimised with the rest of the model, as MMRec's
    ``nn.Embedding.from_pretrained(features, freeze=False)``. Backbones read :meth:`features` either way; anything
    built once from the features (kNN graphs) is built in ``__init__``, from the data.
    """

    def __init__(self, dataset, item_repr: nn.Module, dim: int = DIM,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, train_features: bool = False):
        super().__init__(dataset.n_users, dataset.n_items, item_repr, dim)
        feats = modality_features(dataset)
        self.modalities = list(feats)
        self.train_features = bool(train_features)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, dim)))
        for m, f in feats.items():
            f = transform(f) if transform else f
            if self.train_features:  # a copy: modality_features may share memory with the dataset's arrays
                self.register_parameter(f"features_{m}", nn.Parameter(f.detach().to(torch.float32, copy=True)))
            else:
                self.register_buffer(f"features_{m}", f, persistent=False)

    def features(self, modality: str) -> torch.Tensor:
        """(n_items, d_m) features of ``modality``: a frozen buffer, or a parameter with ``train_features``."""
        return getattr(self, f"features_{modality}")
