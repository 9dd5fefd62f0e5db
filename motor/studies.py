"""The notebooks' studies: the runs each one needs (trained when the registry lacks them, read otherwise), the
tables made from them, and a sentence per result (:class:`Finding`) computed from the numbers.

Every function that runs takes the :class:`~motor.experiment.RunConfig` fields it varies as arguments and passes
``**config`` (e.g. ``epochs``) to every run; each run is saved in the registry, so a second call only reads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
COLD = "cold (0)"  # evaluate's bucket of items without train interactions


class Finding(str):
    """A sentence (markdown) about a result; a plain ``str`` that a notebook shows as markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


# ------------------------------------------------------------------------------------------------------------ runs


def _runs(configs: list) -> list:
    from .experiment import run_grid

    results, _ = run_grid(configs, keep_model=False, progress=False)
    return results


def seed_runs(dataset: str, backbone: str, item_reprs, seeds, split: str = "random", **config) -> list:
    """One run per (item_repr, seed) of ``backbone`` on ``dataset``'s ``split``; returns the RunResults."""
    from .experiment import RunConfig

    return _runs([RunConfig(dataset=dataset, split=split, backbone=backbone, item_repr=k, seed=s, **config)
                  for k in item_reprs for s in seeds])


def compare_runs(dataset: str, backbones, item_reprs, seeds, train_missing: bool = True,
                 **config) -> tuple[pd.DataFrame, list[str]]:
    """Runs of every (backbone, item_repr, seed): (their rows of the tidy registry, ``runs.load()``; run ids that
    are not in the registry and were not trained because ``train_missing`` is False)."""
    from . import runs
    from .experiment import RunConfig, run_grid

    configs = [RunConfig(dataset=dataset, backbone=b, item_repr=k, seed=s, **config)
               for b in backbones for k in item_reprs for s in seeds]
    results, missing = run_grid(configs, train_missing, keep_model=False, progress=False)
    ids = {r.run_id for r in results}
    df = runs.load()
    return df[df.run_id.isin(ids)], missing


def ablation_variants(modalities: list[str]) -> dict[str, dict]:
    """Paper Table 4's variants as run settings: the ID model, each modality's tokens alone, mean of token
    embeddings, a linear map of their concatenation, and the Token Cross Network (modal-specific, -agnostic)."""
    variants = {"original (ID)": dict(item_repr="id")}
    if len(modalities) > 1:
        variants.update({f"{m} tokens only": dict(item_repr="ms", modalities=[m]) for m in modalities})
    variants.update({"mean of tokens": dict(item_repr="mean"), "linear": dict(item_repr="linear"),
                     "TCN modal-specific": dict(item_repr="ms"), "TCN modal-agnostic": dict(item_repr="ma")})
    return variants


def ablation_table(dataset: str, backbone: str, seeds, metrics=METRICS, **config) -> pd.DataFrame:
    """Test metrics of every :func:`ablation_variants` entry: mean and std over ``seeds`` (columns (metric, stat)),
    rows in the variants' order, and ``seeds`` (the number of runs)."""
    from .experiment import RunConfig, get_dataset

    ds = get_dataset(dataset, config.get("split", "random"), config.get("split_seed", 0))
    rows = []
    for name, kw in ablation_variants(list(ds.modalities)).items():
        for r in _runs([RunConfig(dataset=dataset, backbone=backbone, seed=s, **kw, **config) for s in seeds]):
            rows.append({"variant": name, **{m: r.test[m] for m in metrics}})
    return mean_std(pd.DataFrame(rows), "variant", list(metrics))


def token_budget(dataset: str, backbone: str, budgets, seeds, **config) -> pd.DataFrame:
    """Paper Fig. 4: the ID model and MOTOR (``ms``) with D tokens per modality for each D in ``budgets``: one row
    each with label, n_tokens, trainable parameters, item-side parameters, their ratio to the ID model's item table,
    and test Recall@20 (mean and std over ``seeds``)."""
    from .experiment import RunConfig

    settings = [("ID", dict(item_repr="id"))] + [(f"D={d}", dict(item_repr="ms", n_tokens=d)) for d in budgets]
    rows = []
    for label, kw in settings:
        res = _runs([RunConfig(dataset=dataset, backbone=backbone, seed=s, **kw, **config) for s in seeds])
        recall = np.array([r.test["recall@20"] for r in res])
        rows.append({"label": label, "n_tokens": kw.get("n_tokens"), "params": res[0].params["total"],
                     "item_params": res[0].params["item"], "recall": recall.mean(),
                     "recall_std": recall.std(ddof=1) if len(recall) > 1 else np.nan, "seeds": len(recall)})
    out = pd.DataFrame(rows).astype({"n_tokens": "Int64"})  # the ID row has none
    out["item_params / ID table"] = out.item_params / out.item_params.iloc[0]
    return out


def item_vectors(dataset: str, backbone: str, seed: int, reprs: dict[str, str] | None = None,
                 **config) -> dict[str, np.ndarray]:
    """Learned (n_items, d) item vectors per representation (``reprs``: label -> item_repr, default
    ``{"ID": "id", "MOTOR": "ms"}``); a registry run saved without vectors is trained again with them."""
    from .experiment import run

    out = {}
    for label, kind in (reprs or {"ID": "id", "MOTOR": "ms"}).items():
        kw = dict(dataset=dataset, backbone=backbone, item_repr=kind, seed=seed, keep_model=False, progress=False,
                  save_vectors=True, **config)
        r = run(reuse=True, **kw)
        if r.item_vectors is None:
            r = run(**kw)
        out[label] = r.item_vectors
    return out


# ---------------------------------------------------------------------------------------------------------- tables


def mean_std(frame: pd.DataFrame, by: str, metrics: list[str]) -> pd.DataFrame:
    """Mean and std (ddof 1) of ``metrics`` per ``by`` value, in order of first appearance (columns (metric, stat));
    column ``("seeds", "n")`` = rows per group."""
    g = frame.groupby(by, sort=False)
    out = g[metrics].agg(["mean", "std"])
    out[("seeds", "n")] = g.size()
    return out


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


def test_means(results: list, metrics=None) -> pd.DataFrame:
    """Test metrics over all test items per item_repr: mean and std over seeds (columns (metric, stat)) and
    ``seeds``. ``metrics`` default: Recall/NDCG@10/20 and, when present, the cold-candidate metrics."""
    if metrics is None:
        extra = [k for k in results[0].test if k.startswith("cold_candidates_") and "@" in k] if results else []
        metrics = [*METRICS, *extra]
    rows = [{"item_repr": r.config["item_repr"], **{m: r.test.get(m, np.nan) for m in metrics}} for r in results]
    return mean_std(pd.DataFrame(rows), "item_repr", list(metrics))


def comparison_tables(df: pd.DataFrame, k: int = 20) -> dict[str, pd.DataFrame]:
    """:func:`motor.analysis.compare_table` for recall and ndcg @k."""
    from .analysis import compare_table

    return {m: compare_table(df, m, k) for m in ("recall", "ndcg")}


def comparison_wide(tables: dict[str, pd.DataFrame], k: int = 20) -> pd.DataFrame:
    """'mean ± std' cells: rows (dataset, backbone), columns (METRIC@k, item_repr)."""
    from .analysis import mean_std_pivot

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


def distortion_table(ds, budgets) -> pd.DataFrame:
    """Per D in ``budgets`` and modality: K, relative distortion (reconstruction MSE / feature variance) and the
    share of items whose full code is shared with another item (per modality and over all modalities,
    :func:`motor.tokenizer.collision_share`)."""
    from .tokenizer import collision_share, fit_tokenizers

    rows = []
    for d in budgets:
        toks = fit_tokenizers(ds, n_tokens=d)
        col = collision_share({m: t.encode(ds.features[m]) for m, t in toks.items()})
        for m, t in toks.items():
            rows.append({"D": d, "modality": m, "K": t.k, "distortion": t.distortion(ds.features[m]),
                         "collision_share": col[m], "collision_share_all_modalities": col["all"]})
    return pd.DataFrame(rows).set_index(["D", "modality"])


def case_study(ds, token_ids: dict[str, np.ndarray], n_queries: int = 4, seed: int = 0, top: int = 4,
               width: int = 100) -> pd.DataFrame:
    """Paper Fig. 5: ``n_queries`` random items (``seed``) and the ``top`` items sharing most tokens with each:
    columns query, item, shared, text (the query's own row has item = query and shared = NaN)."""
    from .analysis import shared_token_neighbours

    text = ds.item_text or [f"item {i}" for i in range(ds.n_items)]
    rows = []
    for q in np.random.default_rng(seed).choice(ds.n_items, size=min(n_queries, ds.n_items), replace=False):
        rows.append({"query": int(q), "item": int(q), "shared": np.nan, "text": text[q][:width]})
        for r in shared_token_neighbours(token_ids, int(q), top=top).itertuples():
            rows.append({"query": int(q), "item": int(r.item), "shared": r.shared, "text": text[r.item][:width]})
    return pd.DataFrame(rows)


def popularity_buckets(item_popularity: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each item's popularity bucket label (train interactions, :data:`motor.evaluate.DEFAULT_BUCKETS`) and the
    labels in order, least popular first."""
    from .evaluate import bucket_labels, item_buckets

    labels = bucket_labels()
    return np.asarray(labels)[item_buckets(item_popularity)], labels


def project_2d(vectors: dict[str, np.ndarray], method: str = "umap", seed: int = 0) -> dict[str, np.ndarray]:
    """2-D coordinates of each (n, d) array: ``"umap"`` (:func:`motor.analysis.umap_2d`, cosine) or ``"pca"``
    (scores on the first two principal axes)."""
    if method == "pca":
        out = {}
        for k, v in vectors.items():
            x = v - v.mean(0)
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            out[k] = u[:, :2] * s[:2]
        return out
    if method == "umap":
        from .analysis import umap_2d

        return {k: umap_2d(v, seed=seed) for k, v in vectors.items()}
    raise ValueError(f"unknown projection {method!r}; use 'umap' or 'pca'")


def shared_tokens_by_neighbours(token_ids: dict[str, np.ndarray], vectors: dict[str, np.ndarray],
                                top: int = 5) -> pd.DataFrame:
    """How many tokens (of all modalities' positions) an item shares on average with its ``top`` nearest items
    by cosine of each learned representation, and with a random other item (exact: over all pairs)."""
    codes = np.concatenate([token_ids[m] for m in sorted(token_ids)], axis=1)
    n, n_pos = codes.shape
    rows = []
    for name, v in vectors.items():
        unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argpartition(-sim, top - 1, axis=1)[:, :top]
        shared = (codes[nearest] == codes[:, None, :]).sum(-1)
        rows.append({"neighbours": f"{top} nearest by {name} vector", "mean_shared_tokens": float(shared.mean())})
    same = sum(int((c * (c - 1)).sum()) for c in (np.bincount(codes[:, p]) for p in range(n_pos)))
    rows.append({"neighbours": "a random other item", "mean_shared_tokens": same / (n * (n - 1))})
    out = pd.DataFrame(rows).set_index("neighbours")
    out["of_positions"] = n_pos
    return out


# -------------------------------------------------------------------------------------------------------- findings


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
    many (backbone, seed) paired tests are significant either way."""
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
            up = int(((t.t_pvalue < alpha) & (t.mean_diff > 0)).sum())
            down = int(((t.t_pvalue < alpha) & (t.mean_diff < 0)).sum())
            s += (f" Paired t-tests over test users (p < {alpha}): {up} of {len(t)} (backbone, seed) pairs "
                  f"significantly better, {down} significantly worse.")
        out.append(s)
    return Finding(" ".join(out) if out else f"No runs to compare with {baseline}.")


def describe_buckets(warm: pd.DataFrame, cold: pd.DataFrame | None = None, metric: str = "recall@20",
                     baseline: str = "id") -> Finding:
    """04: per item_repr, the popularity buckets where its mean ``metric`` is above / below the ID model's, and
    (``cold``: :func:`bucket_means` of the cold-start split) the cold items' metric."""
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
    ranked = [f"{name} {v:.4f}" + (f" ({100 * (v / base - 1):+.1f} % vs ID)" if name != "original (ID)" and base > 0
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


def curves_against_id(result, device: str | None = None) -> pd.DataFrame | None:
    """Learning curves (:func:`motor.analysis.learning_curves`) of ``result`` next to the ID model of the same
    configuration (reused from the registry when saved, trained otherwise); None when ``result`` is an ID run."""
    from .analysis import learning_curves
    from .experiment import RunConfig, run

    cfg = {k: v for k, v in result.config.items() if k in RunConfig.__dataclass_fields__}
    if cfg["item_repr"] == "id":
        return None
    if device is not None:
        cfg["device"] = device
    base = run(RunConfig(**{**cfg, "item_repr": "id", "tcn": {}}), reuse=True, progress=False, keep_model=False)
    return learning_curves({"id": base, cfg["item_repr"]: result})
