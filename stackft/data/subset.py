"""SubsetView: a subset of an encoded dataset that keeps each item's original index."""

from __future__ import annotations

import torch


class SubsetView(torch.utils.data.Dataset):
    """Items ``indices`` of an EncodedDataset, keeping each item's original ``index``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)
        self.lengths = [dataset.lengths[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]
