"""Linear heads: the linear probe of LP-FT (Kumar et al. 2022, arXiv 2202.10054; docs/methods.md, section 9).

``Dropout -> Linear(H, C)`` per token, or on the [CLS] vector (position 0).
"""

import torch
from torch import nn

from stackft.modeling.heads.init import kaiming_init


class _Linear(nn.Module):
    pair_input = False

    def __init__(self, hidden_size: int, num_labels: int, *, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)
        kaiming_init(self)


class LinearTokenHead(_Linear):
    """``hidden [B, T, H]`` -> logits ``[B, T, C]``."""

    level = "token"

    def forward(self, features: dict) -> torch.Tensor:
        return self.out(self.dropout(features["hidden"]))


class LinearSequenceHead(_Linear):
    """``hidden[:, 0] [B, H]`` ([CLS]) -> logits ``[B, C]``."""

    level = "sequence"
    first_token_only = True  # forward reads hidden[:, 0] alone (a feature cache serves just that row)

    def forward(self, features: dict) -> torch.Tensor:
        return self.out(self.dropout(features["hidden"][:, 0]))
