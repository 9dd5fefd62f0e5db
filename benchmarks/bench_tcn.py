"""ms/id epoch ratio of this checkout against an older commit: what a change to the token path did to training.

Every process is fresh and pinned to one thread (``OMP/MKL/OPENBLAS_NUM_THREADS=1``, ``torch.set_num_threads(1)``)
and trains one backbone with item IDs ("id") or MOTOR tokens ("ms") through motor's trainer, a validation
evaluation after each epoch (MMRec's settings: batch 2048, one negative, embedding 64). Per epoch it records the
wall seconds (the trainer's ``train_seconds``) and the process CPU seconds of training (CPU between the trainer's
epoch callbacks minus that of its evaluation call); the first epoch is a warm-up. The two code versions ("before":
``git archive`` of ``--base`` into a temporary folder; "after": this checkout) alternate within every round, their
order swapped each round, and the 1-minute load average is recorded before every process: on a shared machine the
ratios of processes run side by side are the robust figures.

    python benchmarks/bench_tcn.py --base f35b062 [--backbones tcn bpr lightgcn] [--rounds 4] [--epochs 6]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def child(backbone: str, kind: str, dataset: str, epochs: int) -> dict:
    """One timed process (the code on ``PYTHONPATH``): per-epoch wall and training CPU seconds."""
    import torch

    torch.set_num_threads(1)
    import motor
    import motor.train as trainer
    from motor.backbones import build
    from motor.item_repr import build_item_repr
    from motor.tokenizer import n_centroids_of

    eval_cpu: list[float] = []
    evaluate = trainer.evaluate

    def timed_evaluate(*args, **kwargs):
        c = time.process_time()
        out = evaluate(*args, **kwargs)
        eval_cpu.append(time.process_time() - c)
        return out

    trainer.evaluate = timed_evaluate
    ds = motor.load(dataset)
    tok = motor.tokenize(ds, 4) if kind != "id" else None
    torch.manual_seed(0)
    rep = build_item_repr(kind, ds.n_items, 64, token_ids=tok, n_centroids=n_centroids_of(tok) if tok else 256)
    model = build(backbone, ds, rep)
    marks: list[float] = []
    start = time.process_time()
    result = trainer.train(model, ds, epochs=epochs, patience=10**9, batch_size=2048, seed=0, progress=False,
                           callbacks=[lambda epoch, record: marks.append(time.process_time())])
    epoch_cpu = [end - begin - ev for begin, end, ev in zip([start] + marks[:-1], marks, eval_cpu)]
    h = result.history
    return {"wall": float(np.median(h["train_seconds"].iloc[1:])), "cpu": float(np.median(epoch_cpu[1:])),
            "loss": float(h["loss"].iloc[-1]), "motor": motor.__file__, "threads": torch.get_num_threads()}


def child_tcn(dataset: str, calls: int) -> dict:
    """One timed process: the all-items Token Cross Network ("ms") forward + backward alone, per call (ms)."""
    import torch

    torch.set_num_threads(1)
    import motor
    from motor.item_repr import build_item_repr
    from motor.tokenizer import n_centroids_of

    ds = motor.load(dataset)
    tok = motor.tokenize(ds, 4)
    torch.manual_seed(0)
    rep = build_item_repr("ms", ds.n_items, 64, token_ids=tok, n_centroids=n_centroids_of(tok))
    g = torch.randn(ds.n_items, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(20):  # warm-up: numba's cache load, allocator
        rep().backward(g)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(calls):
        rep().backward(g)
    return {"wall": (time.perf_counter() - t) / calls * 1e3, "cpu": (time.process_time() - c) / calls * 1e3,
            "loss": float(rep.tables.grad.abs().sum()), "motor": motor.__file__}


def run_child(tree: Path, backbone: str, kind: str, dataset: str, epochs: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(tree)}
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--child", backbone, kind, dataset, "--epochs", str(epochs)],
                         capture_output=True, text=True, env=env, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    if not rec["motor"].startswith(str(tree)):
        raise SystemExit(f"child imported motor from {rec['motor']}, not {tree}")
    return {**rec, "load": load}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def fmt(values: list[float]) -> str:
    return f"{np.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def report(results: list[dict]) -> None:
    """Markdown table: per backbone and side, median (range) seconds per epoch and the ms/id ratios of medians."""
    micro = [r for r in results if r["backbone"] == "tcn"]
    if micro:
        print("| TCN forward + backward, all items | code | wall ms per call | CPU ms per call | n |")
        print("|---|---|---|---|---|")
        for side in ("before", "after"):
            rs = [r for r in micro if r["side"] == side]
            print(f"| ms | {side} | {fmt([r['wall'] for r in rs])} | {fmt([r['cpu'] for r in rs])} | {len(rs)} |")
        print()
        results = [r for r in results if r["backbone"] != "tcn"]
    if results:
        epoch_table(results)
    loads = [r["load"] for r in results + micro]
    print(f"\n{len(results) + len(micro)} processes; 1-minute load average before each: median {np.median(loads):.2f} "
          f"(range {min(loads):.2f}–{max(loads):.2f}); CPU: {cpu_model()}, {os.cpu_count()} cpus")


def epoch_table(results: list[dict]) -> None:
    """Per backbone and side: median (range) seconds per epoch, and ms/id as a ratio of medians."""
    print("| backbone | code | id wall s | ms wall s | ms/id wall | id CPU s | ms CPU s | ms/id CPU | n |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bb in dict.fromkeys(r["backbone"] for r in results):
        for side in ("before", "after"):
            cell = {k: [r for r in results if (r["backbone"], r["side"], r["kind"]) == (bb, side, k)]
                    for k in ("id", "ms")}
            med = {(k, m): float(np.median([r[m] for r in rs])) for k, rs in cell.items() for m in ("wall", "cpu")}
            print(f"| {bb} | {side} | {fmt([r['wall'] for r in cell['id']])} | {fmt([r['wall'] for r in cell['ms']])}"
                  f" | {med['ms', 'wall'] / med['id', 'wall']:.2f}× | {fmt([r['cpu'] for r in cell['id']])}"
                  f" | {fmt([r['cpu'] for r in cell['ms']])} | {med['ms', 'cpu'] / med['id', 'cpu']:.2f}×"
                  f" | {len(cell['id'])}, {len(cell['ms'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", help="commit to compare against (the 'before' side)")
    ap.add_argument("--backbones", nargs="+", default=["bpr", "lightgcn"],
                    help="'tcn': the Token Cross Network's forward + backward alone, ms per call")
    ap.add_argument("--dataset", default="ml100k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6, help="epochs per process, the first a warm-up")
    ap.add_argument("--child", nargs=3, default=None)
    a = ap.parse_args()
    if a.child:
        bb, kind, dataset = a.child
        print(json.dumps(child_tcn(dataset, 300) if bb == "tcn" else child(bb, kind, dataset, a.epochs)))
        return
    if not a.base:
        ap.error("--base is required")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(f"git -C {REPO} archive {a.base} motor | tar -x -C {tmp}", shell=True, check=True)
        trees = {"before": Path(tmp), "after": REPO}
        print(f"# bench_tcn: before {a.base}, after {subprocess.getoutput(f'git -C {REPO} rev-parse --short HEAD')}"
              f" (+ uncommitted changes if any); {a.dataset}, {a.epochs} epochs per process, 1 thread; "
              f"CPU: {cpu_model()}", flush=True)
        results = []
        for rnd in range(a.rounds):
            sides = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
            for bb in a.backbones:
                for side in sides:
                    for kind in ("id", "ms") if bb != "tcn" else ("ms",):
                        rec = run_child(trees[side], bb, kind, a.dataset, a.epochs)
                        results.append({**rec, "backbone": bb, "side": side, "kind": kind, "round": rnd})
                        unit = "ms per call" if bb == "tcn" else "s per epoch"
                        print(f"# round {rnd} {bb:<9} {side:<6} {kind}: wall {rec['wall']:.3f}, CPU {rec['cpu']:.3f} "
                              f"{unit}, load {rec['load']:.2f}, loss (tcn: gradient sum) {rec['loss']:.5f}",
                              flush=True)
    report(results)


if __name__ == "__main__":
    main()
