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
    def first_token_only(self) -> bool:
        """The head reads only ``hidden[:, 0]`` ([CLS]): a feature cache serves it ``[B, 1, H]``."""
        return bool(getattr(self.head, "first_token_only", False))

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
        """The encoder's output for ``batch``, as the head's input (a feature dict).

        - single sequences: ``{"hidden" [B,T,H], "mask" [B,T] bool}``;
        - siamese pairs (``a_input_ids``/``b_input_ids``): ``{"hidden_a", "mask_a", "hidden_b", "mask_b"}``;
        - joint pairs for a pair head: the single-sequence dict plus ``"token_type_ids" [B,T]``,
          split by segment in :meth:`forward_features` (see :func:`split_joint_pair`).
        """
        if "a_input_ids" in batch:
            return {
                "hidden_a": self._encode(batch["a_input_ids"], batch["a_attention_mask"]),
                "mask_a": batch["a_attention_mask"].bool(),
                "hidden_b": self._encode(batch["b_input_ids"], batch["b_attention_mask"]),
                "mask_b": batch["b_attention_mask"].bool(),
            }
        hidden = self._encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out = {"hidden": hidden, "mask": batch["attention_mask"].bool()}
        if self.pair_input:
            out["token_type_ids"] = batch["token_type_ids"]
        return out

    def forward_features(self, features: dict) -> torch.Tensor:
        if self.pair_input and "hidden" in features:
            features = split_joint_pair(features["hidden"], features["mask"], features["token_type_ids"])
        return self.head(features)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.forward_features(self.features(batch))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy in fp32; token-level logits ``[B,T,C]`` with labels ``[B,T]`` ignore -100."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=-100, reduction=reduction)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)

def split_joint_pair(hidden: torch.Tensor, mask: torch.Tensor, token_type_ids: torch.Tensor) -> dict:
    """Split a jointly encoded pair ``[CLS] a [SEP] b [SEP]`` into two padded sequences.

    ``hidden [B,T,H]``, ``mask [B,T]`` (valid tokens), ``token_type_ids [B,T]`` (0: side a, 1: side b;
    padding may carry 0, the mask excludes it). Side a (``[CLS] a [SEP]``) is the prefix of each row,
    side b (``b [SEP]``) the tokens after it. Returns ``{"hidden_a" [B,Ta,H], "mask_a" [B,Ta],
    "hidden_b" [B,Tb,H], "mask_b" [B,Tb]}`` with Ta/Tb the longest side in the batch, zero-padded;
    each side's states are the joint encoder's, so they have attended to the other side.
    """
    mask = mask.bool()
    is_b = mask & (token_type_ids == 1)
    len_a = (mask & ~is_b).sum(1)
    len_b = is_b.sum(1)
    if hidden.shape[0] > 0 and bool((len_b == 0).all()):
        raise ValueError("joint pair encoding has no segment-b tokens: the tokenizer gives no token_type_ids; "
                         "use pair_mode='siamese' for this encoder")
    ta, tb = max(int(len_a.max()), 1), max(int(len_b.max()), 1)
    pos_a = torch.arange(ta, device=hidden.device)
    pos_b = torch.arange(tb, device=hidden.device)
    mask_a = pos_a[None, :] < len_a[:, None]
    mask_b = pos_b[None, :] < len_b[:, None]
    idx_b = (len_a[:, None] + pos_b[None, :]).clamp(max=hidden.shape[1] - 1)
    hidden_b = torch.gather(hidden, 1, idx_b[:, :, None].expand(-1, -1, hidden.shape[2]))
    return {"hidden_a": hidden[:, :ta] * mask_a[..., None].to(hidden.dtype), "mask_a": mask_a,
            "hidden_b": hidden_b * mask_b[..., None].to(hidden.dtype), "mask_b": mask_b}
