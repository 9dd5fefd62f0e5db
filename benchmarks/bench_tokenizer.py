"""Tokenizer speed and distortion: motor's settings vs faiss's default OPQ iteration counts.

Bars (issue 3): tokenizing `scientific` (both modalities, D=4) < 5 s; a 30,000 x 4096 matrix < 60 s; distortion
within 5 % of faiss's default settings. Run: `python benchmarks/bench_tokenizer.py [--skip-defaults-4096]`.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # two OpenMP runtimes (faiss, torch) share the cores
import numpy as np  # noqa: E402
from common import header  # noqa: E402

import motor  # noqa: E402
from motor.tokenizer import PQTokenizer  # noqa: E402

FAISS_DEFAULTS = dict(init="random", opq_iter=50, opq_pq_iter=4, opq_pq_iter0=40, pq_iter=25, max_train=65_536)


def measure(x, **params):
    t = time.perf_counter()
    tok = PQTokenizer(**params).fit(x)
    tok.encode(x)
    return time.perf_counter() - t, tok.distortion(x)


def row(name, x, n_tokens, defaults=True):
    ours_t, ours_d = measure(x, n_tokens=n_tokens)
    line = f"{name:<28} D={n_tokens:<3} motor {ours_t:7.2f} s  distortion {ours_d:.4f}"
    if defaults:
        ref_t, ref_d = measure(x, n_tokens=n_tokens, **FAISS_DEFAULTS)
        line += f" | faiss defaults {ref_t:7.2f} s  distortion {ref_d:.4f}  (ours {100 * (ours_d / ref_d - 1):+.1f} %)"
    print(line, flush=True)
    return ours_t


def main():
    header("tokenizer benchmark")
    skip_big_defaults = "--skip-defaults-4096" in sys.argv
    names = [n for n in ("scientific", "ml100k") if n in motor.available()]
    for name in names:
        ds = motor.load(name)
        total = 0.0
        for m in ds.modalities:
            total += row(f"{name}/{m} {ds.features[m].shape}", ds.features[m], 4)
        print(f"{name}: both modalities tokenized in {total:.2f} s (bar: < 5 s)")
    x = np.random.default_rng(0).normal(size=(30_000, 4096)).astype(np.float32)
    for d_tokens in (2, 16):
        t = row("random (30000, 4096)", x, d_tokens, defaults=not skip_big_defaults)
        print(f"30k x 4096, D={d_tokens}: {t:.1f} s (bar: < 60 s)")


if __name__ == "__main__":
    main()
