"""Sim-Transformer pair classifier (Wang et al. 2019, arXiv 1907.05338; docs/methods.md, section 6):
BiMPM matching, then a Transformer encoder in place of the aggregation BiLSTM.

``MultiPerspectiveMatching`` (context BiLSTM by default) -> Dropout -> Linear(F, d_model=256) ->
2-layer ``nn.TransformerEncoder`` (4 heads, FF 1024, dropout 0.1, padding mask from the features),
shared by both sides -> masked mean- and max-pool per side -> concat ``[B, 4·d_model]`` ->
``Dropout -> Linear -> ReLU -> Dropout -> Linear -> [B, C]``.

Init: ``kaiming_init`` covers every ``nn.Linear`` (projection, attention out-proj, FF, classifier);
the attention ``in_proj_weight`` is a raw parameter and keeps PyTorch's Xavier init.
No positional encoding is added: with the context BiLSTM the matching features already carry order.
Every sequence needs at least one real token (a fully padded row makes attention undefined).
"""

import torch
from torch import nn

from stackft.modeling.heads.bimpm import MultiPerspectiveMatching
from stackft.modeling.heads.init import kaiming_init
from stackft.modeling.heads.pooling import masked_max, masked_mean


class SimTransformerHead(nn.Module):
    """Siamese features ``{"hidden_a","mask_a","hidden_b","mask_b"}`` -> logits ``[B, C]``."""

    level = "sequence"
    pair_input = True

    def __init__(self, hidden_size: int, num_labels: int, *, context_lstm: bool = True, perspectives: int = 20,
                 context_hidden: int = 100, d_model: int = 256, num_layers: int = 2, num_heads: int = 4,
                 dim_feedforward: int = 1024, ff_hidden: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.matching = MultiPerspectiveMatching(hidden_size, context_lstm=context_lstm,
                                                 context_hidden=context_hidden, perspectives=perspectives,
                                                 dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(self.matching.output_dim, d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=dim_feedforward, dropout=dropout,
                                           batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        ff_hidden = ff_hidden or d_model
        self.fc1 = nn.Linear(4 * d_model, ff_hidden)
        self.fc2 = nn.Linear(ff_hidden, num_labels)
        kaiming_init(self)

    def _encode(self, match: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.proj(self.dropout(match)), src_key_padding_mask=~mask)
        return torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1)  # [B, 2·d_model]

    def forward(self, features: dict) -> torch.Tensor:
        mask_a, mask_b = features["mask_a"], features["mask_b"]
        match_a, match_b = self.matching(features["hidden_a"], mask_a, features["hidden_b"], mask_b)
        x = torch.cat([self._encode(match_a, mask_a), self._encode(match_b, mask_b)], dim=-1)
        x = self.dropout(torch.relu(self.fc1(self.dropout(x))))
        return self.fc2(x)
