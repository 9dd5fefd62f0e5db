"""The one call at the top of every notebook: validated parameters, fast mode, quiet output, offline figures.

The cell after the parameters cell reads::

    import motor.notebook as mnb
    mnb.setup(globals(), dataset=mnb.DATASET, backbone=mnb.BACKBONE, seeds=list[int], epochs=int, fast=bool | None)

``setup`` coerces every named parameter (papermill passes ``-p fast false`` as the string "false", ``-p seeds 0,1``
as "0,1"; :mod:`motor.params`), rejects parameters the notebook does not name, resolves the dataset (``None``:
``scientific`` when it is under the data root, else the built-in synthetic set, said in one line), applies fast
mode, writes the values back into the notebook's namespace and returns them (the cell shows them).
"""
from __future__ import annotations

from typing import Any, MutableMapping

import pandas as pd
import plotly.io as pio

from .backbones import BASELINES, REGISTRY
from .data import SPLIT_SCHEMES
from .item_repr import ITEM_REPRS
from .params import DATASET, fast_mode, notebook_params, one_of

FAST_EPOCHS = 2  # fast mode (CI, $MOTOR_FAST=1): epochs capped, lists cut to their first entries
_FAST_CUTS = {"seeds": 1, "backbones": 2, "budgets": 2}
_MARK = "_motor_setup_done"

__all__ = ["setup", "DATASET", "BACKBONE", "ITEM_REPR", "SPLIT", "one_of", "FAST_EPOCHS"]


BACKBONE, ITEM_REPR = one_of(*REGISTRY, *BASELINES), one_of(*ITEM_REPRS)
SPLIT = one_of(*SPLIT_SCHEMES)


class Parameters(dict):
    """The notebook's effective parameters; shown as one line in the notebook."""

    def _repr_markdown_(self) -> str:
        return "**parameters** · " + " · ".join(f"`{k}` = `{v!r}`" for k, v in self.items())


def setup(namespace: MutableMapping[str, Any], **spec: Any) -> Parameters:
    """Validate the notebook's parameters (``spec``: name -> kind, see :mod:`motor.params`) in ``namespace`` (the
    notebook's ``globals()``), apply fast mode, configure output; returns the effective values.

    Fast mode (``fast`` true, or ``fast`` None and ``$MOTOR_FAST=1``): ``epochs`` at most :data:`FAST_EPOCHS`,
    ``seeds`` cut to one, ``backbones`` and ``budgets`` to two, ``projection`` "pca" (UMAP compiles for ~40 s).
    Unknown parameters are only checked on the first call, so re-running the cell in JupyterLab after later cells
    defined variables works.
    """
    values = notebook_params(namespace, spec, check_unknown=not namespace.get(_MARK, False))
    if "fast" in values:
        values["fast"] = fast_mode(values["fast"])
        if values["fast"]:
            values.update(fast_overrides(values))
    namespace.update(values)
    namespace[_MARK] = True
    configure_output()
    return Parameters(values)


def fast_overrides(values: dict) -> dict:
    """The fast-mode values of the parameters in ``values`` that fast mode shortens."""
    out = {}
    if "epochs" in values:
        out["epochs"] = min(values["epochs"], FAST_EPOCHS)
    for name, n in _FAST_CUTS.items():
        if name in values:
            out[name] = list(values[name])[:n]
    if "projection" in values:
        out["projection"] = "pca"
    return out


def configure_output() -> None:
    """Figures as plotly's JSON mimetype only (JupyterLab renders it offline; :mod:`motor.report` turns it into
    HTML; no CDN script, no second copy of each figure), pandas at 4 decimals and 120 characters per cell."""
    pio.renderers.default = "plotly_mimetype"
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", 120)  # item texts in the case-study and neighbour tables

