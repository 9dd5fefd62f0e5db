"""motor: turn ID-based multimodal recommenders into ID-free ones (MOTOR, arXiv 2410.19276)."""
from .data import Dataset, DataError, available, data_root, kcore, load, resplit
from .synthetic import synthetic

__version__ = "0.1.0"
