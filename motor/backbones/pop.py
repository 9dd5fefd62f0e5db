"""Most-popular ranker: scores every item by its train interaction count. A sanity floor for every model."""
import torch

from .base import Backbone


class Pop(Backbone):
    trainable = False
    takes_dim = False  # one score per item: its vectors are 1-d whatever the run's dim

    def __init__(self, dataset, item_repr=None):
        super().__init__(dataset.n_users, dataset.n_items, torch.nn.Identity(), 1)
        self.register_buffer("pop", torch.as_tensor(dataset.item_popularity, dtype=torch.float32))

    def embeddings(self):
        return torch.ones(self.n_users, 1, device=self.pop.device), self.pop[:, None]

    def item_parameters(self) -> int:
        return 0
