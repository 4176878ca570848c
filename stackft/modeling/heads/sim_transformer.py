"""Sim-Transformer pair classifier (Wang et al. 2019, arXiv 1907.05338; docs/methods.md, section 6):
BiMPM matching, then a Transformer encoder in place of the aggregation BiLSTM.

``MultiPerspectiveMatching`` (context BiLSTM by default) -> ``match_norm`` -> Dropout -> Linear(F, d_model=128) ->
2-layer ``nn.TransformerEncoder`` (4 heads, FF 512, dropout 0.1, padding mask from the features),
shared by both sides -> masked mean- and max-pool per side -> concat ``[B, 4·d_model]`` ->
``Dropout -> Linear -> ReLU -> Dropout -> Linear -> [B, C]``.

Init: ``kaiming_init`` covers every ``nn.Linear`` (projection, attention out-proj, FF, classifier);
the attention ``in_proj_weight`` is a raw parameter and keeps PyTorch's Xavier init.
``match_norm="batch"`` (the default since head revision 3; ``"none"`` is the head as the paper describes it)
normalises each matching feature over the real tokens of both sides of the batch (running statistics at
eval time). Why: the matching features are cosines, and on a real encoder they share a large offset: on
MiniLM features of QQP each feature's mean over tokens is about 0.70, while one token differs from another
by a standard deviation of about 0.19. Without the norm the post-LN Transformer learns to squash what
differs between examples (measured: the spread of pooled outputs across pairs falls from 0.20 at the
projection to 0.03 after two layers), logits become constant and the head predicts the majority class
(dev accuracy exactly 50.0 on a balanced split at lr 1e-4 to 1e-3, with pre-LN at 1e-3, with PyTorch's init).
Per-feature batch statistics remove exactly that shared offset and keep what a LayerNorm over the features
would remove (a token whose cosines are all high: the toy pair task in the tests fits at 0.97 dev accuracy
with it and 0.65 with LayerNorm). Measured on QQP (stack-only, 1 epoch): docs/methods.md, section 6.
Width: d_model 128 and FF 512 since head revision 3 (256 and 1024 before): on QQP dev, stack-only,
3 seeds, the narrower head scored 69.7 against 68.9 at about half the head's cost (docs/methods.md, section 6).
No positional encoding is added: with the context BiLSTM the matching features already carry order.
Every sequence needs at least one real token (a fully padded row makes attention undefined).
"""

import torch
from torch import nn

from stackft.modeling.heads.bimpm import MultiPerspectiveMatching
from stackft.modeling.heads.init import kaiming_init
from stackft.modeling.heads.pooling import masked_max, masked_mean


class TokenBatchNorm(nn.BatchNorm1d):
    """Batch norm of ``[B, T, F]`` sequences over their real tokens only; several sequences (the two
    sides of a pair) share one set of statistics. Padded positions come back as zeros.

    ``forward((x_1, ..., x_k), (mask_1, ..., mask_k))`` with ``x_i [B, T_i, F]``, ``mask_i [B, T_i]`` bool
    -> the normalised ``x_i`` (their dtype); statistics in float32. A training batch with a single real
    token normalises with the running statistics (one value has no variance). No boolean indexing, so
    no host sync on CUDA."""

    def forward(self, xs, masks):  # noqa: D102 (the class says it)
        ws = [m.unsqueeze(-1).float() for m in masks]
        if self.training:
            n = sum(w.sum() for w in ws)
            mean = sum((x.float() * w).sum((0, 1)) for x, w in zip(xs, ws)) / n.clamp_min(1)
            var = sum((((x.float() - mean) * w) ** 2).sum((0, 1)) for x, w in zip(xs, ws)) / n.clamp_min(1)
            enough = n > 1
            with torch.no_grad():
                self.num_batches_tracked += enough.long()
                f = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.clamp_min(1)
                f = enough.float() * f
                self.running_mean.lerp_(mean.detach(), f)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), f)
            mean = torch.where(enough, mean, self.running_mean)
            var = torch.where(enough, var, self.running_var)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.bias is not None else 0)
        return tuple(((x.float() * scale + shift) * w).to(x.dtype) for x, w in zip(xs, ws))


class SimTransformerHead(nn.Module):
    """Siamese features ``{"hidden_a","mask_a","hidden_b","mask_b"}`` -> logits ``[B, C]``."""

    level = "sequence"
    pair_input = True

    def __init__(self, hidden_size: int, num_labels: int, *, context_lstm: bool = True, perspectives: int = 20,
                 context_hidden: int = 100, d_model: int = 128, num_layers: int = 2, num_heads: int = 4,
                 dim_feedforward: int = 512, ff_hidden: int | None = None, dropout: float = 0.1,
                 match_norm: str = "batch"):
        super().__init__()
        self.matching = MultiPerspectiveMatching(hidden_size, context_lstm=context_lstm,
                                                 context_hidden=context_hidden, perspectives=perspectives,
                                                 dropout=dropout)
        if match_norm not in ("batch", "none"):
            raise ValueError(f"match_norm must be 'batch' or 'none', got {match_norm!r}")
        self.match_norm = TokenBatchNorm(self.matching.output_dim) if match_norm == "batch" else None
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
        if self.match_norm is not None:
            match_a, match_b = self.match_norm((match_a, match_b), (mask_a, mask_b))
        x = torch.cat([self._encode(match_a, mask_a), self._encode(match_b, mask_b)], dim=-1)
        x = self.dropout(torch.relu(self.fc1(self.dropout(x))))
        return self.fc2(x)
