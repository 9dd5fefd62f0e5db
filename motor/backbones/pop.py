"""Most-popular ranker: scores every item by its train interaction count. A sanity floor for every model."""
import torch

from .base import Backbone


class Pop(Backbone):
    trainable = False

    def __init__(self, dataset, item_repr=None, dim: int = 1):
        super().__init__(dataset.n_users, dataset.n_items, torch.nn.Identity(), dim)
        self.register_buffer("pop", torch.as_tensor(dataset.item_popularity, dtype=torch.float32))

    def embeddings(self):
        return torch.ones(self.n_users, 1, device=self.pop.device), self.pop[:, None]

    def item_parameters(self) -> int:
        return 0
