"""Shared benchmark setup: pin threads and print them, so numbers are comparable across runs."""
import os
import platform

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))
# OMP_WAIT_POLICY is left as the caller has it (the runtime default unless set). LightGCN on ml100k, s/epoch:
# ACTIVE 0.27-0.30, default 0.46, PASSIVE 0.51 (worker threads sleep after every parallel region). bench_tokenizer.py
# sets PASSIVE itself (faiss and torch each bring an OpenMP runtime; spinning ones compete for the 2 cores).


def header(title: str) -> None:
    import torch

    torch.set_num_threads(THREADS)
    print(f"# {title}")
    print(f"# machine: {platform.machine()} · {os.cpu_count()} cpus · threads pinned to {THREADS} "
          f"(OMP/MKL/OPENBLAS/torch) · OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')} "
          f"· torch {torch.__version__}")
