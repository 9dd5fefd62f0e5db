"""Backbones and their registry: ``build(name, dataset, item_repr, **hparams)``; the contract a backbone meets
is in :mod:`motor.backbones.base`."""
from __future__ import annotations

from .base import Backbone
from .bm3 import BM3
from .bpr import BPR
from .freedom import FREEDOM
from .grcn import GRCN
from .layergcn import LayerGCN
from .lightgcn import LightGCN
from .mgcn import MGCN
from .pop import Pop
from .slmrec import SLMRec
from .vbpr import VBPR

REGISTRY: dict[str, type[Backbone]] = {
    "bpr": BPR,
    "lightgcn": LightGCN,
    "layergcn": LayerGCN,
    "vbpr": VBPR,
    "grcn": GRCN,
    "slmrec": SLMRec,
    "bm3": BM3,
    "freedom": FREEDOM,
    "mgcn": MGCN,
}
BASELINES = {"pop": Pop}


def backbone_class(name: str) -> type[Backbone]:
    """The class of backbone (or baseline) ``name``, case-insensitive; a KeyError listing the names otherwise."""
    key = name.lower()
    cls = REGISTRY.get(key) or BASELINES.get(key)
    if cls is None:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(REGISTRY) + sorted(BASELINES)}")
    return cls


def build(name: str, dataset, item_repr, **hparams) -> Backbone:
    """Instantiate backbone ``name`` (case-insensitive) for ``dataset`` around ``item_repr``: ``cls(dataset,
    item_repr, **hparams)`` (the contract is in :mod:`motor.backbones.base`)."""
    return backbone_class(name)(dataset, item_repr, **hparams)
