"""Cost of tie-aware evaluation next to the previous lower-id-first evaluation, and the GEMM floor.

Both evaluate the same scores: a fixed random model (embedding 64) over the valid users of `ml100k` (real, from
$MOTOR_DATA) and of `paper` (synthetic at the paper's Baby 1-core scale: 139,722 users x 28,795 items). `tied`
repeats 40 % of the item rows (as items that share their whole token code do), so tie groups straddle the cut-off.

* old:  top-20 lists (``evaluate.topk_items``) + membership metrics (``evaluate.metrics_from_topk``);
* new:  ``evaluate.evaluate`` (``ties="expected"``: held-item ranks and tie groups, then expected metrics).

The two are timed alternately in one process, ``--repeats`` rounds, threads pinned (``BENCH_THREADS``, default 2);
the GEMM floor is the scoring products at the matmul rate measured in the same process.

    python benchmarks/bench_eval.py [--datasets ml100k paper] [--repeats 3]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402


def fixed_model(n_users: int, n_items: int, tied: bool, seed: int = 0):
    import torch

    from motor.backbones.base import Backbone

    class Fixed(Backbone):
        trainable = False

        def __init__(self):
            super().__init__(n_users, n_items, torch.nn.Identity(), 64)
            g = torch.Generator().manual_seed(seed)
            self.u = torch.randn(n_users, 64, generator=g)
            self.i = torch.randn(n_items, 64, generator=g)
            if tied:  # 40 % of the items copy the row of another item: identical scores for every user
                rng = np.random.default_rng(seed)
                copies = rng.choice(n_items, size=int(0.4 * n_items), replace=False)
                self.i[torch.as_tensor(copies)] = self.i[torch.as_tensor(rng.integers(0, n_items, len(copies)))]

        def embeddings(self):
            return self.u, self.i

    return Fixed()


def old_eval(model, ds, ks=(10, 20)):
    from motor.evaluate import metrics_from_topk, topk_items

    held = ds.split("valid")
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    with model.evaluating():
        top = topk_items(model, users, ds.train, max(ks))
    return metrics_from_topk(top, held, users, ks).drop(columns=["user", "n_held"]).mean().to_dict()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["ml100k", "paper"])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    header("evaluation cost: tie-aware (new) vs lower-id-first top-k (old); seconds per full valid evaluation, "
           f"median (range) of {a.repeats} alternating rounds")
    from bench_models import gemm_bound

    import motor
    from motor.evaluate import evaluate
    from motor.synthetic import paper_scale

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"# cpu: {cpu}")
    print("| dataset | items | old s | new s | new/old | GEMM floor s | new/floor | tie share@20 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.datasets:
        ds = paper_scale() if name == "paper" else motor.load(name)
        n_valid = int((np.diff(ds.valid.indptr) > 0).sum())
        floor = gemm_bound(n_valid, ds.n_items, 64)
        for tied in (False, True):
            model = fixed_model(ds.n_users, ds.n_items, tied)
            old_eval(model, ds)  # compile the kernels before timing
            evaluate(model, ds, "valid", buckets=None)
            t_old, t_new = [], []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                old_eval(model, ds)
                t_old.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                res = evaluate(model, ds, "valid", buckets=None)
                t_new.append(time.perf_counter() - t0)
            o, n = float(np.median(t_old)), float(np.median(t_new))
            print(f"| {name}{' tied' if tied else ''} | {ds.n_items:,} | {o:.3f} ({min(t_old):.3f}-{max(t_old):.3f}) "
                  f"| {n:.3f} ({min(t_new):.3f}-{max(t_new):.3f}) | {n / o:.2f} | {floor:.3f} | {n / floor:.2f} "
                  f"| {res.metrics['tie_share@20']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
