"""Command line: ``python -m motor train ...`` (one run), ``python -m motor runs`` (registry), ``info``."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="motor", description="MOTOR workbench")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and evaluate one configuration; saved in the run registry")
    t.add_argument("--dataset", default="scientific")
    t.add_argument("--split", default="random", choices=["given", "random", "loo", "cold_item"])
    t.add_argument("--split-seed", type=int, default=0)
    t.add_argument("--backbone", default="lightgcn")
    t.add_argument("--item-repr", default="ms", choices=["id", "ms", "ma", "mean", "linear"])
    t.add_argument("--modalities", nargs="*", default=None)
    t.add_argument("--n-tokens", type=int, default=4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=300)
    t.add_argument("--patience", type=int, default=20)
    t.add_argument("--device", default="cpu")
    t.add_argument("--reuse", action="store_true", help="return the saved run if this config already ran")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    c = sub.add_parser("compare", help="run (or reuse) a grid and print test mean ± std and improvement over id")
    c.add_argument("--datasets", nargs="+", default=["scientific"])
    c.add_argument("--backbones", nargs="+", default=None, help="default: all registered backbones")
    c.add_argument("--item-reprs", nargs="+", default=["id", "ms", "ma"])
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    c.add_argument("--epochs", type=int, default=300)
    c.add_argument("--device", default="cpu")
    c.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    r = sub.add_parser("runs", help="list saved runs")
    r.add_argument("--metric", default="recall@20")
    i = sub.add_parser("info", help="load a dataset and print its summary")
    i.add_argument("dataset")
    args = p.parse_args(argv)

    if args.cmd == "train":
        from .experiment import resolve_dataset_name, run

        res = run(dataset=resolve_dataset_name(args.dataset), split=args.split, split_seed=args.split_seed,
                  backbone=args.backbone, item_repr=args.item_repr, modalities=args.modalities,
                  n_tokens=args.n_tokens, seed=args.seed, epochs=args.epochs, patience=args.patience,
                  device=args.device, reuse=args.reuse, progress=sys.stderr.isatty(), keep_model=False)
        if args.json:
            print(json.dumps({"run_id": res.run_id, "valid": res.valid, "test": res.test, "params": res.params,
                              "timings": res.timings}, indent=1))
        else:
            print(f"run {res.run_id}  (best epoch {res.best_epoch}, {res.stopped})")
            print(res.summary().round(4).to_string())
        return 0
    if args.cmd == "compare":
        from .analysis import compare_table, mean_std_pivot
        from .backbones import REGISTRY
        from .experiment import resolve_dataset_name, run
        from .runs import load

        done = set()
        for name in args.datasets:
            ds_name = resolve_dataset_name(name)
            for bb in args.backbones or list(REGISTRY):
                for kind in args.item_reprs:
                    for seed in args.seeds:
                        res = run(dataset=ds_name, backbone=bb, item_repr=kind, seed=seed, epochs=args.epochs,
                                  device=args.device, reuse=True, keep_model=False, progress=False)
                        done.add(res.run_id)
                        print(f"{res.run_id}: test recall@20 {res.test['recall@20']:.4f} "
                              f"(best epoch {res.best_epoch})", flush=True)
        df = load()
        df = df[df.run_id.isin(done)]
        for m in ("recall", "ndcg"):
            t = compare_table(df, m, 20)
            print(f"\n== test {m}@20, mean ± std over seeds ==")
            print(mean_std_pivot(t).to_string())
            print(t.pivot_table(index=["dataset", "backbone"], columns="item_repr", values="improvement_%")
                  .round(1).to_string())
        if args.markdown:
            from pathlib import Path

            from .analysis import results_markdown
            from .cache import atomic_write_text

            atomic_write_text(Path(args.markdown), results_markdown(df) + "\n")
        return 0
    if args.cmd == "runs":
        from .analysis import compare_table, main_runs
        from .runs import load

        df = main_runs(load())
        if df.empty:
            print("no runs saved yet")
            return 0
        m, k = args.metric.split("@")
        print(compare_table(df, metric=m, k=int(k)).to_string())
        return 0
    if args.cmd == "info":
        from .experiment import get_dataset

        print(repr(get_dataset(args.dataset, "given")))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
