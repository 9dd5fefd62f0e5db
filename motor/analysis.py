"""Tables and statistics from the run registry: comparison tables, 'mean ± std' cells, paired tests, the sparsity
summary, the tuned comparison and learning-curve summaries. Pure functions of DataFrames (and saved runs)."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
from scipy import stats

from . import runs
from .defaults import COLD


def mean_std_cell(mean: float, std: float, n: int | None = None) -> str:
    """The one way a 'mean ± std' cell is written: ``0.1234 ± 0.0056``; ``0.1234`` when there is no spread to show
    (std NaN, or fewer than 2 runs ``n``); "—" when there is no mean."""
    if pd.isna(mean):
        return "—"
    return f"{mean:.4f}" if pd.isna(std) or (n is not None and n < 2) else f"{mean:.4f} ± {std:.4f}"


def improvement(new: float, base: float) -> float:
    """The one improvement %: 100 (new / base - 1); NaN when the base is not > 0 (no ratio to state)."""
    return 100.0 * (new / base - 1.0) if base > 0 else np.nan


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
    g["improvement_%"] = [improvement(m, base[kk]) if kk in base.index else np.nan for m, kk in zip(g["mean"], key)]
    g["metric"] = f"{metric}@{k}"
    return g


def mean_std_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' strings: rows (dataset, backbone), columns item_repr; cells over fewer seeds than the most
    complete cell say so, e.g. ``0.3262 (n=1)``."""
    t = table.copy()
    full = t["count"].max() if "count" in t else 0
    t["cell"] = [mean_std_cell(m, s) + (f" (n={int(n)})" if n < full else "")
                 for m, s, n in zip(t["mean"], t["std"], t["count"] if "count" in t else [full] * len(t))]
    return t.pivot_table(index=["dataset", "backbone"], columns="item_repr", values="cell", aggfunc="first")


def mean_std(frame: pd.DataFrame, by: str, metrics: list[str]) -> pd.DataFrame:
    """Mean and std (ddof 1) of ``metrics`` per ``by`` value, in order of first appearance (columns (metric, stat));
    column ``("seeds", "n")`` = rows per group."""
    g = frame.groupby(by, sort=False)
    out = g[metrics].agg(["mean", "std"])
    out[("seeds", "n")] = g.size()
    return out


METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def test_means(results: list, metrics=None) -> pd.DataFrame:
    """Test metrics over all test items per item_repr: mean and std over seeds (columns (metric, stat)) and
    ``seeds``. ``metrics`` default: Recall/NDCG@10/20 and, when present, the cold-candidate metrics."""
    if metrics is None:
        extra = [k for k in results[0].test if k.startswith("cold_candidates_") and "@" in k] if results else []
        metrics = [*METRICS, *extra]
    rows = [{"item_repr": r.config["item_repr"], **{m: r.test.get(m, np.nan) for m in metrics}} for r in results]
    return mean_std(pd.DataFrame(rows), "item_repr", list(metrics))


def bucket_means(results: list, metrics=("recall@20", "ndcg@20")) -> pd.DataFrame:
    """Per (popularity bucket, item_repr): n_items, n_heldout and ``metrics`` averaged over the runs' seeds, and
    ``seeds``. Buckets in evaluation order with ``cold (0)`` (no train interactions) first; item_reprs in the
    order of ``results``."""
    frames = [r.buckets.assign(item_repr=r.config["item_repr"], seed=r.config["seed"]) for r in results]
    b = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(b.bucket))
    order = ([COLD] if COLD in order else []) + [x for x in order if x != COLD]
    kinds = list(dict.fromkeys(b.item_repr))
    cols = ["n_items", "n_heldout", *metrics]
    out = b.groupby(["bucket", "item_repr"], sort=False)[cols].mean()
    out["seeds"] = b.groupby(["bucket", "item_repr"], sort=False).seed.nunique()
    out = out.reset_index()
    out["bucket"] = pd.Categorical(out.bucket, order, ordered=True)
    out["item_repr"] = pd.Categorical(out.item_repr, kinds, ordered=True)
    out = out.sort_values(["bucket", "item_repr"]).reset_index(drop=True)
    out["bucket"], out["item_repr"] = out.bucket.astype(str), out.item_repr.astype(str)
    return out


def comparison_tables(df: pd.DataFrame, k: int = 20) -> dict[str, pd.DataFrame]:
    """:func:`motor.analysis.compare_table` for recall and ndcg @k."""
    return {m: compare_table(df, m, k) for m in ("recall", "ndcg")}


def comparison_wide(tables: dict[str, pd.DataFrame], k: int = 20) -> pd.DataFrame:
    """'mean ± std' cells: rows (dataset, backbone), columns (METRIC@k, item_repr)."""
    return pd.concat({f"{m.upper()}@{k}": mean_std_pivot(t) for m, t in tables.items()}, axis=1)


def improvement_pivot(table: pd.DataFrame) -> pd.DataFrame:
    """Improvement % over the ID model: rows backbone, columns '<item_repr> vs id (%)'."""
    imp = table[table.item_repr != "id"].pivot_table(index="backbone", columns="item_repr",
                                                     values="improvement_%").round(1)
    imp.columns = [f"{c} vs id (%)" for c in imp.columns]
    return imp


def bold_best(wide: pd.DataFrame):
    """``wide`` (cells 'mean ± std') styled with the best mean of every column in bold."""
    def col_style(col):
        vals = col.astype(str).str.split(" ").str[0].astype(float)
        return ["font-weight: bold" if v == vals.max() else "" for v in vals]

    return wide.style.apply(col_style, axis=0)


def parameter_table(result) -> pd.Series:
    """Trainable parameters of a run, its item side, the ID table it replaces and their ratio."""
    p = result.params
    return pd.Series({"trainable parameters": p["total"], "item-side parameters": p["item"],
                      "ID table it replaces (n_items x d)": p["id_table"],
                      "item-side / ID table": round(p["item_fraction"], 3)}, dtype=object, name="value")


def results_markdown(df: pd.DataFrame, k: int = 20, baseline: str = "id") -> str:
    """Markdown table: per (dataset, backbone, item_repr) test Recall@k and NDCG@k as mean ± std (n seeds) and the
    Recall improvement over ``baseline`` in %. Built from the registry, so the numbers are the registry's."""
    rec, ndcg = compare_table(df, "recall", k), compare_table(df, "ndcg", k)
    t = rec.merge(ndcg, on=["dataset", "backbone", "item_repr"], suffixes=("_r", "_n"))
    t = t.rename(columns={"improvement_%_r": "imp"})
    lines = [f"| dataset | backbone | item repr | Recall@{k} | NDCG@{k} | seeds | Recall vs {baseline} |",
             "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        imp = "—" if r.item_repr == baseline or pd.isna(r.imp) else f"{r.imp:+.1f} %"
        lines.append(f"| {r.dataset} | {r.backbone} | {r.item_repr} | {mean_std_cell(r.mean_r, r.std_r, r.count_r)} "
                     f"| {mean_std_cell(r.mean_n, r.std_n, r.count_r)} | {r.count_r} | {imp} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- paired tests


def paired_test(run_a: str, run_b: str, metric: str = "recall@20") -> dict:
    """Paired comparison over test users of two runs on the same split: mean difference (b - a), t-test and
    Wilcoxon signed-rank p-values."""
    return paired_frames_test(runs.read(run_a)["per_user"], runs.read(run_b)["per_user"], metric)


def paired_frames_test(a: pd.DataFrame, b: pd.DataFrame, metric: str = "recall@20") -> dict:
    """:func:`paired_test` on two per-user frames (columns ``user`` and ``metric``), matched by user: mean difference
    (b - a) with its 95 % t interval (``ci_low``, ``ci_high``), paired t-test and Wilcoxon signed-rank p-values."""
    m = a[["user", metric]].merge(b[["user", metric]], on="user", suffixes=("_a", "_b"))
    diff = m[f"{metric}_b"] - m[f"{metric}_a"]
    out = {"n_users": len(m), "mean_a": m[f"{metric}_a"].mean(), "mean_b": m[f"{metric}_b"].mean(),
           "mean_diff": diff.mean()}
    half = (stats.t.ppf(0.975, len(m) - 1) * diff.std(ddof=1) / np.sqrt(len(m))) if len(m) > 1 else np.nan
    out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
    out["t_pvalue"] = float(stats.ttest_rel(m[f"{metric}_b"], m[f"{metric}_a"]).pvalue) if diff.any() else 1.0
    out["wilcoxon_pvalue"] = float(stats.wilcoxon(diff[diff != 0]).pvalue) if (diff != 0).sum() > 0 else 1.0
    return out


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given): the i-th smallest of m p-values is multiplied by
    m - i (i from 0), made non-decreasing in that order and capped at 1. Rejecting where the adjusted value is below
    alpha keeps the family-wise error rate at alpha over all m comparisons. NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m)))) if m else np.zeros(0)
    out[order] = adjusted
    return out


def significance_table(df: pd.DataFrame, metric: str = "recall@20", baseline: str = "id",
                       alpha: float = 0.05) -> pd.DataFrame:
    """For every (dataset, backbone, seed, item_repr != baseline): paired test against the baseline run
    (:func:`paired_frames_test`), with ``p_holm``, the t-test p-value Holm-corrected over all the table's
    comparisons, and ``significant`` (``p_holm < alpha``)."""
    ids = df.drop_duplicates("run_id")[["run_id", "dataset", "split", "backbone", "item_repr", "modalities",
                                        "n_tokens", "seed"]]
    rows = []
    for (ds, _split, bb, seed), g in ids.groupby(["dataset", "split", "backbone", "seed"]):
        base = g[g.item_repr == baseline]
        if base.empty:
            continue
        for rec in g[g.item_repr != baseline].itertuples():
            res = paired_test(base.run_id.iloc[0], rec.run_id, metric)
            rows.append({"dataset": ds, "backbone": bb, "seed": seed, "item_repr": rec.item_repr, **res})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out.t_pvalue)
        out["significant"] = out.p_holm < alpha
    return out


# ------------------------------------------------------------------------------------------------------ sparsity


def sparsity_summary(sweep: pd.DataFrame, item_repr: str = "ms", baseline: str = "id",
                     metric: str = "recall@20", alpha: float = 0.05) -> pd.DataFrame:
    """Per (keep, backbone): mean metric of both over seeds, improvement of the means in %, seeds, seeds with a
    significant gain / loss (per-seed t-tests, Holm-corrected over every seed's test in ``sweep``, ``alpha``), and
    one paired t-test over test users of the seed-averaged per-user metric (the split is fixed across seeds, so
    every seed evaluates the same users): ``mean_diff`` with its 95 % interval, ``t_pvalue``, ``p_holm`` (corrected
    over the summary's rows) and ``significant`` (``p_holm < alpha``)."""
    rows = []
    sweep = sweep.assign(p_holm=holm(sweep.t_pvalue)) if len(sweep) else sweep
    for (keep, bb), g in sweep.groupby(["keep", "backbone"], sort=False):
        a = pd.concat([runs.read(r)["per_user"][["user", metric]] for r in g.run_baseline])
        b = pd.concat([runs.read(r)["per_user"][["user", metric]] for r in g.run_repr])
        pooled = paired_frames_test(a.groupby("user", as_index=False).mean(), b.groupby("user", as_index=False).mean(),
                                    metric)
        gain = g[item_repr] > g[baseline]
        rows.append({"keep": keep, "backbone": bb, "per_user": g.per_user.iloc[0], "per_item": g.per_item.iloc[0],
                     baseline: g[baseline].mean(), item_repr: g[item_repr].mean(),
                     "mean_diff": g[item_repr].mean() - g[baseline].mean(),
                     "improvement_%": improvement(g[item_repr].mean(), g[baseline].mean()),
                     "ci_low": pooled["ci_low"], "ci_high": pooled["ci_high"],
                     "seeds": len(g), "seeds_sig_gain": int(((g.p_holm < alpha) & gain).sum()),
                     "seeds_sig_loss": int(((g.p_holm < alpha) & ~gain).sum()), "t_pvalue": pooled["t_pvalue"]})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out.t_pvalue)
        out["significant"] = out.p_holm < alpha
    return out


def sparsity_crossover(summary: pd.DataFrame) -> pd.DataFrame:
    """Per backbone, where MOTOR's difference to ID (``mean_diff``) changes sign along the density axis: the
    interactions per user (and per item) at which the line through neighbouring keeps crosses 0 (interpolated in
    log density), and a sentence. ``crossover_per_user`` is the densest crossing, NaN when the sign never changes."""
    rows = []
    for bb, g in summary.groupby("backbone", sort=False):
        g = g.sort_values("per_user")
        x_u, x_i, y = np.log(g.per_user.to_numpy()), np.log(g.per_item.to_numpy()), g["mean_diff"].to_numpy()
        cross_u, cross_i = [], []
        for j in range(len(y) - 1):
            if np.sign(y[j]) != np.sign(y[j + 1]) and y[j] != y[j + 1]:
                t = y[j] / (y[j] - y[j + 1])
                cross_u.append(float(np.exp(x_u[j] + t * (x_u[j + 1] - x_u[j]))))
                cross_i.append(float(np.exp(x_i[j] + t * (x_i[j + 1] - x_i[j]))))
        lo, hi = g.iloc[0], g.iloc[-1]
        span = (f"{lo.per_user:.1f}-{hi.per_user:.1f} interactions per user "
                f"({lo.per_item:.1f}-{hi.per_item:.1f} per item)")
        if not cross_u:
            side = "ahead of" if (y > 0).all() else "behind" if (y < 0).all() else "level with"
            text = f"{bb}: MOTOR is {side} ID at every density tested ({span})."
        else:
            where = " and ".join(f"{u:.1f} interactions per user ({i:.1f} per item)" for u, i in zip(cross_u, cross_i))
            sparse_side = "ahead" if y[0] > 0 else "behind"
            text = (f"{bb}: the difference changes sign at about {where}; MOTOR is {sparse_side} at the sparsest "
                    f"setting ({_change(lo)} at {lo.per_user:.1f} per user) and {_change(hi)} at the densest "
                    f"({hi.per_user:.1f} per user).")
        rows.append({"backbone": bb, "crossover_per_user": cross_u[-1] if cross_u else np.nan,
                     "crossover_per_item": cross_i[-1] if cross_i else np.nan, "n_crossings": len(cross_u),
                     "statement": text})
    return pd.DataFrame(rows)


def _change(row) -> str:
    """``+12.3 %`` (relative), or the absolute difference when the baseline is 0."""
    if pd.notna(row["improvement_%"]):
        return f"{row['improvement_%']:+.1f} %"
    return f"{row['mean_diff']:+.4f} (baseline 0)"


# ---------------------------------------------------------------------------------------------------------- ties


def tie_table(df: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """Per (dataset, backbone, item_repr) of the registry rows ``df``: runs, runs evaluated tie-aware, the mean share
    of test users with a tie across the K-th position (``tie_share@K``, tie-aware runs only) and the mean share of
    items whose whole token code is another item's too (token runs)."""
    one = df.drop_duplicates("run_id")
    out = one.groupby(["dataset", "backbone", "item_repr"]).agg(
        runs=("run_id", "nunique"), tie_aware=("ties", lambda t: int((t == "expected").sum()))).reset_index()
    for name, sel in ((f"tie_share@{k}", (df.metric == "tie_share") & (df.k == k) & (df.eval_split == "test")),
                      ("shared_code_fraction", df.metric == "params_shared_code_fraction")):
        m = df[sel].drop_duplicates("run_id").groupby(["dataset", "backbone", "item_repr"]).value.mean()
        out = out.merge(m.rename(name).reset_index(), on=["dataset", "backbone", "item_repr"], how="left")
    return out


# -------------------------------------------------------------------------------------------- where hits land


def hit_profiles(df: pd.DataFrame, dataset: str, backbone: str, item_reprs=("id", "ms")) -> pd.DataFrame:
    """Mean over seeds of the saved test hit profiles (:func:`motor.evaluate.hit_profile`) of the main runs of
    (``dataset``, ``backbone``) for ``item_reprs``: columns item_repr, bucket, position, hits (expected hits per
    user at that rank position), seeds. Runs saved before hit profiles existed are left out."""
    ids = main_runs(df)
    ids = ids[(ids.dataset == dataset) & (ids.backbone == backbone) & ids.item_repr.isin(item_reprs)]
    frames = []
    for rid, kind in ids.drop_duplicates("run_id")[["run_id", "item_repr"]].itertuples(index=False):
        prof = runs.read(rid).get("hit_profile")
        if prof is not None and len(prof):
            frames.append(prof.assign(item_repr=kind, run_id=rid))
    if not frames:
        return pd.DataFrame(columns=["item_repr", "bucket", "position", "hits", "seeds"])
    allp = pd.concat(frames, ignore_index=True)
    out = allp.groupby(["item_repr", "bucket", "position"], sort=False).agg(
        hits=("hits", "mean"), seeds=("run_id", "nunique")).reset_index()
    return out


def hit_position_summary(profiles: pd.DataFrame, split_at: int = 10) -> pd.DataFrame:
    """Per (item_repr, bucket) of :func:`hit_profiles`: hits per user in the first ``split_at`` positions and in
    the rest, and the DCG those hits earn (binary gains, 1/log2(position + 2)), so Recall and NDCG differences can
    be traced to where in the list they arise."""
    if profiles.empty:
        return pd.DataFrame(columns=["item_repr", "bucket", "hits", "dcg"])
    p = profiles.copy()
    p["dcg"] = p.hits / np.log2(p.position + 2)
    p["part"] = np.where(p.position < split_at, f"1-{split_at}", f"{split_at + 1}-{int(p.position.max()) + 1}")
    t = p.pivot_table(index=["item_repr", "bucket"], columns="part", values=["hits", "dcg"], aggfunc="sum",
                      sort=False)
    t.columns = [f"{a} {b}" for a, b in t.columns]
    t["hits"] = t[[c for c in t.columns if c.startswith("hits")]].sum(axis=1)
    t["dcg"] = t[[c for c in t.columns if c.startswith("dcg ")]].sum(axis=1)
    return t.reset_index()


# ---------------------------------------------------------------------------------------------- tuned comparison


def tuned_table(df: pd.DataFrame, selected: pd.DataFrame, metric: str = "recall", k: int = 20,
                baseline: str = "id", alpha: float = 0.05) -> pd.DataFrame:
    """The tuned comparison (paper section 4.4): per (dataset, backbone, item_repr) of ``selected`` (what
    :func:`motor.tune.tune` / :func:`motor.tune.tune_seeds` return: the valid-selected configuration, its
    ``hyper_parameters`` and the ``run_ids`` of its seeds), the test ``metric@k`` of those runs in the registry
    rows ``df`` as mean, std and count; ``improvement_%`` over ``baseline``'s selected configuration; and a paired
    t-test over test users per seed against the baseline run of the same seed: ``p_values`` (one per paired seed),
    ``p_holm`` (the same, Holm-corrected over every paired seed of the table) and ``significant`` (how many
    corrected values are < ``alpha``)."""
    values = metric_frame(df, metric, k)
    value, seed_of = dict(zip(values.run_id, values.value)), dict(zip(values.run_id, values.seed))
    rows = []
    for r in selected.itertuples(index=False):
        ids = [i for i in (r.run_ids or ()) if i in value]
        v = np.array([value[i] for i in ids], dtype=float)
        rows.append({"dataset": r.dataset, "backbone": r.backbone, "item_repr": r.item_repr,
                     "hyper_parameters": r.hyper_parameters, "mean": v.mean() if len(v) else np.nan,
                     "std": v.std(ddof=1) if len(v) > 1 else np.nan, "count": len(v), "run_ids": tuple(ids)})
    t = pd.DataFrame(rows)
    base = {(b.dataset, b.backbone): b for b in t[t.item_repr == baseline].itertuples()} if len(t) else {}
    imp, pvals = [], []
    for r in t.itertuples():
        b = base.get((r.dataset, r.backbone))
        imp.append(improvement(r.mean, b.mean) if b is not None else np.nan)
        by_seed = {seed_of[i]: i for i in b.run_ids} if b is not None and r.item_repr != baseline else {}
        pvals.append(tuple(paired_test(by_seed[seed_of[i]], i, f"{metric}@{k}")["t_pvalue"]
                           for i in r.run_ids if seed_of[i] in by_seed))
    t["improvement_%"] = imp
    t["p_values"] = pvals
    flat = holm([p for ps in pvals for p in ps])  # one family: every paired seed of the table
    ends = np.cumsum([0] + [len(ps) for ps in pvals])
    t["p_holm"] = [tuple(flat[a:b]) for a, b in zip(ends[:-1], ends[1:])]
    t["significant"] = [sum(p < alpha for p in ps) for ps in t["p_holm"]]
    t["metric"] = f"{metric}@{k}"
    return t


def tuned_report(df: pd.DataFrame, selected: pd.DataFrame, k: int = 20, baseline: str = "id") -> pd.DataFrame:
    """One display table of the tuned comparison: rows (dataset, backbone, item_repr); test Recall@k and NDCG@k
    as 'mean ± std', seeds, Recall improvement % over ``baseline``, significant seeds of the paired test after Holm
    correction over the table (adjusted p < 0.05 / paired seeds) and the selected hyper-parameters."""
    rec, ndcg = tuned_table(df, selected, "recall", k, baseline), tuned_table(df, selected, "ndcg", k, baseline)

    out = pd.DataFrame({
        "dataset": rec.dataset, "backbone": rec.backbone, "item_repr": rec.item_repr,
        f"Recall@{k}": [mean_std_cell(m, s) for m, s in zip(rec["mean"], rec["std"])],
        f"NDCG@{k}": [mean_std_cell(m, s) for m, s in zip(ndcg["mean"], ndcg["std"])],
        "seeds": rec["count"],
        f"Recall vs {baseline} (%)": [np.nan if r == baseline else round(v, 1)
                                      for r, v in zip(rec.item_repr, rec["improvement_%"])],
        "significant seeds (Holm)": ["—" if r == baseline else f"{s}/{len(p)}"
                              for r, s, p in zip(rec.item_repr, rec.significant, rec.p_values)],
        "hyper-parameters": rec.hyper_parameters.fillna("(none finished)").replace("", "(defaults)"),
    })
    return out.set_index(["dataset", "backbone", "item_repr"])


# ----------------------------------------------------------------------------------------------- learning curves


def curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run of :func:`learning_curves`: best epoch, epochs run, best and last valid, and what happened
    after the best epoch until the run stopped: ``valid_after_best_%`` (last valid vs best, %), ``loss_after_best_%``
    (last training loss vs the loss at the best epoch, %) and ``train_after_best`` (last train metric minus its
    value at the best epoch, when recorded). Valid falling while the loss keeps falling is over-fitting; valid flat
    within noise while the loss falls is a plateau; a best epoch near the last one is a run stopped too early."""
    rows = []
    for (rid, label), g in curves.groupby(["run_id", "label"], sort=False):
        g = g.sort_values("epoch")
        best = g[g.best].iloc[0] if g.best.any() else g.loc[g.valid.idxmax()]
        last = g.iloc[-1]
        rows.append({"run_id": rid, "label": label, "item_repr": best["item_repr"], "seed": best["seed"],
                     "best_epoch": int(best["epoch"]), "epochs_run": int(last["epoch"]) + 1,
                     "best_valid": best["valid"], "last_valid": last["valid"],
                     "valid_after_best_%": 100 * (last["valid"] / best["valid"] - 1) if best["valid"] else np.nan,
                     "loss_at_best": best["loss"], "last_loss": last["loss"],
                     "loss_after_best_%": 100 * (last["loss"] / best["loss"] - 1) if best["loss"] else np.nan,
                     "train_after_best": last["train"] - best["train"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- moved names
# Names that lived here before the split by job (issue 25), still reachable from here; import them from
# their module.
_MOVED = {
    "shared_token_neighbours": "neighbours", "vector_neighbours": "neighbours", "search_items": "neighbours",
    "umap_2d": "neighbours", "sparsity_sweep": "studies", "item_vector_spread": "diagnostics", "model_item_vectors":
    "diagnostics", "spread_callback": "diagnostics", "train_recall_callback": "diagnostics", "mgcn_gate_stats":
    "diagnostics", "cold_start_protocols": "studies", "describe_cold_protocols": "findings", "describe_sparsity":
    "findings", "learning_curves": "studies"
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
