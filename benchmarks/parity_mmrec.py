"""Parity with MMRec: motor's ID baselines at MMRec's exact hyper-parameters on ml100k's own chronological split.

    python benchmarks/parity_mmrec.py                          # six backbones x 3 seeds (long: hours on 2 cores)
    python benchmarks/parity_mmrec.py --backbones bpr --seeds 0
    python benchmarks/parity_mmrec.py --markdown parity.md      # also write the table

Every row is one backbone with the ID item representation, ``split="given"`` (the x_label split shipped in
``$MOTOR_DATA/ml100k``) and MMRec's training settings (Adam lr 1e-3, batch 2048, up to 1000 epochs, early stopping
after 20 epochs without a better valid Recall@20), run with each seed through ``motor.run`` (saved in the run
registry, ``$MOTOR_RUNS``, and reused from it). Backbones with a ``reg_form`` option run with ``reg_form="mmrec"``
(MMRec's L2 penalty, the scale of MMRec's reg_weight values). The mean test Recall@20 / NDCG@20 over the seeds is
compared with MMRec's on the same data (seed 999, one run each); rows whose relative deviation exceeds the bar (3 %)
are marked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from motor.analysis import mean_std_cell  # noqa: E402

# backbone -> (MMRec's hyper-parameters in motor's names, MMRec test Recall@20, NDCG@20 on ml100k, split "given").
# reg_form "mmrec": the backbone's L2 penalty in MMRec's form, the scale MMRec's reg_weight values are on (FREEDOM
# and BM3 have no such option: their penalties are MMRec's already).
MMREC = {
    "bpr": ({"reg_weight": 0.1, "reg_form": "mmrec"}, 0.1574, 0.1164),
    "lightgcn": ({"n_layers": 1, "reg_weight": 1e-2, "reg_form": "mmrec"}, 0.1483, 0.1096),
    "vbpr": ({"reg_weight": 2.0, "reg_form": "mmrec"}, 0.1524, 0.1087),
    "freedom": ({"dropout": 0.8, "reg_weight": 0.0}, 0.1572, 0.1175),
    "layergcn": ({"n_layers": 4, "dropout": 0.0, "reg_weight": 1e-2, "reg_form": "mmrec"}, 0.1169, 0.0898),
    # MMRec trains BM3's raw feature matrices (freeze=False): train_features=True is the like-for-like setting
    # (FREEDOM's too, but at reg_weight 0 its features get no gradient, so its row needs no such option)
    "bm3": ({"n_layers": 1, "reg_weight": 0.1, "dropout": 0.5, "train_features": True}, 0.1196, 0.0885),
}
BAR = 3.0  # % relative deviation allowed


def parity_table(backbones, seeds, epochs: int = 1000, patience: int = 20, dataset: str = "ml100k",
                 device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """One row per backbone: motor's mean ± std over ``seeds`` vs MMRec's value, relative deviation in %."""
    import motor

    rows = []
    for bb in backbones:
        hparams, mm_recall, mm_ndcg = MMREC[bb]
        results = []
        for seed in seeds:
            res = motor.run(dataset=dataset, split="given", backbone=bb, item_repr="id", hparams=hparams, seed=seed,
                            epochs=epochs, patience=patience, device=device, reuse=True, keep_model=False,
                            save_model=False, progress=False)
            results.append(res)
            if progress:
                print(f"{res.run_id}: test recall@20 {res.test['recall@20']:.4f} ndcg@20 {res.test['ndcg@20']:.4f} "
                      f"(best epoch {res.best_epoch}, {res.stopped})", file=sys.stderr, flush=True)
        rec = np.array([r.test["recall@20"] for r in results])
        ndcg = np.array([r.test["ndcg@20"] for r in results])
        dev_r, dev_n = 100 * (rec.mean() / mm_recall - 1), 100 * (ndcg.mean() / mm_ndcg - 1)
        rows.append({
            "backbone": bb, "hparams": ", ".join(
                f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                for k, v in hparams.items()), "seeds": len(seeds),
            "recall@20": rec.mean(), "recall_std": rec.std(ddof=1) if len(rec) > 1 else np.nan,
            "mmrec_recall@20": mm_recall, "recall_dev_%": dev_r,
            "ndcg@20": ndcg.mean(), "ndcg_std": ndcg.std(ddof=1) if len(ndcg) > 1 else np.nan,
            "mmrec_ndcg@20": mm_ndcg, "ndcg_dev_%": dev_n,
            "best_epoch": float(np.mean([r.best_epoch for r in results])),
            "within_bar": bool(abs(dev_r) <= BAR and abs(dev_n) <= BAR),
        })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The parity table as markdown; rows outside the bar are marked with '✗'."""
    lines = [f"| backbone | MMRec hyper-parameters | seeds | motor R@20 | MMRec R@20 | dev | motor N@20 | MMRec N@20 "
             f"| dev | within ±{BAR:g} % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        recall, ndcg = mean_std_cell(r["recall@20"], r.recall_std), mean_std_cell(r["ndcg@20"], r.ndcg_std)
        lines.append(f"| {r.backbone} | {r.hparams} | {r.seeds} | {recall} "
                     f"| {r['mmrec_recall@20']:.4f} | {r['recall_dev_%']:+.1f} % | {ndcg} "
                     f"| {r['mmrec_ndcg@20']:.4f} | {r['ndcg_dev_%']:+.1f} % | {'yes' if r.within_bar else '✗ no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=list(MMREC), choices=list(MMREC))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=1000, help="MMRec's maximum (early stopping ends runs sooner)")
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--dataset", default="ml100k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    table = parity_table(args.backbones, args.seeds, args.epochs, args.patience, args.dataset, args.device)
    text = markdown(table)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    outside = table[~table.within_bar].backbone.tolist()
    print(f"\n{len(table) - len(outside)} of {len(table)} rows within ±{BAR:g} %"
          + (f"; outside: {', '.join(outside)}" if outside else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
