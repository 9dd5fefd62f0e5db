"""motor: turn ID-based multimodal recommenders into ID-free ones (MOTOR, arXiv 2410.19276).

Data flows one way: ``load``/``synthetic`` -> ``tokenize`` -> item representation -> backbone -> ``run``.
Then ``recommend`` (top-k items for users) and ``score_new_items`` (brand-new items from their features).

Laziness lives here, in one place: every name that needs torch, faiss or ray is imported on first use (``_LAZY``),
so ``import motor`` loads none of them; the modules themselves import at the top.
"""
from __future__ import annotations

import importlib
import sys
import types

# light modules (numpy / pandas / scipy only), bound at once
from .data import DataError, Dataset, available, data_root, kcore, load, resplit
from .synthetic import synthetic

__version__ = "0.1.0"

# imported on first use (torch, faiss, ray): public name -> module that defines it
_LAZY = {
    "fit_tokenizers": "tokenizer", "tokenize": "tokenizer",
    "RunConfig": "config", "ConfigError": "config",
    "RunResult": "experiment", "load_run": "experiment", "run": "experiment", "run_grid": "experiment",
    "new_item_vectors": "recommend", "recommend": "recommend", "score_new_items": "recommend",
    "tune": "tune", "tune_seeds": "tune",
    "notebook_params": "params",
}
# submodules reachable as attributes (``motor.runs.load()``) without importing them first
_SUBMODULES = {"analysis", "backbones", "cache", "cli", "config", "diagnostics", "evaluate", "experiment", "findings",
               "item_repr", "neighbours", "params", "perf", "plots", "runs", "sparse", "studies", "tcn", "tokenizer",
               "train", "widgets"}
# functions named like their module: ``motor.recommend`` / ``motor.tune`` / ``motor.synthetic`` stay the function
# even after the module is imported (the import system would otherwise set the attribute to the module)
_FUNCTIONS_NAMED_LIKE_MODULES = {"recommend", "synthetic", "tune"}

__all__ = ["DataError", "Dataset", "available", "data_root", "kcore", "load", "resplit", "synthetic", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        # looked up on every access (not stored here), so it is always the module's current object
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'motor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


class _Facade(types.ModuleType):
    """``motor`` itself: keeps the functions named like their module (see above) when the module is imported."""

    def __setattr__(self, name: str, value) -> None:
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            if name in _LAZY:
                self.__dict__.pop(name, None)  # answered by __getattr__ (the function)
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Facade
