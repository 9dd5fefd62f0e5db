"""Plotly figures for the notebooks (each returns a ``plotly.graph_objects.Figure``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .defaults import COLD
from .item_repr import ITEM_REPRS

# one colour per item representation, in registration order: id grey, ms red, ma blue, mean green, linear purple,
# ms+id orange, then any representation registered later
_PALETTE = ["#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22",
            "#17becf"]


def item_repr_colors(names=()) -> dict[str, str]:
    """{item representation: colour} for every registered one (motor.item_repr.ITEM_REPRS) and any of ``names``
    that is not registered (a run of a representation this process has not defined)."""
    order = list(ITEM_REPRS) + [n for n in dict.fromkeys(names) if n not in ITEM_REPRS]
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(order)}
# a right-hand axis with its own round ticks and no second grid (plotly.js otherwise syncs its ticks to the
# left axis's grid lines, which gives values such as 0.2117, 0.2198, ...)
_RIGHT_AXIS = dict(tickmode="auto", nticks=6, showgrid=False, tickformat=".3~f")


def popularity_long_tail(item_popularity: np.ndarray, title: str = "Train interactions per item") -> go.Figure:
    pop = np.sort(np.asarray(item_popularity))[::-1]
    fig = go.Figure(go.Scatter(x=np.arange(1, len(pop) + 1), y=np.maximum(pop, 0.5), mode="lines"))
    share = (pop <= 5).mean()
    fig.update_layout(title=f"{title} ({share:.0%} of items have ≤ 5)", xaxis_title="item rank",
                      yaxis_title="train interactions", yaxis_type="log", template="plotly_white")
    return fig


def items_per_token_figure(ipt: pd.DataFrame, n_centroids: int = 256) -> go.Figure:
    """Paper Fig. 6: how evenly items spread over token ids. One panel per modality, one line per token position:
    the ids sorted by their number of items (unused ids count 0), so a flat line is an even spread and a steep
    head a few crowded ids. ``ipt``: :func:`motor.tokenizer.items_per_token`."""
    mods = sorted(ipt.modality.unique())
    fig = make_subplots(rows=1, cols=len(mods), subplot_titles=[f"{m} tokens" for m in mods], shared_yaxes=True)
    positions = sorted(ipt.position.unique())
    palette = px.colors.qualitative.D3
    for c, m in enumerate(mods, start=1):
        for p, g in ipt[ipt.modality == m].groupby("position"):
            counts = np.zeros(max(n_centroids, int(g.token.max()) + 1), int)
            counts[g.token.to_numpy()] = g.n_items.to_numpy()
            counts = np.sort(counts)[::-1]
            fig.add_trace(go.Scatter(x=np.arange(1, len(counts) + 1), y=counts, mode="lines", name=f"position {p}",
                                     legendgroup=f"position {p}", showlegend=c == 1,
                                     line=dict(color=palette[positions.index(p) % len(palette)], width=1.5),
                                     hovertemplate=f"{m}, position {p}: id rank %{{x}} holds %{{y}} items"
                                                   "<extra></extra>"), row=1, col=c)
        fig.update_xaxes(title_text="token ids, most items first", row=1, col=c)
    fig.update_yaxes(title_text="items per token id", row=1, col=1)
    fig.update_layout(title="Items per token id (paper Fig. 6)", legend_title_text="token position",
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
    fig.update_yaxes(title_text=metric, secondary_y=True, **_RIGHT_AXIS)
    return fig


def bucket_figure(buckets: pd.DataFrame, metric: str = "recall@20", title: str | None = None) -> go.Figure:
    """Paper Fig. 3: a metric per popularity bucket for each item_repr, gain over ``id`` shaded.

    ``buckets``: columns bucket, item_repr, <metric> (mean over seeds), ordered as the buckets should appear.
    """
    fig = go.Figure()
    order = list(dict.fromkeys(buckets.bucket))
    order = ([COLD] if COLD in order else []) + [b for b in order if b != COLD]  # cold first, then by popularity
    piv = buckets.pivot_table(index="bucket", columns="item_repr", values=metric).reindex(order)
    if "id" in piv:
        for kind in [c for c in piv.columns if c != "id"]:
            fig.add_trace(go.Scatter(x=order + order[::-1], y=list(piv[kind]) + list(piv["id"])[::-1],
                                     fill="toself", fillcolor="rgba(214,39,40,0.12)", line=dict(width=0),
                                     hoverinfo="skip", showlegend=False))
    colors = item_repr_colors(piv.columns)
    for n, kind in enumerate(piv.columns):
        # values printed at the points: the long-tail and cold buckets are near zero at the popular bucket's scale
        fig.add_trace(go.Scatter(x=order, y=piv[kind], mode="lines+markers+text", name=kind,
                                 text=[f"{v:.3f}" for v in piv[kind]], textfont=dict(color=colors[kind]),
                                 textposition="bottom right" if n % 2 else "top left",
                                 line=dict(color=colors[kind])))
    fig.update_layout(title=title or f"{metric} by item popularity (train interactions)",
                      xaxis_title="item popularity bucket", yaxis_title=metric, template="plotly_white")
    return fig


def compare_bars(table: pd.DataFrame, title: str = "Test Recall@20, mean ± std over seeds") -> go.Figure:
    """Grouped bars: x backbone, one bar per item_repr, error bars = std (``table``:
    :func:`motor.analysis.compare_table`; the y axis is named after its ``metric``)."""
    metric = str(table.metric.iloc[0]) if "metric" in table and len(table) else "mean"
    label = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
    fig = px.bar(table, x="backbone", y="mean", error_y="std", color="item_repr", barmode="group",
                 facet_col="dataset" if table.dataset.nunique() > 1 else None,
                 color_discrete_map=item_repr_colors(table.item_repr),
                 labels={"mean": f"test {label} (mean over seeds)", "item_repr": "item repr"},
                 title=title, template="plotly_white")
    return fig


def budget_figure(df: pd.DataFrame, title: str = "Parameters and Recall@20 vs tokens per modality") -> go.Figure:
    """Paper Fig. 4. ``df``: columns label (e.g. 'ID', 'D=2'), params, recall (one row per setting)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=df.label, y=df.params, name="trainable parameters", marker_color="#c7c7c7"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=df.label, y=df.recall, name="test Recall@20", mode="lines+markers",
                             line=dict(color=item_repr_colors()["ms"])), secondary_y=True)
    fig.update_layout(title=title, template="plotly_white")
    fig.update_yaxes(title_text="trainable parameters", secondary_y=False)
    fig.update_yaxes(title_text="test Recall@20", secondary_y=True, **_RIGHT_AXIS)
    fig.update_xaxes(title_text="item representation (D = tokens per modality)")
    return fig


def umap_figure(coords: dict[str, np.ndarray], colour: np.ndarray, hover: list[str] | None = None,
                title: str = "UMAP of item representations", order: list[str] | None = None,
                axis: str = "UMAP", legend: str = "train interactions") -> go.Figure:
    """One panel per representation (e.g. {'ID': xy, 'MOTOR': xy}), points coloured by ``colour`` labels, legend
    in ``order`` (default: first appearance) on a light-to-dark scale; axes ``<axis>-1`` and ``<axis>-2``."""
    frames = []
    for name, xy in coords.items():
        n = len(xy)
        frames.append(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "repr": name, "bucket": np.asarray(colour)[:n],
                                    "text": [t[:80] for t in (hover or [""] * n)[:n]]}))  # short: one per point
    df = pd.concat(frames)
    order = [b for b in (order or list(dict.fromkeys(df.bucket))) if b in set(df.bucket)]
    scale = px.colors.sample_colorscale("Viridis", [0.9 - 0.85 * i / max(len(order) - 1, 1) for i in range(len(order))])
    fig = px.scatter(df, x="x", y="y", color="bucket", facet_col="repr", hover_name="text", opacity=0.7,
                     category_orders={"bucket": order}, color_discrete_sequence=scale,
                     labels={"x": f"{axis}-1", "y": f"{axis}-2", "bucket": legend}, title=title,
                     template="plotly_white")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))  # panel titles: "ID", not "repr=ID"
    fig.update_xaxes(matches=None, showticklabels=False)
    fig.update_yaxes(matches=None, showticklabels=False)
    return fig


def sparsity_figure(summary: pd.DataFrame, item_repr: str = "ms", baseline: str = "id",
                    metric: str = "Recall@20") -> go.Figure:
    """MOTOR-vs-ID improvement against data density (``analysis.sparsity_summary``): left x = interactions per user,
    right x = interactions per item (log scales), one line per backbone; filled markers: the paired test over test
    users is significant after Holm correction (``p_holm``), open: not."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=["vs interactions per user", "vs interactions per item"])
    palette = px.colors.qualitative.D3
    for n, (bb, g) in enumerate(summary.groupby("backbone", sort=False)):
        g = g.sort_values("per_user")
        colour = palette[n % len(palette)]
        symbols = ["circle" if s else "circle-open" for s in g.significant]
        p_col = g.p_holm if "p_holm" in g else g.t_pvalue
        hover = [f"{bb}, keep {k:g}: {imp:+.1f} % (Holm-adjusted p = {p:.2g})"
                 for k, imp, p in zip(g.keep, g["improvement_%"], p_col)]
        for col, x in ((1, "per_user"), (2, "per_item")):
            fig.add_trace(go.Scatter(x=g[x], y=g["improvement_%"], mode="lines+markers", name=bb, legendgroup=bb,
                                     showlegend=col == 1, line=dict(color=colour),
                                     marker=dict(symbol=symbols, size=10, color=colour), hovertext=hover,
                                     hoverinfo="text"), row=1, col=col)
    for col in (1, 2):
        fig.add_hline(y=0, line_dash="dot", line_color="#7f7f7f", row=1, col=col)
        fig.update_xaxes(type="log", title_text="interactions per " + ("user" if col == 1 else "item"), row=1, col=col)
    fig.update_yaxes(title_text=f"{item_repr} vs {baseline}: test {metric} change (%)", row=1, col=1)
    fig.update_layout(title=f"Where MOTOR wins: {item_repr} vs {baseline} as the data thins out "
                            "(filled: paired test p < 0.05)", template="plotly_white")
    return fig


def learning_curves_figure(curves: pd.DataFrame, title: str = "Learning curves") -> go.Figure:
    """Training loss (left, relative to each run's first epoch) and valid metric (right; the train metric dashed
    where recorded) per epoch for the runs of :func:`motor.analysis.learning_curves`, one colour per item
    representation, a marker on each run's kept (best) epoch."""
    fig = make_subplots(rows=1, cols=2,
                        subplot_titles=["training loss / first epoch's", "recall (valid; train dashed)"])
    colours = item_repr_colors(curves.item_repr.unique())
    shown: set = set()
    for (_rid, label), g in curves.groupby(["run_id", "label"], sort=False):
        g = g.sort_values("epoch")
        colour = colours.get(g.item_repr.iloc[0], "#000000")
        first = label not in shown
        shown.add(label)
        seed = g.seed.iloc[0]
        fig.add_trace(go.Scatter(x=g.epoch, y=g.loss_rel, mode="lines", name=str(label), legendgroup=str(label),
                                 showlegend=first, line=dict(color=colour, width=1.5),
                                 hovertemplate=f"{label}, seed {seed}: epoch %{{x}}, loss ratio %{{y:.3f}}"
                                               "<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g.epoch, y=g.valid, mode="lines", name=str(label), legendgroup=str(label),
                                 showlegend=False, line=dict(color=colour, width=1.5),
                                 hovertemplate=f"{label}, seed {seed}: epoch %{{x}}, valid %{{y:.4f}}<extra></extra>"),
                      row=1, col=2)
        if g.train.notna().any():
            fig.add_trace(go.Scatter(x=g.epoch, y=g.train, mode="lines", name=f"{label} (train)",
                                     legendgroup=str(label), showlegend=False,
                                     line=dict(color=colour, width=1, dash="dash"),
                                     hovertemplate=f"{label}, seed {seed}: epoch %{{x}}, train %{{y:.4f}}"
                                                   "<extra></extra>"), row=1, col=2)
        best = g[g.best]
        fig.add_trace(go.Scatter(x=best.epoch, y=best.valid, mode="markers", showlegend=False,
                                 legendgroup=str(label), marker=dict(color=colour, size=9, symbol="star"),
                                 hovertemplate=f"{label}, seed {seed}: kept epoch %{{x}}<extra></extra>"),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title=title, legend_title_text="item representation", template="plotly_white")
    return fig


def hit_position_figure(profiles: pd.DataFrame, baseline: str = "id", title: str | None = None) -> go.Figure:
    """Where the test hits land (``analysis.hit_profiles``): left, expected hits per user at each rank position
    (all items) per item representation; right, each representation's difference to ``baseline`` per position,
    stacked by the held-out item's popularity bucket (train interactions)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["hits per user at each rank (all items)",
                                                        f"difference to {baseline}, by item popularity"])
    colours = item_repr_colors(profiles.item_repr.unique())
    allp = profiles[profiles.bucket == "all"]
    for kind, g in allp.groupby("item_repr", sort=False):
        fig.add_trace(go.Scatter(x=g.position + 1, y=g.hits, mode="lines+markers", name=kind,
                                 line=dict(color=colours.get(kind))), row=1, col=1)
    base = profiles[profiles.item_repr == baseline].set_index(["bucket", "position"]).hits
    palette = px.colors.sequential.Viridis
    buckets = [b for b in profiles.bucket.unique() if b != "all"]
    for kind in [k for k in profiles.item_repr.unique() if k != baseline]:
        g = profiles[(profiles.item_repr == kind) & (profiles.bucket != "all")].set_index(["bucket", "position"])
        for n, b in enumerate(buckets):
            if b not in g.index.get_level_values(0):
                continue
            d = g.loc[b].hits - base.loc[b].reindex(g.loc[b].index).fillna(0)
            fig.add_trace(go.Bar(x=d.index + 1, y=d.values, name=f"{kind} − {baseline}: {b}",
                                 marker_color=palette[int(n * (len(palette) - 1) / max(len(buckets) - 1, 1))]),
                          row=1, col=2)
    fig.update_layout(barmode="relative", title=title or "Where the test hits land", height=420)
    fig.update_xaxes(title_text="rank position")
    fig.update_yaxes(title_text="expected hits per user", row=1, col=1)
    return fig
