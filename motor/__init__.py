"""motor: turn ID-based multimodal recommenders into ID-free ones (MOTOR, arXiv 2410.19276).

Data flows one way: ``load``/``synthetic`` -> ``tokenize`` -> item representation -> backbone -> ``run``.
Then ``recommend`` (top-k items for users) and ``score_new_items`` (brand-new items from their features).

Every name below is imported on first use, so ``import motor`` loads neither torch nor faiss.
"""
from __future__ import annotations

import importlib

# Functions named like their module are bound here, once: a later ``import motor.synthetic`` then leaves
# ``motor.synthetic`` the function. These modules import only numpy / pandas / scipy at the top.
from .data import DataError, Dataset, available, data_root, kcore, load, resplit
from .recommend import new_item_vectors, recommend, score_new_items
from .synthetic import synthetic
from .tune import tune, tune_seeds  # Ray is imported only when a search runs

__version__ = "0.1.0"

# imported on first use (torch, faiss): public name -> module that defines it
_LAZY = {
    "fit_tokenizers": "tokenizer", "tokenize": "tokenizer",
    "RunConfig": "experiment", "RunResult": "experiment", "run": "experiment", "run_grid": "experiment",
    "notebook_params": "params",
}
# submodules reachable as attributes (``motor.runs.load()``) without importing them first
_SUBMODULES = {"analysis", "backbones", "cache", "cli", "evaluate", "experiment", "item_repr", "params", "perf",
               "plots", "runs", "sparse", "tcn", "tokenizer", "train", "widgets"}

__all__ = ["DataError", "Dataset", "available", "data_root", "kcore", "load", "new_item_vectors", "recommend",
           "resplit", "score_new_items", "synthetic", "tune", "tune_seeds", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        # looked up on every access (not stored here), so it is always the module's current object
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'motor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
