"""Seconds per training epoch and per full evaluation, and peak memory, for each backbone x {id, ms}.

Datasets: `ml100k` (real, from $MOTOR_DATA), a synthetic Baby-scale dataset `baby` (19,445 users, 7,050 items, 160k
interactions; 384-d text, 4096-d image features) and `paper`, synthetic at the paper's Baby 1-core scale (139,722
users, 28,795 items, 501,717 interactions; same feature sizes). "GEMM s" is the floor of a full evaluation: its
scoring products at the matmul rate measured in the same process. Each configuration runs in its own process so the
peak RSS is its own. Training goes through motor's own trainer (``motor.train.train``: its sampling, NaN check, per-
backbone settings): the epoch and evaluation seconds are the trainer's ``train_seconds`` and ``eval_seconds`` history
columns. Batch 2048 (``--batch-size``), one negative, embedding 64 (MMRec's settings). For the side-by-side comparison
with MMRec see ``benchmarks/vs_mmrec.py``; the latest tables are in ``benchmarks/RESULTS.md``.

    python benchmarks/bench_models.py [--datasets ml100k baby] [--backbones lightgcn vbpr] [--epochs 3] [--repeats 3]
                                      [--batch-size 2048] [--device cuda]

"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, header  # noqa: E402


def child(backbone: str, kind: str, dataset: str, epochs: int, device: str = "cpu", batch_size: int = 2048) -> dict:
    """One configuration: ``epochs`` timed epochs after a warm-up epoch, each followed by the trainer's
    full evaluation of the valid users; medians of the timed ones."""
    import resource

    import torch

    torch.set_num_threads(THREADS)
    import motor
    from motor.backbones import build
    from motor.item_repr import build_item_repr
    from motor.synthetic import baby_scale, paper_scale
    from motor.tokenizer import n_centroids_of
    from motor.train import train

    ds = {"baby": baby_scale, "paper": paper_scale}.get(dataset, lambda: motor.load(dataset))()
    tok = motor.tokenize(ds, 4) if kind != "id" else None
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=tok, n_centroids=n_centroids_of(tok) if tok else 256)
    model = build(backbone, ds, rep)
    result = train(model, ds, epochs=epochs + 1, patience=epochs + 2, batch_size=batch_size, device=device,
                   seed=0, progress=False)
    timed = result.history.iloc[1:]  # the first epoch is a warm-up
    out = {"epoch_s": float(np.median(timed["train_seconds"])), "eval_s": float(np.median(timed["eval_seconds"])),
           "final_loss": float(result.history["loss"].iloc[-1]),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "gemm_bound_s": gemm_bound(int((np.diff(ds.valid.indptr) > 0).sum()), ds.n_items, 64, device)}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def gemm_bound(n_users: int, n_items: int, dim: int, device: str = "cpu") -> float:
    """Seconds that the scoring products of one full evaluation take at this machine's measured matmul rate:
    ``n_users x n_items x dim x 2`` flops, the rate of (4096, dim) x (dim, n_items) float32 products timed here
    (the best of 6). The floor under any evaluation that scores every item for every user."""
    import time

    import torch

    a = torch.randn(4096, dim, device=device)
    b = torch.randn(dim, n_items, device=device)
    best = float("inf")
    for _ in range(6):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    rate = 4096 * n_items * dim * 2 / best
    return n_users * n_items * dim * 2 / rate


def run_child(backbone: str, kind: str, dataset: str, epochs: int, device: str = "cpu",
              batch_size: int = 2048) -> dict | str:
    """One configuration in a fresh process: its result dict, or the last line of its error."""
    out = subprocess.run([sys.executable, __file__, "--child", backbone, kind, dataset, "--epochs", str(epochs),
                          "--device", device, "--batch-size", str(batch_size)],
                         capture_output=True, text=True, env=os.environ)
    if out.returncode:
        return (out.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """median, and the range over repeats when there are several."""
    med = float(np.median(values))
    return f"{med:.3f}" if len(values) == 1 else f"{med:.3f} ({min(values):.3f}-{max(values):.3f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["ml100k", "baby"])
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3,
                    help="fresh processes per configuration, id and ms alternating (this VM's timings move by "
                         "about 30%% between identical runs); the median is reported with the range")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where there is one")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--child", nargs=3, default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child, a.epochs, a.device, a.batch_size)))
        return
    peak_of = "peak GPU memory" if a.device.startswith("cuda") else "peak RSS"
    header(f"model benchmark on {a.device}: seconds per epoch / per full evaluation, {peak_of}; median (range) of "
           f"{a.repeats} fresh processes, each the median of {a.epochs} epochs after a warm-up; batch {a.batch_size}")
    from motor.backbones import REGISTRY

    backbones = a.backbones or list(REGISTRY)
    print(f"{'dataset':<8} {'backbone':<9} {'repr':<4} {'s/epoch':>22} {'s/eval':>7} {'GEMM s':>7} {'peak MB':>8}"
          "   ms/id epoch")
    for dataset in a.datasets:
        for bb in backbones:
            runs: dict[str, list[dict]] = {"id": [], "ms": []}
            errors: dict[str, str] = {}
            for _ in range(a.repeats):
                for kind in runs:
                    r = run_child(bb, kind, dataset, a.epochs, a.device, a.batch_size)
                    if isinstance(r, str):
                        errors[kind] = r
                    else:
                        runs[kind].append(r)
            epoch = {k: float(np.median([r["epoch_s"] for r in v])) for k, v in runs.items() if v}
            for kind, rs in runs.items():
                if not rs:
                    print(f"{dataset:<8} {bb:<9} {kind:<4} FAILED: {errors.get(kind)}")
                    continue
                ep = [r["epoch_s"] for r in rs]
                ev = float(np.median([r["eval_s"] for r in rs]))
                note = f"{epoch['ms'] / epoch['id']:.2f}x" if kind == "ms" and "id" in epoch else ""
                peak = max(r.get("peak_gpu_mb", r["peak_rss_mb"]) for r in rs)
                gemm = float(np.median([r["gemm_bound_s"] for r in rs]))
                print(f"{dataset:<8} {bb:<9} {kind:<4} {spread(ep):>22} {ev:7.3f} {gemm:7.3f} {peak:8.0f}   {note}",
                      flush=True)


if __name__ == "__main__":
    main()
