"""Plotly figures for the notebooks (each returns a ``plotly.graph_objects.Figure``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"id": "#7f7f7f", "ms": "#d62728", "ma": "#1f77b4", "mean": "#2ca02c", "linear": "#9467bd"}


def popularity_long_tail(item_popularity: np.ndarray, title: str = "Train interactions per item") -> go.Figure:
    pop = np.sort(np.asarray(item_popularity))[::-1]
    fig = go.Figure(go.Scatter(x=np.arange(1, len(pop) + 1), y=np.maximum(pop, 0.5), mode="lines"))
    share = (pop <= 5).mean()
    fig.update_layout(title=f"{title} ({share:.0%} of items have ≤ 5)", xaxis_title="item rank",
                      yaxis_title="train interactions", yaxis_type="log", template="plotly_white")
    return fig


def items_per_token_figure(ipt: pd.DataFrame, n_centroids: int = 256) -> go.Figure:
    """Paper Fig. 6: items per token id, one panel per modality, a line per token position."""
    mods = sorted(ipt.modality.unique())
    fig = make_subplots(rows=1, cols=len(mods), subplot_titles=[f"{m} tokens" for m in mods], shared_yaxes=True)
    for c, m in enumerate(mods, start=1):
        for p, g in ipt[ipt.modality == m].groupby("position"):
            full = np.zeros(n_centroids, int)
            full[g.token.to_numpy()] = g.n_items.to_numpy()
            fig.add_trace(go.Bar(x=np.arange(n_centroids), y=full, name=f"{m} pos {p}", opacity=0.6), row=1, col=c)
        fig.update_xaxes(title_text="token id", row=1, col=c)
    fig.update_layout(barmode="overlay", title="Items per token id (paper Fig. 6)", yaxis_title="items",
                      template="plotly_white")
    return fig


def training_curve(history: pd.DataFrame, metric: str = "valid_recall@20", title: str = "Training") -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=history.epoch, y=history.loss, name="train loss"), secondary_y=False)
    if metric in history:
        fig.add_trace(go.Scatter(x=history.epoch, y=history[metric], name=metric), secondary_y=True)
        best = history[metric].idxmax()
        fig.add_vline(x=history.epoch[best], line_dash="dot", annotation_text="best valid")
    fig.update_layout(title=title, xaxis_title="epoch", template="plotly_white")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text=metric, secondary_y=True)
    return fig


def bucket_figure(buckets: pd.DataFrame, metric: str = "recall@20", title: str | None = None) -> go.Figure:
    """Paper Fig. 3: a metric per popularity bucket for each item_repr, gain over ``id`` shaded.

    ``buckets``: columns bucket, item_repr, <metric> (mean over seeds), ordered as the buckets should appear.
    """
    fig = go.Figure()
    order = list(dict.fromkeys(buckets.bucket))
    piv = buckets.pivot_table(index="bucket", columns="item_repr", values=metric).reindex(order)
    if "id" in piv:
        for kind in [c for c in piv.columns if c != "id"]:
            fig.add_trace(go.Scatter(x=order + order[::-1], y=list(piv[kind]) + list(piv["id"])[::-1],
                                     fill="toself", fillcolor="rgba(214,39,40,0.12)", line=dict(width=0),
                                     hoverinfo="skip", showlegend=False))
    for n, kind in enumerate(piv.columns):
        # values printed at the points: the long-tail and cold buckets are near zero at the popular bucket's scale
        fig.add_trace(go.Scatter(x=order, y=piv[kind], mode="lines+markers+text", name=kind,
                                 text=[f"{v:.3f}" for v in piv[kind]], textfont=dict(color=COLORS.get(kind)),
                                 textposition="bottom right" if n % 2 else "top left",
                                 line=dict(color=COLORS.get(kind))))
    fig.update_layout(title=title or f"{metric} by item popularity (train interactions)",
                      xaxis_title="item popularity bucket", yaxis_title=metric, template="plotly_white")
    return fig


def compare_bars(table: pd.DataFrame, title: str = "Test Recall@20, mean ± std over seeds") -> go.Figure:
    """Grouped bars: x backbone, one bar per item_repr, error bars = std."""
    fig = px.bar(table, x="backbone", y="mean", error_y="std", color="item_repr", barmode="group",
                 facet_col="dataset" if table.dataset.nunique() > 1 else None, color_discrete_map=COLORS,
                 title=title, template="plotly_white")
    return fig


def budget_figure(df: pd.DataFrame, title: str = "Parameters and Recall@20 vs tokens per modality") -> go.Figure:
    """Paper Fig. 4. ``df``: columns label (e.g. 'ID', 'D=2'), params, recall (one row per setting)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=df.label, y=df.params, name="trainable parameters", marker_color="#c7c7c7"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=df.label, y=df.recall, name="test Recall@20", mode="lines+markers",
                             line=dict(color=COLORS["ms"])), secondary_y=True)
    fig.update_layout(title=title, template="plotly_white")
    fig.update_yaxes(title_text="trainable parameters", secondary_y=False)
    fig.update_yaxes(title_text="Recall@20", secondary_y=True)
    return fig


def umap_figure(coords: dict[str, np.ndarray], colour: np.ndarray, hover: list[str] | None = None,
                title: str = "UMAP of item representations") -> go.Figure:
    """One panel per representation (e.g. {'ID': xy, 'MOTOR': xy}), points coloured by ``colour`` labels."""
    frames = []
    for name, xy in coords.items():
        n = len(xy)
        frames.append(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "repr": name, "bucket": np.asarray(colour)[:n],
                                    "text": (hover or [""] * n)[:n]}))
    df = pd.concat(frames)
    fig = px.scatter(df, x="x", y="y", color="bucket", facet_col="repr", hover_name="text", opacity=0.7,
                     title=title, template="plotly_white")
    fig.update_xaxes(matches=None, showticklabels=False)
    fig.update_yaxes(matches=None, showticklabels=False)
    return fig
