"""Seconds per training epoch and per full evaluation, and peak memory, for each backbone x {id, ms}.

Datasets: `ml100k` (real, from $MOTOR_DATA) and a synthetic Baby-scale dataset (19,445 users, 7,050 items,
160k interactions; 384-d text, 4096-d image features). Each configuration runs in its own process so the peak
RSS is its own. Batch 2048, one negative, embedding 64 (MMRec's settings). MMRec reference timings on this
machine (from the issues) are printed with the speed-up.

    python benchmarks/bench_models.py [--datasets ml100k baby] [--backbones lightgcn vbpr] [--epochs 3] [--repeats 3]
                                      [--device cuda]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, header  # noqa: E402

# MMRec on this 2-core machine: (seconds per epoch, seconds per evaluation)
MMREC = {("lightgcn", "ml100k"): (0.95, 0.16), ("lightgcn", "baby"): (3.2, 4.5),
         ("freedom", "ml100k"): (2.3, None), ("freedom", "baby"): (37.0, None), ("bm3", "ml100k"): (2.5, None)}


def child(backbone: str, kind: str, dataset: str, epochs: int, device: str = "cpu") -> dict:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    import motor
    from motor.backbones import build
    from motor.evaluate import evaluate
    from motor.item_repr import build_item_repr
    from motor.perf import keep_freed_memory
    from motor.synthetic import baby_scale
    from motor.tokenizer import n_centroids_of
    from motor.train import make_optimizer, sample_negatives, train_keys

    keep_freed_memory()  # as train() does
    ds = baby_scale() if dataset == "baby" else motor.load(dataset)
    tok = motor.tokenize(ds, 4) if kind != "id" else None
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=tok,
                          n_centroids=n_centroids_of(tok) if tok else 256)
    model = build(backbone, ds, rep).to(device)
    opt = make_optimizer(model)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    coo = ds.train.tocoo()
    users, items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    keys, rng, gen = train_keys(ds.train), np.random.default_rng(0), torch.Generator().manual_seed(0)
    epoch_times = []
    for _ in range(epochs + 1):  # the first epoch is a warm-up
        t = time.perf_counter()
        model.train()
        model.on_epoch_start(gen)
        perm = rng.permutation(len(users))
        u, p = torch.from_numpy(users[perm]).to(device), torch.from_numpy(items[perm]).to(device)
        n = torch.from_numpy(sample_negatives(users[perm], ds.n_items, keys, rng)).to(device)
        for s in range(0, len(u), 2048):
            loss = model.loss(u[s:s + 2048], p[s:s + 2048], n[s:s + 2048])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync()
        epoch_times.append(time.perf_counter() - t)
    eval_times = [evaluate(model, ds, "valid", buckets=None, device=device).seconds for _ in range(3)]
    out = {"epoch_s": float(np.median(epoch_times[1:])), "eval_s": float(np.median(eval_times)),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(backbone: str, kind: str, dataset: str, epochs: int, device: str = "cpu") -> dict | str:
    """One configuration in a fresh process: its result dict, or the last line of its error."""
    out = subprocess.run([sys.executable, __file__, "--child", backbone, kind, dataset, "--epochs", str(epochs),
                          "--device", device],
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
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where there is one (MMRec ratios are CPU-only)")
    ap.add_argument("--child", nargs=3, default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child, a.epochs, a.device)))
        return
    peak_of = "peak GPU memory" if a.device.startswith("cuda") else "peak RSS"
    header(f"model benchmark on {a.device}: seconds per epoch / per full evaluation, {peak_of}; median (range) of "
           f"{a.repeats} fresh processes, each the median of {a.epochs} epochs after a warm-up")
    from motor.backbones import REGISTRY

    backbones = a.backbones or list(REGISTRY)
    print(f"{'dataset':<8} {'backbone':<9} {'repr':<4} {'s/epoch':>22} {'s/eval':>7} {'peak MB':>8}   "
          "vs MMRec (epoch, eval) | ms/id epoch")
    for dataset in a.datasets:
        for bb in backbones:
            runs: dict[str, list[dict]] = {"id": [], "ms": []}
            errors: dict[str, str] = {}
            for _ in range(a.repeats):
                for kind in runs:
                    r = run_child(bb, kind, dataset, a.epochs, a.device)
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
                ref = MMREC.get((bb, dataset)) if a.device == "cpu" else None
                note = ""
                if ref:
                    note = (f"{ref[0] / epoch[kind]:4.1f}x ({ref[0] / max(ep):.1f}-{ref[0] / min(ep):.1f})"
                            + (f", {ref[1] / ev:5.1f}x" if ref[1] else ""))
                if kind == "ms" and "id" in epoch:
                    note += f" | {epoch['ms'] / epoch['id']:.2f}x"
                peak = max(r.get("peak_gpu_mb", r["peak_rss_mb"]) for r in rs)
                print(f"{dataset:<8} {bb:<9} {kind:<4} {spread(ep):>22} {ev:7.3f} {peak:8.0f}   {note}", flush=True)


if __name__ == "__main__":
    main()
