"""motor: turn ID-based multimodal recommenders into ID-free ones (MOTOR, arXiv 2410.19276).

Data flows one way: ``load``/``synthetic`` -> ``tokenize`` -> item representation -> backbone -> ``run``.
"""
from .data import Dataset, DataError, available, data_root, kcore, load, resplit
from .synthetic import synthetic
from .tokenizer import fit_tokenizers, tokenize  # loads faiss with its own OpenMP wait policy (see there)

__version__ = "0.1.0"
