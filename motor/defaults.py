"""Defaults written once: the paper's and MMRec's settings, read by ``RunConfig``, the trainer, the tokenizer,
the item representations, the backbones and the command line (each of those reads its default from here)."""

EPOCHS = 300  # maximum training epochs (early stopping usually ends a run sooner)
PATIENCE = 20  # epochs without a better valid Recall@20 before stopping
LR = 1e-3  # Adam learning rate
BATCH_SIZE = 2048  # (user, positive, negative) triples per step
DIM = 64  # embedding size of users, items and token rows
N_TOKENS = 4  # tokens per modality (D, paper section 3.3)
N_CENTROIDS = 256  # token ids per position (K): one byte per token
COLD = "cold (0)"  # the popularity bucket of items without train interactions (evaluate, tables, figures)
