"""ipywidgets explorer: search an item by text, see its tokens and its nearest items (shared tokens, vectors).

The logic lives in plain methods (``search``, ``select``) so it can be tested without a browser; the widgets
only call them.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from .neighbours import search_items, shared_token_neighbours, vector_neighbours


class TokenExplorer:
    """``TokenExplorer(dataset, token_ids, vectors={'ID': ..., 'MOTOR': ...}).widget()`` in a notebook.

    ``select`` takes a dataset row (what ``search`` returns); every item shown (picker, heading, tables) is named
    by the itemID of the dataset's file (``dataset.item_id``), also for thinned, re-indexed data."""

    def __init__(self, dataset, token_ids: dict[str, np.ndarray], vectors: dict[str, np.ndarray] | None = None,
                 top: int = 5):
        self.ds, self.token_ids, self.vectors, self.top = dataset, token_ids, vectors or {}, top
        self.matches: list[int] = []
        self.item: int | None = None
        self.tables: dict[str, pd.DataFrame] = {}
        self._ui = None

    def text(self, item: int) -> str:
        t = self.ds.item_text[item] if self.ds.item_text else ""
        return t[:140] + ("…" if len(t) > 140 else "")

    def search(self, query: str) -> list[int]:
        """Item rows matching ``query`` (all words, case-insensitive; or an itemID of the dataset's file); updates
        the picker, whose labels show the file's itemIDs."""
        if query.strip().isdigit():  # an itemID of the user's file, also in a thinned, re-indexed dataset
            try:
                self.matches = self.ds.item_index([int(query.strip())]).tolist()
            except ValueError:
                self.matches = []
        else:
            self.matches = search_items(self.ds.item_text, query)
        if self._ui is not None:
            self._ui["pick"].options = [(f"{self._id(i)}: {self.text(i)[:80]}", i) for i in self.matches]
        return self.matches

    def _id(self, row: int) -> int:
        return int(self.ds.item_id(row))

    def select(self, item: int) -> dict[str, pd.DataFrame]:
        """Tokens of ``item`` and its neighbours by shared tokens and by each learned representation."""
        self.item = int(item)
        pop = self.ds.item_popularity
        tokens = pd.DataFrame({m: list(ids[self.item]) for m, ids in self.token_ids.items()}).T
        tokens.columns = [f"t{p}" for p in tokens.columns]
        tables = {"tokens": tokens}
        nb = shared_token_neighbours(self.token_ids, self.item, self.top)
        tables["shared tokens"] = nb.assign(item=self.ds.item_id(nb.item), popularity=pop[nb.item],
                                            text=[self.text(i) for i in nb.item])
        for name, vec in self.vectors.items():
            vn = vector_neighbours(vec, self.item, self.top)
            tables[f"nearest by {name} vector"] = vn.assign(item=self.ds.item_id(vn.item), popularity=pop[vn.item],
                                                            text=[self.text(i) for i in vn.item])
        self.tables = tables
        if self._ui is not None:
            self._ui["out"].value = self.render()
        return tables

    def render(self) -> str:
        if self.item is None:
            return "<i>search and pick an item</i>"
        head = (f"<h4>item {self._id(self.item)} · {self.ds.item_popularity[self.item]} train interactions</h4>"
                f"<p>{html.escape(self.text(self.item))}</p>")
        body = "".join(f"<h5>{html.escape(k)}</h5>" + v.to_html(index=k == "tokens", float_format="%.3f", escape=True)
                       for k, v in self.tables.items())
        return head + body

    def widget(self, initial_query: str = ""):
        import ipywidgets as w

        query = w.Text(value=initial_query, placeholder="search item text or type an item id",
                       description="search", continuous_update=True)
        pick = w.Dropdown(options=[], description="item", layout=w.Layout(width="90%"))
        out = w.HTML()
        self._ui = {"query": query, "pick": pick, "out": out}
        query.observe(lambda ch: self.search(ch["new"]), names="value")
        pick.observe(lambda ch: ch["new"] is not None and self.select(ch["new"]), names="value")
        self.search(initial_query or "0")
        if self.matches:
            pick.value = self.matches[0]
        out.value = self.render()
        return w.VBox([query, pick, out])
