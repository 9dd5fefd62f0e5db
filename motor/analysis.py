"""Analysis on top of the run registry and the tokens: comparison tables, paired tests, neighbours, UMAP."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from . import runs


def main_runs(df: pd.DataFrame, split: str = "random", n_tokens: int = 4, variant: str = "") -> pd.DataFrame:
    """Registry rows of the main comparison only: one split, all modalities, D tokens, default settings (drops
    ablation, token-budget, cold-start and variant runs, which would otherwise be averaged into the same
    (backbone, item_repr) cell)."""
    return df[(df.split == split) & (df.modalities == "all") & (df.n_tokens == n_tokens) & (df.variant == variant)]


def metric_frame(df: pd.DataFrame, metric: str = "recall", k: int = 20, eval_split: str = "test",
                 bucket: str = "all") -> pd.DataFrame:
    """Rows of the tidy registry for one metric (one row per run)."""
    sel = df[(df.metric == metric) & (df.k == k) & (df.eval_split == eval_split) & (df.bucket == bucket)]
    return sel.drop_duplicates("run_id")


def compare_table(df: pd.DataFrame, metric: str = "recall", k: int = 20, eval_split: str = "test",
                  baseline: str = "id") -> pd.DataFrame:
    """Mean, std and count over seeds per (dataset, backbone, item_repr), and improvement % over ``baseline``."""
    sel = metric_frame(df, metric, k, eval_split)
    g = sel.groupby(["dataset", "backbone", "item_repr"])["value"].agg(["mean", "std", "count"]).reset_index()
    base = g[g.item_repr == baseline].set_index(["dataset", "backbone"])["mean"]
    key = list(zip(g.dataset, g.backbone))
    g["improvement_%"] = [100 * (m / base[kk] - 1) if kk in base.index and base[kk] > 0 else np.nan
                          for m, kk in zip(g["mean"], key)]
    g["metric"] = f"{metric}@{k}"
    return g


def mean_std_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' strings: rows (dataset, backbone), columns item_repr; cells over fewer seeds than the most
    complete cell say so, e.g. ``0.3262 (n=1)``."""
    t = table.copy()
    full = t["count"].max() if "count" in t else 0
    t["cell"] = [(f"{m:.4f} ± {s:.4f}" if pd.notna(s) else f"{m:.4f}") + (f" (n={int(n)})" if n < full else "")
                 for m, s, n in zip(t["mean"], t["std"], t["count"] if "count" in t else [full] * len(t))]
    return t.pivot_table(index=["dataset", "backbone"], columns="item_repr", values="cell", aggfunc="first")


def paired_test(run_a: str, run_b: str, metric: str = "recall@20") -> dict:
    """Paired comparison over test users of two runs on the same split: mean difference (b - a), t-test and
    Wilcoxon signed-rank p-values."""
    a, b = runs.read(run_a)["per_user"], runs.read(run_b)["per_user"]
    m = a[["user", metric]].merge(b[["user", metric]], on="user", suffixes=("_a", "_b"))
    diff = m[f"{metric}_b"] - m[f"{metric}_a"]
    out = {"n_users": len(m), "mean_a": m[f"{metric}_a"].mean(), "mean_b": m[f"{metric}_b"].mean(),
           "mean_diff": diff.mean()}
    out["t_pvalue"] = float(stats.ttest_rel(m[f"{metric}_b"], m[f"{metric}_a"]).pvalue) if diff.any() else 1.0
    out["wilcoxon_pvalue"] = float(stats.wilcoxon(diff[diff != 0]).pvalue) if (diff != 0).sum() > 0 else 1.0
    return out


def significance_table(df: pd.DataFrame, metric: str = "recall@20", baseline: str = "id") -> pd.DataFrame:
    """For every (dataset, backbone, seed, item_repr != baseline): paired test against the baseline run."""
    ids = df.drop_duplicates("run_id")[["run_id", "dataset", "split", "backbone", "item_repr", "modalities",
                                        "n_tokens", "seed"]]
    rows = []
    for (ds, split, bb, seed), g in ids.groupby(["dataset", "split", "backbone", "seed"]):
        base = g[g.item_repr == baseline]
        if base.empty:
            continue
        for rec in g[g.item_repr != baseline].itertuples():
            res = paired_test(base.run_id.iloc[0], rec.run_id, metric)
            rows.append({"dataset": ds, "backbone": bb, "seed": seed, "item_repr": rec.item_repr, **res})
    return pd.DataFrame(rows)


def shared_token_neighbours(token_ids: dict[str, np.ndarray], item: int, top: int = 5,
                            modalities=None) -> pd.DataFrame:
    """Items sharing the most tokens with ``item`` (ties broken by item id): columns item, shared, per modality."""
    mods = modalities or sorted(token_ids)
    per = {m: (token_ids[m] == token_ids[m][item][None]).sum(1) for m in mods}
    total = sum(per.values())
    total[item] = -1
    order = np.lexsort((np.arange(len(total)), -total))[:top]
    return pd.DataFrame({"item": order, "shared": total[order], **{f"shared_{m}": per[m][order] for m in mods}})


def vector_neighbours(vectors: np.ndarray, item: int, top: int = 5) -> pd.DataFrame:
    """Nearest items by cosine similarity of learned item vectors."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v[item]
    sim[item] = -np.inf
    order = np.argsort(-sim, kind="stable")[:top]
    return pd.DataFrame({"item": order, "cosine": sim[order]})


def search_items(item_text: list[str] | None, query: str, limit: int = 20) -> list[int]:
    """Item ids whose text contains ``query`` as a phrase, else every word of it (case-insensitive); an integer
    query is an item id."""
    q = query.strip()
    if q.isdigit():
        return [int(q)]
    if not item_text or not q:
        return []
    low = [t.lower() for t in item_text]
    phrase = [i for i, t in enumerate(low) if q.lower() in t]
    if phrase:
        return phrase[:limit]
    words = q.lower().split()
    return [i for i, t in enumerate(low) if all(w in t for w in words)][:limit]


def umap_2d(vectors: np.ndarray, seed: int = 0, n_neighbors: int = 15, max_points: int | None = None) -> np.ndarray:
    """2-D UMAP of item vectors (cosine metric); ``max_points`` keeps it fast in CI (first call JITs ~40 s)."""
    import umap

    x = vectors if max_points is None else vectors[:max_points]
    return umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed).fit_transform(x)


def results_markdown(df: pd.DataFrame, k: int = 20, baseline: str = "id") -> str:
    """Markdown table: per (dataset, backbone, item_repr) test Recall@k and NDCG@k as mean ± std (n seeds) and the
    Recall improvement over ``baseline`` in %. Built from the registry, so the numbers are the registry's."""
    rec, ndcg = compare_table(df, "recall", k), compare_table(df, "ndcg", k)
    t = rec.merge(ndcg, on=["dataset", "backbone", "item_repr"], suffixes=("_r", "_n"))
    t = t.rename(columns={"improvement_%_r": "imp"})
    lines = [f"| dataset | backbone | item repr | Recall@{k} | NDCG@{k} | seeds | Recall vs {baseline} |",
             "|---|---|---|---|---|---|---|"]
    def cell(mean, std, n):  # a single run has no spread to show
        return f"{mean:.4f}" if n < 2 or pd.isna(std) else f"{mean:.4f} ± {std:.4f}"

    for r in t.itertuples():
        imp = "—" if r.item_repr == baseline or pd.isna(r.imp) else f"{r.imp:+.1f} %"
        lines.append(f"| {r.dataset} | {r.backbone} | {r.item_repr} | {cell(r.mean_r, r.std_r, r.count_r)} "
                     f"| {cell(r.mean_n, r.std_n, r.count_r)} | {r.count_r} | {imp} |")
    return "\n".join(lines)
