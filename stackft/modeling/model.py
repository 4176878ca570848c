"""StackModel: a pretrained encoder with a task head stacked on it.

``features(batch)`` runs the encoder (see docs/design.md for the feature dicts) and
``forward_features(features)`` runs the head, so phase 1 can feed the head from a feature cache
instead of the encoder. While the encoder is frozen it runs in eval mode under ``no_grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stackft.modeling.encoders import Encoder


class StackModel(nn.Module):
    """``forward(batch) -> logits``: ``[B,T,C]`` for token-level heads, ``[B,C]`` otherwise."""

    def __init__(self, encoder: Encoder, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def level(self) -> str:
        return self.head.level

    @property
    def pair_input(self) -> bool:
        return bool(getattr(self.head, "pair_input", False))

    @property
    def encoder_frozen(self) -> bool:
        return self.encoder.frozen

    def freeze_encoder(self) -> None:
        self.encoder.freeze()
        self.encoder.eval()

    def unfreeze_encoder(self) -> None:
        self.encoder.unfreeze()
        self.encoder.train(self.training)

    def train(self, mode: bool = True) -> "StackModel":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()  # a frozen encoder's features must not depend on dropout
        return self

    def _encode(self, input_ids, attention_mask, token_type_ids=None):
        if self.encoder_frozen:
            with torch.no_grad():
                return self.encoder(input_ids, attention_mask, token_type_ids)
        return self.encoder(input_ids, attention_mask, token_type_ids)

    def features(self, batch: dict) -> dict:
        if self.pair_input:
            return {
                "hidden_a": self._encode(batch["a_input_ids"], batch["a_attention_mask"]),
                "mask_a": batch["a_attention_mask"].bool(),
                "hidden_b": self._encode(batch["b_input_ids"], batch["b_attention_mask"]),
                "mask_b": batch["b_attention_mask"].bool(),
            }
        hidden = self._encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return {"hidden": hidden, "mask": batch["attention_mask"].bool()}

    def forward_features(self, features: dict) -> torch.Tensor:
        return self.head(features)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.forward_features(self.features(batch))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in fp32; token-level logits ``[B,T,C]`` with labels ``[B,T]`` ignore -100."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=-100, reduction=reduction)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)
