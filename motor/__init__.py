"""motor: turn ID-based multimodal recommenders into ID-free ones (MOTOR, arXiv 2410.19276).

Data flows one way: ``load``/``synthetic`` -> ``tokenize`` -> item representation -> backbone -> ``run``.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first OpenMP user (faiss, torch)

from .data import Dataset, DataError, available, data_root, kcore, load, resplit  # noqa: E402
from .synthetic import synthetic  # noqa: E402
from .tokenizer import fit_tokenizers, tokenize  # noqa: E402

__version__ = "0.1.0"
