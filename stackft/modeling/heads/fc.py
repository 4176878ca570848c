"""Two-layer FC heads, the finetune-only baseline of every task (Wang et al. 2019: "FC -> FC -> softmax").

``Linear(H, H) -> ReLU -> Dropout -> Linear(H, C)``, per token or on the [CLS] vector (position 0).
The sequence head also serves joint pair encodings (pair_input False).
"""

import torch
from torch import nn

from stackft.modeling.heads.init import kaiming_init


class _TwoLayerFC(nn.Module):
    pair_input = False

    def __init__(self, hidden_size: int, num_labels: int, *, inner_size: int | None = None, dropout: float = 0.1):
        super().__init__()
        inner = inner_size or hidden_size
        self.fc1 = nn.Linear(hidden_size, inner)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(inner, num_labels)
        kaiming_init(self)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class FCTokenHead(_TwoLayerFC):
    """Per-token 2-layer FC: ``hidden [B, T, H]`` -> logits ``[B, T, C]`` (padded positions are ignored by the loss)."""

    level = "token"

    def forward(self, features: dict) -> torch.Tensor:
        return self._mlp(features["hidden"])


class FCSequenceHead(_TwoLayerFC):
    """2-layer FC on the [CLS] vector: ``hidden [B, T, H]`` -> logits ``[B, C]``."""

    level = "sequence"
    first_token_only = True  # forward reads hidden[:, 0] alone (a feature cache serves just that row)

    def forward(self, features: dict) -> torch.Tensor:
        return self._mlp(features["hidden"][:, 0])
