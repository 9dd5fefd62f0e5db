"""Sentences about results (:class:`Finding`): each computed from the numbers of a table, shown as markdown in a
notebook."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import improvement
from .defaults import COLD


class Finding(str):
    """A sentence (markdown) about a result; a plain ``str`` that a notebook shows as markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def describe_tokens(stats: pd.DataFrame, repeats: pd.DataFrame, distortion: pd.DataFrame) -> Finding:
    """01: ids used and their entropy per modality, ids repeated at every position (faiss PQ vs a seed per
    sub-space), and distortion/collisions from the smallest to the largest D."""
    parts = []
    for m, g in stats.groupby("modality", sort=False):
        parts.append(f"{m} tokens use {g.tokens_used.mean():.0f} of {int(g.K.iloc[0])} ids per position on average "
                     f"(entropy {g.entropy_bits.mean():.2f} of {g.max_entropy_bits.iloc[0]:.0f} bits; the busiest id "
                     f"holds {int(g.items_per_token_max.max())} items)")
    text = "; ".join(parts) + "."
    if len(repeats.columns) == 2:
        a, b = repeats.columns
        text += (" Items with the same id at every position: " +
                 ", ".join(f"{m} {_pct(repeats.loc[m, a])} with {a} and {_pct(repeats.loc[m, b])} with {b}"
                           for m in repeats.index) + ".")
    ds_ = sorted(distortion.index.get_level_values("D").unique())
    if len(ds_) > 1:
        lo, hi = ds_[0], ds_[-1]
        moves = [f"{m} {distortion.loc[(lo, m), 'distortion']:.3f} → {distortion.loc[(hi, m), 'distortion']:.3f}"
                 for m in distortion.loc[lo].index]
        c_lo = _pct(distortion.loc[lo].collision_share_all_modalities.iloc[0])
        c_hi = _pct(distortion.loc[hi].collision_share_all_modalities.iloc[0])
        text += (f" From D = {lo} to D = {hi} the distortion goes {', '.join(moves)}, and the share of items whose "
                 f"full code (all modalities) is shared with another item goes from {c_lo} to {c_hi}.")
    return Finding(text)


def describe_run(result) -> Finding:
    """02: epochs, stop reason, best valid and test metrics, the bucket range and the parameter ratio."""
    c, h = result.config, result.history
    text = (f"{c['backbone']} ({c['item_repr']}) on {c['dataset']} trained {len(h)} epochs (stop: {result.stopped}); "
            f"best valid Recall@20 {result.valid.get('recall@20', np.nan):.4f} at epoch {result.best_epoch}. "
            f"Test Recall@20 {result.test['recall@20']:.4f}, NDCG@20 {result.test['ndcg@20']:.4f}.")
    b = result.buckets
    b = b[(b.bucket != COLD) & (b.n_heldout > 0)] if len(b) else b
    if len(b) > 1:
        lo, hi = b.loc[b["recall@20"].idxmin()], b.loc[b["recall@20"].idxmax()]
        text += (f" By item popularity, test Recall@20 runs from {lo['recall@20']:.4f} (bucket {lo.bucket}) to "
                 f"{hi['recall@20']:.4f} (bucket {hi.bucket}).")
    text += (f" The item side has {result.params['item']:,} parameters, {result.params['item_fraction']:.2f}× the "
             "ID table it replaces.")
    return Finding(text)


def describe_comparison(recall: pd.DataFrame, significance: pd.DataFrame | None = None,
                        alpha: float = 0.05, baseline: str = "id") -> Finding:
    """03: per item_repr, on how many backbones its mean beats the ID model's, the largest gain and loss, and how
    many (backbone, seed) paired tests are significant either way after Holm correction over the table
    (``significance``: :func:`motor.analysis.significance_table`), with the largest gain's 95 % interval."""
    out = []
    for kind, g in recall[recall.item_repr != baseline].groupby("item_repr", sort=False):
        g = g.dropna(subset=["improvement_%"])
        if g.empty:
            continue
        wins = g[g["improvement_%"] > 0]
        best, worst = g.loc[g["improvement_%"].idxmax()], g.loc[g["improvement_%"].idxmin()]
        s = (f"**{kind}** has a higher mean test Recall@20 than {baseline} on {len(wins)} of {len(g)} backbones"
             f"{' (' + ', '.join(wins.backbone) + ')' if 0 < len(wins) < len(g) else ''}; "
             f"the change ranges from {worst.backbone} {worst['improvement_%']:+.1f} % to {best.backbone} "
             f"{best['improvement_%']:+.1f} %.")
        if significance is not None and len(significance):
            t = significance[significance.item_repr == kind]
            p = t.p_holm if "p_holm" in t else t.t_pvalue
            up = int(((p < alpha) & (t.mean_diff > 0)).sum())
            down = int(((p < alpha) & (t.mean_diff < 0)).sum())
            s += (f" Paired t-tests over test users, after Holm correction over all {len(significance)} "
                  f"comparisons of the table (adjusted p < {alpha}): {up} of {len(t)} (backbone, seed) pairs "
                  f"significantly better, {down} significantly worse.")
            if "ci_low" in t and len(t):
                top = t.loc[t.mean_diff.idxmax()]
                s += (f" The largest per-seed difference ({top.backbone}, seed {top.seed}) is "
                      f"{top.mean_diff:+.4f} Recall@20 (95 % interval {top.ci_low:+.4f} to {top.ci_high:+.4f}).")
        out.append(s)
    return Finding(" ".join(out) if out else f"No runs to compare with {baseline}.")


def describe_buckets(warm: pd.DataFrame, cold: pd.DataFrame | None = None, metric: str = "recall@20",
                     baseline: str = "id") -> Finding:
    """04: per item_repr, the popularity buckets where its mean ``metric`` is above / below the ID model's, and
    (``cold``: :func:`motor.analysis.bucket_means` of the cold-start split) the cold items' metric."""
    piv = warm[warm.bucket != COLD].pivot_table(index="bucket", columns="item_repr", values=metric, sort=False)
    out = []
    for kind in [k for k in piv.columns if k != baseline]:
        if baseline not in piv:
            break
        diff = piv[kind] - piv[baseline]
        out.append(f"**{kind}** vs {baseline} ({metric}): "
                   f"ahead in buckets {_and([str(b) for b in diff.index[diff > 0]])}; "
                   f"behind in {_and([str(b) for b in diff.index[diff < 0]])}.")
    if cold is not None:
        c = cold[cold.bucket == COLD].set_index("item_repr")[metric]
        if len(c):
            out.append(f"Cold-start split, items without train interactions: {metric} " +
                       ", ".join(f"{k} {v:.4f}" for k, v in c.items()) + ".")
    return Finding(" ".join(out) if out else "No buckets to compare.")


def describe_ablation(table: pd.DataFrame, metric: str = "recall@20") -> Finding:
    """05: the variants ranked by mean ``metric`` and each one's change against the ID model."""
    mean = table[(metric, "mean")]
    order = mean.sort_values(ascending=False)
    base = mean.get("original (ID)", np.nan)
    ranked = [f"{name} {v:.4f}" + (f" ({improvement(v, base):+.1f} % vs ID)" if name != "original (ID)" and base > 0
                                   else "") for name, v in order.items()]
    return Finding(f"Test {metric}, best first: " + "; ".join(ranked) + ".")


def describe_budget(budget: pd.DataFrame) -> Finding:
    """06: item-side parameters relative to the ID table and test Recall@20 for each D, and the best setting."""
    tok = budget[budget.label != "ID"]
    parts = [f"{r['label']}: item side {r['item_params / ID table']:.2f}× the ID table, Recall@20 {r['recall']:.4f}"
             for _, r in tok.iterrows()]
    best = budget.loc[budget.recall.idxmax()]
    idr = budget[budget.label == "ID"].recall
    head = f"ID: Recall@20 {idr.iloc[0]:.4f}. " if len(idr) else ""
    return Finding(head + "; ".join(parts) + f". Highest test Recall@20: {best.label}.")


def describe_neighbours(table: pd.DataFrame) -> Finding:
    """07: mean shared tokens with the nearest items by each representation vs a random item."""
    n = int(table.of_positions.iloc[0])
    parts = [f"{name}: {v:.2f}" for name, v in table.mean_shared_tokens.items()]
    return Finding(f"Tokens (of {n} positions) an item shares on average with — " + "; ".join(parts) + ".")


def describe_cold_protocols(table: pd.DataFrame) -> str:
    """A sentence comparing the item representations under both protocols
    (:func:`motor.studies.cold_start_protocols`)."""
    if table.empty:
        return "No cold-start runs."
    n = int(table["candidates"].iloc[0])
    fmt = ", ".join(f"{k} {v:.4f}" for k, v in table["cold candidates · Recall@20"].items())
    best = table["cold candidates · Recall@20"].idxmax()
    allf = ", ".join(f"{k} {v:.4f}" for k, v in table["all items · Recall@20"].items())
    return (f"Ranking only the {n} cold test items (for {int(table['users'].iloc[0])} users), test Recall@20 is "
            f"{fmt} (a random ranking: {table['random · Recall@20'].iloc[0]:.4f}); {best} ranks them best. "
            f"Among all items, the same cold items get Recall@20 {allf}.")


def describe_sparsity(summary: pd.DataFrame, crossover: pd.DataFrame) -> Finding:
    """Markdown: per backbone, the crossover sentence of :func:`motor.analysis.sparsity_crossover` and how many
    keeps show a significant paired difference (seed-averaged per-user test of
    :func:`motor.analysis.sparsity_summary`)."""
    lines = []
    for r in crossover.itertuples():
        g = summary[summary.backbone == r.backbone]
        sig_up = int((g.significant & (g.mean_diff > 0)).sum())
        sig_down = int((g.significant & (g.mean_diff < 0)).sum())
        lines.append(f"- {r.statement} Significant after Holm correction over the {len(summary)} densities x "
                     f"backbones of the table (paired t-test over test users, adjusted p < 0.05): "
                     f"{sig_up} of {len(g)} densities better, {sig_down} worse.")
    return Finding("\n".join(lines) if lines else "No runs.")


def describe_hit_positions(summary: pd.DataFrame, baseline: str = "id", split_at: int = 10) -> Finding:
    """03: for each item representation, how its hits per user in the top and bottom part of the list differ from
    ``baseline``'s (``analysis.hit_position_summary``), and which popularity buckets carry the difference."""
    if summary.empty or baseline not in set(summary.item_repr):
        return Finding("No hit profiles saved for these runs (runs saved before hit profiles existed).")
    s = summary.set_index(["item_repr", "bucket"])
    top, rest = [c for c in summary.columns if c.startswith("hits ")]
    out = []
    for kind in [k for k in summary.item_repr.unique() if k != baseline]:
        a, b = s.loc[(kind, "all")], s.loc[(baseline, "all")]
        d_top, d_rest, d_dcg = a[top] - b[top], a[rest] - b[rest], a["dcg"] - b["dcg"]
        per_bucket = (s.loc[kind].hits - s.loc[baseline].hits).drop("all", errors="ignore")
        dcg_bucket = (s.loc[kind].dcg - s.loc[baseline].dcg).drop("all", errors="ignore")
        gain_b, loss_b = per_bucket.idxmax(), per_bucket.idxmin()
        per_hit_a, per_hit_b = a["dcg"] / a["hits"], b["dcg"] / b["hits"]
        where = "lower" if per_hit_a < per_hit_b else "higher"
        out.append(f"**{kind}** vs {baseline}: {d_top:+.4f} hits per user at ranks {top.split()[1]} and "
                   f"{d_rest:+.4f} at ranks {rest.split()[1]} (DCG per user {d_dcg:+.4f}); a hit earns "
                   f"{per_hit_a:.3f} DCG on average against {per_hit_b:.3f} for {baseline}, "
                   f"so its hits sit {where} in the list. By the held-out item's popularity, the largest gain is on "
                   f"items with {gain_b} train interactions ({per_bucket[gain_b]:+.4f} hits per user) and the "
                   f"largest loss on {loss_b} ({per_bucket[loss_b]:+.4f}); the DCG it loses most is on "
                   f"{dcg_bucket.idxmin()} ({dcg_bucket.min():+.4f}).")
    return Finding(" ".join(out))


def describe_ties(ties: pd.DataFrame, k: int = 20) -> Finding:
    """03: how many runs were evaluated with tie-aware metrics, and where ties at the cut-off are common
    (``analysis.tie_table``)."""
    if ties.empty:
        return Finding("No runs.")
    n, aware = int(ties.runs.sum()), int(ties.tie_aware.sum())
    text = (f"{aware} of {n} runs were evaluated with tie-aware metrics (expected values over random orders of tied "
            "scores).")
    old = ties[ties.tie_aware < ties.runs]
    if len(old):
        text += (f" {n - aware} were saved before and rank tied items by the lower item id "
                 f"({_and(sorted(set(old.backbone)))}); re-train them to update them.")
    col = f"tie_share@{k}"
    seen = ties.dropna(subset=[col])
    if len(seen):
        top = seen.loc[seen[col].idxmax()]
        text += (f" The share of test users with a tie across rank {k} is largest for {top.backbone}-{top.item_repr} "
                 f"({_pct(top[col])})")
        low = seen[seen.item_repr == "id"][col]
        text += (f"; for the ID models it is at most {_pct(low.max())}." if len(low) else ".")
    return Finding(text)
