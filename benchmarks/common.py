"""Shared benchmark setup: pin threads and print them, so numbers are comparable across runs."""
import os
import platform

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def header(title: str) -> None:
    import torch

    torch.set_num_threads(THREADS)
    print(f"# {title}")
    print(f"# machine: {platform.machine()} · {os.cpu_count()} cpus · threads pinned to {THREADS} "
          f"(OMP/MKL/OPENBLAS/torch) · torch {torch.__version__}")
