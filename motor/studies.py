"""The notebooks' studies: the runs each one needs (trained when the registry lacks them, read otherwise) and the
tables that need runs. Tables of saved results are in :mod:`motor.analysis`, sentences in :mod:`motor.findings`.

Every function that runs takes the :class:`~motor.experiment.RunConfig` fields it varies as arguments and passes
``**config`` (e.g. ``epochs``) to every run; each run is saved in the registry, so a second call only reads."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd

from . import runs
from .analysis import METRICS, improvement, mean_std, paired_test
from .defaults import COLD
from .evaluate import bucket_labels, item_buckets
from .experiment import RunConfig, from_registry, get_dataset, run, run_grid
from .tokenizer import collision_share, fit_tokenizers


def _runs(configs: list) -> list:
    results, _ = run_grid(configs, keep_model=False, progress=False)
    return results


def seed_runs(dataset: str, backbone: str, item_reprs, seeds, split: str = "random", **config) -> list:
    """One run per (item_repr, seed) of ``backbone`` on ``dataset``'s ``split``; returns the RunResults."""
    return _runs([RunConfig(dataset=dataset, split=split, backbone=backbone, item_repr=k, seed=s, **config)
                  for k in item_reprs for s in seeds])


def compare_runs(dataset: str, backbones, item_reprs, seeds, train_missing: bool = True,
                 **config) -> tuple[pd.DataFrame, list[str]]:
    """Runs of every (backbone, item_repr, seed): (their rows of the tidy registry, ``runs.load()``; run ids that
    are not in the registry and were not trained because ``train_missing`` is False)."""
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
    out = {}
    for label, kind in (reprs or {"ID": "id", "MOTOR": "ms"}).items():
        kw = dict(dataset=dataset, backbone=backbone, item_repr=kind, seed=seed, keep_model=False, progress=False,
                  save_vectors=True, **config)
        r = run(reuse=True, **kw)
        if r.item_vectors is None:
            r = run(**kw)
        out[label] = r.item_vectors
    return out


def distortion_table(ds, budgets, method: str = "opq") -> pd.DataFrame:
    """Per D in ``budgets`` and modality: K, relative distortion (reconstruction MSE / feature variance) and the
    share of items whose full code is shared with another item (per modality and over all modalities,
    :func:`motor.tokenizer.collision_share`), for the tokenizer family ``method`` ("opq" or "rq")."""
    rows = []
    for d in budgets:
        toks = fit_tokenizers(ds, n_tokens=d, method=method)
        col = collision_share({m: t.encode(ds.features[m]) for m, t in toks.items()})
        for m, t in toks.items():
            rows.append({"D": d, "modality": m, "K": t.k, "distortion": t.distortion(ds.features[m]),
                         "collision_share": col[m], "collision_share_all_modalities": col["all"]})
    return pd.DataFrame(rows).set_index(["D", "modality"])


def tokenizer_families(ds, budgets, methods=("opq", "rq")) -> pd.DataFrame:
    """:func:`distortion_table` of each tokenizer family in ``methods``, side by side: columns (measure,
    method), index (D, modality)."""
    return pd.concat({m: distortion_table(ds, budgets, m) for m in methods}, axis=1, names=["method"]) \
        .swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)


def popularity_buckets(item_popularity: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each item's popularity bucket label (train interactions, :data:`motor.evaluate.DEFAULT_BUCKETS`) and the
    labels in order, least popular first."""
    labels = bucket_labels()
    return np.asarray(labels)[item_buckets(item_popularity)], labels


# ------------------------------------------------------------------------------------------------ sparsity sweep


def sparsity_sweep(dataset: str, backbones=("lightgcn", "bpr", "vbpr", "freedom"), keeps=(1.0, 0.6, 0.4, 0.2),
                   seeds=(0, 1, 2), item_repr: str = "ms", baseline: str = "id", metric: str = "recall@20",
                   train_missing: bool = True, **config) -> pd.DataFrame:
    """``item_repr`` vs ``baseline`` on sparsified copies of ``dataset`` (``RunConfig.keep``): one row per
    (keep, backbone, seed) with the data's interactions per user and per item (all splits, after sparsifying),
    both runs' test ``metric``, the improvement in % and the paired test over test users (:func:`paired_test`).

    Runs come from the registry when saved and are trained otherwise (``train_missing=False``: skipped);
    ``config``: further :class:`~motor.experiment.RunConfig` fields (e.g. ``epochs``).
    """
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
                             "improvement_%": improvement(test["mean_b"], test["mean_a"]),
                             "t_pvalue": test["t_pvalue"],
                             "wilcoxon_pvalue": test["wilcoxon_pvalue"], "n_users": test["n_users"],
                             "run_baseline": res[0].run_id, "run_repr": res[1].run_id})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- cold start


def cold_start_protocols(dataset: str, backbone: str, item_reprs, seeds, **config) -> pd.DataFrame:
    """Both cold-start protocols on the ``cold_item`` split, mean over ``seeds`` per item representation:

    * ``all items``: the cold items' bucket of the full ranking (cold items compete with every item);
    * ``cold candidates``: the cold-start papers' protocol (:func:`motor.evaluate.evaluate_cold_candidates`): only
      the cold test items are ranked, for the users who have one; ``random`` is a random ranking's expected
      Recall@20 there, min(20, n) / n for n candidates.

    Runs are read from the registry; a saved run without the cold-candidate metrics (made before they existed) is
    trained again. ``config``: further RunConfig fields (e.g. ``epochs``)."""
    rows = []
    for kind in item_reprs:
        for seed in seeds:
            cfg = RunConfig(dataset=dataset, split="cold_item", backbone=backbone, item_repr=kind, seed=seed, **config)
            r = run(cfg, reuse=True, progress=False, keep_model=False)
            if "cold_candidates_recall@20" not in r.test:
                r = run(cfg, progress=False, keep_model=False)
            b = r.buckets.set_index("bucket") if len(r.buckets) else pd.DataFrame()
            cold = b.loc[COLD] if COLD in b.index else pd.Series(dtype=float)
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


# ----------------------------------------------------------------------------------------------- learning curves


def learning_curves(results, metric: str = "recall@20") -> pd.DataFrame:
    """Per-epoch curves of several runs in one long table, to compare how item representations train.

    ``results``: RunResults or run ids of the registry, or a {label: result or run id} dict. One row per (run,
    epoch): run_id, label (default: the item representation), backbone, item_repr, seed, epoch, ``loss`` (mean
    training loss of the epoch), ``valid`` (valid ``metric``), ``train`` (train ``metric`` where the history has it,
    from :func:`motor.diagnostics.train_recall_callback`, else NaN), ``best`` (True on the epoch whose weights were
    kept), and the relative forms ``loss_rel`` = loss / first epoch's loss and ``valid_rel`` = valid / best valid, so
    runs whose losses differ in scale share an axis."""
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


def curves_against_id(result, device: str | None = None) -> pd.DataFrame | None:
    """Learning curves (:func:`learning_curves`) of ``result`` next to the ID model of the same
    configuration (reused from the registry when saved, trained otherwise); None when ``result`` is an ID run."""
    cfg = {k: v for k, v in result.config.items() if k in RunConfig.__dataclass_fields__}
    if cfg["item_repr"] == "id":
        return None
    if device is not None:
        cfg["device"] = device
    base = run(RunConfig(**{**cfg, "item_repr": "id", "tcn": {}}), reuse=True, progress=False, keep_model=False)
    return learning_curves({"id": base, cfg["item_repr"]: result})


# ------------------------------------------------------------------------------------------- moved names
# Names that lived here before the split by job (issue 25), still reachable from here; import them from
# their module.
_MOVED = {
    "Finding": "findings", "describe_tokens": "findings", "describe_run": "findings", "describe_comparison":
    "findings", "describe_buckets": "findings", "describe_ablation": "findings", "describe_budget": "findings",
    "describe_neighbours": "findings", "mean_std": "analysis", "bucket_means": "analysis", "test_means": "analysis",
    "comparison_tables": "analysis", "comparison_wide": "analysis", "improvement_pivot": "analysis", "bold_best":
    "analysis", "parameter_table": "analysis", "case_study": "neighbours", "project_2d": "neighbours",
    "shared_tokens_by_neighbours": "neighbours", "COLD": "defaults"
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
