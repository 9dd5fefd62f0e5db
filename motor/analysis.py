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
    return paired_frames_test(runs.read(run_a)["per_user"], runs.read(run_b)["per_user"], metric)


def paired_frames_test(a: pd.DataFrame, b: pd.DataFrame, metric: str = "recall@20") -> dict:
    """:func:`paired_test` on two per-user frames (columns ``user`` and ``metric``), matched by user."""
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
    for (ds, _split, bb, seed), g in ids.groupby(["dataset", "split", "backbone", "seed"]):
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
    # one job: a seeded UMAP runs single-threaded anyway and warns when asked for more
    return umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed, n_jobs=1).fit_transform(x)


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


# ----------------------------------------------------------------------------------------------- sparsity sweep


def sparsity_sweep(dataset: str, backbones=("lightgcn", "bpr", "vbpr", "freedom"), keeps=(1.0, 0.6, 0.4, 0.2),
                   seeds=(0, 1, 2), item_repr: str = "ms", baseline: str = "id", metric: str = "recall@20",
                   train_missing: bool = True, **config) -> pd.DataFrame:
    """``item_repr`` vs ``baseline`` on sparsified copies of ``dataset`` (``RunConfig.keep``): one row per
    (keep, backbone, seed) with the data's interactions per user and per item (all splits, after sparsifying),
    both runs' test ``metric``, the improvement in % and the paired test over test users (:func:`paired_test`).

    Runs come from the registry when saved and are trained otherwise (``train_missing=False``: skipped);
    ``config``: further :class:`~motor.experiment.RunConfig` fields (e.g. ``epochs``).
    """
    from .experiment import RunConfig, get_dataset, run_grid

    rows = []
    for keep in keeps:
        ds = get_dataset(dataset, config.get("split", "random"), config.get("split_seed", 0),
                         config.get("cold_fraction", 0.2), keep)
        n_int = ds.all_interactions().nnz
        data = {"keep": keep, "users": ds.n_users, "items": ds.n_items, "interactions": n_int,
                "per_user": n_int / ds.n_users, "per_item": n_int / ds.n_items}
        for bb in backbones:
            for seed in seeds:
                cfgs = [RunConfig(dataset=dataset, backbone=bb, item_repr=k, seed=seed, keep=keep, **config)
                        for k in (baseline, item_repr)]
                res, missing = run_grid(cfgs, train_missing=train_missing, progress=False, keep_model=False)
                if missing:
                    continue
                test = paired_test(res[0].run_id, res[1].run_id, metric)
                rows.append({**data, "backbone": bb, "seed": seed, baseline: test["mean_a"],
                             item_repr: test["mean_b"], "mean_diff": test["mean_diff"],
                             "improvement_%": _improvement(test["mean_b"], test["mean_a"]),
                             "t_pvalue": test["t_pvalue"],
                             "wilcoxon_pvalue": test["wilcoxon_pvalue"], "n_users": test["n_users"],
                             "run_baseline": res[0].run_id, "run_repr": res[1].run_id})
    return pd.DataFrame(rows)


def _improvement(new: float, base: float) -> float:
    """100 (new / base - 1); NaN when the base is 0 (no ratio to state)."""
    return 100.0 * (new / base - 1.0) if base > 0 else np.nan


def sparsity_summary(sweep: pd.DataFrame, item_repr: str = "ms", baseline: str = "id",
                     metric: str = "recall@20", alpha: float = 0.05) -> pd.DataFrame:
    """Per (keep, backbone): mean metric of both over seeds, improvement of the means in %, seeds, seeds with a
    significant gain / loss (per-seed t-test, ``alpha``), and one paired t-test over test users of the seed-averaged
    per-user metric (the split is fixed across seeds, so every seed evaluates the same users)."""
    rows = []
    for (keep, bb), g in sweep.groupby(["keep", "backbone"], sort=False):
        a = pd.concat([runs.read(r)["per_user"][["user", metric]] for r in g.run_baseline])
        b = pd.concat([runs.read(r)["per_user"][["user", metric]] for r in g.run_repr])
        pooled = paired_frames_test(a.groupby("user", as_index=False).mean(), b.groupby("user", as_index=False).mean(),
                                    metric)
        gain = g[item_repr] > g[baseline]
        rows.append({"keep": keep, "backbone": bb, "per_user": g.per_user.iloc[0], "per_item": g.per_item.iloc[0],
                     baseline: g[baseline].mean(), item_repr: g[item_repr].mean(),
                     "mean_diff": g[item_repr].mean() - g[baseline].mean(),
                     "improvement_%": _improvement(g[item_repr].mean(), g[baseline].mean()),
                     "seeds": len(g), "seeds_sig_gain": int(((g.t_pvalue < alpha) & gain).sum()),
                     "seeds_sig_loss": int(((g.t_pvalue < alpha) & ~gain).sum()), "t_pvalue": pooled["t_pvalue"],
                     "significant": pooled["t_pvalue"] < alpha})
    return pd.DataFrame(rows)


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


# ----------------------------------------------------------------------------------------------- training diagnostics


def item_vector_spread(vectors) -> float:
    """Mean cosine similarity over all pairs of distinct items (1: every vector points the same way, i.e. collapse;
    about 0 for unrelated directions). ``vectors``: (n, d) array or tensor, or a backbone (its final item
    vectors, :func:`model_item_vectors`). Exact, in O(n d): sum_{i != j} cos_ij = |sum_i v_i/|v_i||^2 - n."""
    import torch

    if isinstance(vectors, torch.nn.Module):
        vectors = model_item_vectors(vectors)
    v = torch.as_tensor(vectors).detach().double()
    n = len(v)
    if n < 2:
        return float("nan")
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = unit.sum(0)
    return float((s @ s - (unit * unit).sum()) / (n * (n - 1)))


def model_item_vectors(model, which: str = "final"):
    """(n_items, d) item vectors of a backbone: ``"final"`` as scored (``embeddings()``), ``"repr"`` the item
    representation's output (ID rows or token-derived vectors), in eval mode without gradients."""
    import torch

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.embeddings()[1].detach() if which == "final" else model.item_repr().detach()
    finally:
        model.train(was)


def spread_callback(model, which=("final", "repr"), every: int = 1):
    """Trainer callback (``train(..., callbacks=[...])`` / ``motor.run(callbacks=...)``) that adds the item vectors'
    :func:`item_vector_spread` to each ``every``-th epoch's history row as ``item_cosine_<which>``."""
    kinds = (which,) if isinstance(which, str) else tuple(which)

    def callback(epoch: int, record: dict) -> None:
        if epoch % every == 0:
            for w in kinds:
                record[f"item_cosine_{w}"] = item_vector_spread(model_item_vectors(model, w))

    return callback


def train_recall_callback(model, dataset, k: int = 20, n_users: int = 500, seed: int = 0, every: int = 1):
    """Trainer callback that adds ``train_recall@k`` to the history: Recall@k of a fixed random sample of users'
    *train* items, nothing masked. Next to ``valid_recall@k`` it shows fitting: train recall climbing while valid
    recall falls is over-fitting; both flat and low is under-training."""
    import torch

    rng = np.random.default_rng(seed)
    has = np.flatnonzero(np.diff(dataset.train.indptr) > 0)
    users = np.sort(rng.choice(has, size=min(n_users, len(has)), replace=False))
    held = dataset.train

    def callback(epoch: int, record: dict) -> None:
        if epoch % every:
            return
        from .evaluate import metrics_from_topk

        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                u, i = model.embeddings()
                dev = u.device
                scores = u[torch.as_tensor(users, device=dev)] @ i.T
                top = scores.topk(min(k, i.shape[0]), dim=1).indices.cpu().numpy()
        finally:
            model.train(was)
        record[f"train_recall@{k}"] = float(metrics_from_topk(top, held, users, (k,))[f"recall@{k}"].mean())

    return callback


def mgcn_gate_stats(model) -> pd.DataFrame:
    """What MGCN's gates do, from one forward pass of a (trained) MGCN model, per modality:

    * ``purifier``: sigmoid(W_g (W_m x_m) + b_g), the gate on the item representation (one value per item and dim);
    * ``preference``: sigmoid(W_p E^id + b), the gate on each modality-specific part (users and items);
    * ``beta``: the fuser's attention weight of the modality (users and items);

    with mean, std, the share of values below 0.1 and above 0.9; plus rows ``norm`` with the mean row norms of the
    item representation, of the user-item view E^id and of the side view (items), whose ratio says how much the
    item-item views contribute to the final vectors."""
    import torch

    captured: dict[str, list] = {"purifier": [], "preference": [], "query": []}
    hooks = []
    for m in model.modalities:
        hooks.append(model.purifier_gates[m].register_forward_hook(
            lambda mod, inp, out, m=m: captured["purifier"].append((m, out.detach()))))
        hooks.append(model.preference_gates[m].register_forward_hook(
            lambda mod, inp, out, m=m: captured["preference"].append((m, out.detach()))))
    hooks.append(model.query_common.register_forward_hook(
        lambda mod, inp, out: captured["query"].append(out.detach())))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            content, side = model.forward_views()
            items = model.item_repr().detach()  # an ID table's forward is its Parameter itself
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    beta = torch.softmax(torch.cat(captured["query"], dim=1), dim=1)

    def row(kind, m, x):
        x = x.float()
        return {"what": kind, "modality": m, "mean": float(x.mean()), "std": float(x.std()),
                "share_below_0.1": float((x < 0.1).float().mean()), "share_above_0.9": float((x > 0.9).float().mean())}

    rows = [row("purifier", m, x) for m, x in captured["purifier"]]
    rows += [row("preference", m, x) for m, x in captured["preference"]]
    rows += [row("beta", m, beta[:, j]) for j, m in enumerate(model.modalities)]
    n_u = model.n_users
    for name, x in (("item_repr", items), ("content_items", content[n_u:]), ("side_items", side[n_u:]),
                    ("content_users", content[:n_u]), ("side_users", side[:n_u])):
        rows.append({"what": "norm", "modality": name, "mean": float(x.norm(dim=1).mean()),
                     "std": float(x.norm(dim=1).std())})
    return pd.DataFrame(rows)



# ----------------------------------------------------------------------------------------------- cold start


def cold_start_protocols(dataset: str, backbone: str, item_reprs, seeds, **config) -> pd.DataFrame:
    """Both cold-start protocols on the ``cold_item`` split, mean over ``seeds`` per item representation:

    * ``all items``: the cold items' bucket of the full ranking (cold items compete with every item);
    * ``cold candidates``: the cold-start papers' protocol (:func:`motor.evaluate.evaluate_cold_candidates`): only
      the cold test items are ranked, for the users who have one; ``random`` is a random ranking's expected
      Recall@20 there, min(20, n) / n for n candidates.

    Runs are read from the registry; a saved run without the cold-candidate metrics (made before they existed) is
    trained again. ``config``: further RunConfig fields (e.g. ``epochs``)."""
    from .experiment import RunConfig, run

    rows = []
    for kind in item_reprs:
        for seed in seeds:
            cfg = RunConfig(dataset=dataset, split="cold_item", backbone=backbone, item_repr=kind, seed=seed, **config)
            r = run(cfg, reuse=True, progress=False, keep_model=False)
            if "cold_candidates_recall@20" not in r.test:
                r = run(cfg, progress=False, keep_model=False)
            b = r.buckets.set_index("bucket") if len(r.buckets) else pd.DataFrame()
            cold = b.loc["cold (0)"] if "cold (0)" in b.index else pd.Series(dtype=float)
            n = r.test["cold_candidates_n_candidates"]
            rows.append({"item_repr": kind, "seed": seed,
                         "all items · Recall@20": cold.get("recall@20", np.nan),
                         "all items · NDCG@20": cold.get("ndcg@20", np.nan),
                         **{f"cold candidates · {m.capitalize() if m == 'recall' else 'NDCG'}@{k}":
                            r.test[f"cold_candidates_{m}@{k}"] for m in ("recall", "ndcg") for k in (10, 20)},
                         "random · Recall@20": min(20.0, n) / n if n else np.nan,
                         "users": r.test["cold_candidates_n_users"], "candidates": n})
    per_seed = pd.DataFrame(rows)
    out = per_seed.drop(columns="seed").groupby("item_repr", sort=False).mean()
    out.insert(0, "seeds", per_seed.groupby("item_repr", sort=False).size())
    return out


def describe_cold_protocols(table: pd.DataFrame) -> str:
    """A sentence comparing the item representations under both protocols (:func:`cold_start_protocols`)."""
    if table.empty:
        return "No cold-start runs."
    n = int(table["candidates"].iloc[0])
    fmt = ", ".join(f"{k} {v:.4f}" for k, v in table["cold candidates · Recall@20"].items())
    best = table["cold candidates · Recall@20"].idxmax()
    allf = ", ".join(f"{k} {v:.4f}" for k, v in table["all items · Recall@20"].items())
    return (f"Ranking only the {n} cold test items (for {int(table['users'].iloc[0])} users), test Recall@20 is "
            f"{fmt} (a random ranking: {table['random · Recall@20'].iloc[0]:.4f}); {best} ranks them best. "
            f"Among all items, the same cold items get Recall@20 {allf}.")


def describe_sparsity(summary: pd.DataFrame, crossover: pd.DataFrame) -> str:
    """Markdown: per backbone, the crossover sentence of :func:`sparsity_crossover` and how many keeps show a
    significant paired difference (seed-averaged per-user test of :func:`sparsity_summary`)."""
    try:
        from .studies import Finding
    except ImportError:  # pragma: no cover - the notebooks' module
        Finding = str
    lines = []
    for r in crossover.itertuples():
        g = summary[summary.backbone == r.backbone]
        sig_up = int((g.significant & (g.mean_diff > 0)).sum())
        sig_down = int((g.significant & (g.mean_diff < 0)).sum())
        lines.append(f"- {r.statement} Significant (paired t-test over test users, p < 0.05): "
                     f"{sig_up} of {len(g)} densities better, {sig_down} worse.")
    return Finding("\n".join(lines) if lines else "No runs.")


def tuned_table(df: pd.DataFrame, selected: pd.DataFrame, metric: str = "recall", k: int = 20,
                baseline: str = "id") -> pd.DataFrame:
    """The tuned comparison (paper section 4.4): per (dataset, backbone, item_repr) of ``selected`` (what
    :func:`motor.tune.tune` / :func:`motor.tune.tune_seeds` return: the valid-selected configuration, its
    ``hyper_parameters`` and the ``run_ids`` of its seeds), the test ``metric@k`` of those runs in the registry
    rows ``df`` as mean, std and count; ``improvement_%`` over ``baseline``'s selected configuration; and a paired
    t-test over test users per seed against the baseline run of the same seed: ``p_values`` (one per paired seed)
    and ``significant`` (how many are < 0.05)."""
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
        imp.append(100.0 * (r.mean / b.mean - 1.0) if b is not None and b.mean > 0 else np.nan)
        by_seed = {seed_of[i]: i for i in b.run_ids} if b is not None and r.item_repr != baseline else {}
        pvals.append(tuple(paired_test(by_seed[seed_of[i]], i, f"{metric}@{k}")["t_pvalue"]
                           for i in r.run_ids if seed_of[i] in by_seed))
    t["improvement_%"] = imp
    t["p_values"] = pvals
    t["significant"] = [sum(p < 0.05 for p in ps) for ps in pvals]
    t["metric"] = f"{metric}@{k}"
    return t


def tuned_report(df: pd.DataFrame, selected: pd.DataFrame, k: int = 20, baseline: str = "id") -> pd.DataFrame:
    """One display table of the tuned comparison: rows (dataset, backbone, item_repr); test Recall@k and NDCG@k
    as 'mean ± std', seeds, Recall improvement % over ``baseline``, significant seeds of the paired test (p < 0.05
    / paired seeds) and the selected hyper-parameters."""
    rec, ndcg = tuned_table(df, selected, "recall", k, baseline), tuned_table(df, selected, "ndcg", k, baseline)

    def cell(mean, std):
        return "—" if pd.isna(mean) else f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"

    out = pd.DataFrame({
        "dataset": rec.dataset, "backbone": rec.backbone, "item_repr": rec.item_repr,
        f"Recall@{k}": [cell(m, s) for m, s in zip(rec["mean"], rec["std"])],
        f"NDCG@{k}": [cell(m, s) for m, s in zip(ndcg["mean"], ndcg["std"])],
        "seeds": rec["count"],
        f"Recall vs {baseline} (%)": [np.nan if r == baseline else round(v, 1)
                                      for r, v in zip(rec.item_repr, rec["improvement_%"])],
        "significant seeds": ["—" if r == baseline else f"{s}/{len(p)}"
                              for r, s, p in zip(rec.item_repr, rec.significant, rec.p_values)],
        "hyper-parameters": rec.hyper_parameters.fillna("(none finished)").replace("", "(defaults)"),
    })
    return out.set_index(["dataset", "backbone", "item_repr"])


# ----------------------------------------------------------------------------------------------- learning curves


def learning_curves(results, metric: str = "recall@20") -> pd.DataFrame:
    """Per-epoch curves of several runs in one long table, to compare how item representations train.

    ``results``: RunResults or run ids of the registry, or a {label: result or run id} dict. One row per (run,
    epoch): run_id, label (default: the item representation), backbone, item_repr, seed, epoch, ``loss`` (mean
    training loss of the epoch), ``valid`` (valid ``metric``), ``train`` (train ``metric`` where the history has it,
    from :func:`train_recall_callback`, else NaN), ``best`` (True on the epoch whose weights were kept), and the
    relative forms ``loss_rel`` = loss / first epoch's loss and ``valid_rel`` = valid / best valid, so runs whose
    losses differ in scale share an axis."""
    from .experiment import from_registry

    items = list(results.items()) if isinstance(results, dict) else [(None, r) for r in results]
    frames = []
    for label, res in items:
        res = from_registry(res) if isinstance(res, str) else res
        h, cfg = res.history, res.config
        if h is None or len(h) == 0:
            continue
        valid = h[f"valid_{metric}"] if f"valid_{metric}" in h else pd.Series(np.nan, index=h.index)
        train = h[f"train_{metric}"] if f"train_{metric}" in h else pd.Series(np.nan, index=h.index)
        best_valid = valid.max()
        frames.append(pd.DataFrame({
            "run_id": res.run_id, "label": label or cfg.get("item_repr", res.run_id), "backbone": cfg.get("backbone"),
            "item_repr": cfg.get("item_repr"), "seed": cfg.get("seed"), "epoch": h["epoch"].to_numpy(),
            "loss": h["loss"].to_numpy(), "valid": valid.to_numpy(), "train": train.to_numpy(),
            "best": (h["epoch"] == res.best_epoch).to_numpy(),
            "loss_rel": (h["loss"] / h["loss"].iloc[0]).to_numpy(),
            "valid_rel": (valid / best_valid).to_numpy() if best_valid > 0 else np.nan}))
    columns = ["run_id", "label", "backbone", "item_repr", "seed", "epoch", "loss", "valid", "train", "best",
               "loss_rel", "valid_rel"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


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
