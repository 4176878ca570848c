"""BERT+BiMPM pair classifier (BiMPM: Wang, Hamza & Florian 2017, arXiv 1702.03814; the matching
formulas and where stackft follows the paper rather than AllenNLP: docs/methods.md, section 7).

Siamese features ``{"hidden_a" [B,T1,H], "mask_a", "hidden_b" [B,T2,H], "mask_b"}``; P = side a, Q = side b.

:class:`MultiPerspectiveMatching` is the matching layer (also used by the Sim-Transformer head):

- ``context_lstm=True``: a shared BiLSTM over each side gives fw/bw halves (``context_hidden`` each).
  For each half, four strategies, each in both directions (P→Q and Q→P):
  full (each step vs the other side's last *real* fw state / first bw state), maxpool,
  attentive (cosine-weighted mean), max-attentive (the argmax-cosine step). Each strategy×half has
  its own ``[l, d]`` weight shared by P→Q and Q→P: 8 weights, 8·l features per position.
- ``context_lstm=False`` ("bimpm-noctx"): match directly on the encoder outputs, each strategy once
  per direction (4 weights, 4·l features); full matching compares each step with the other side's
  [CLS] (position 0).

The cosine math is ``stackft.kernels`` (Triton on CUDA, torch reference on CPU). Padded positions'
features are 0. :class:`BiMPMHead` then runs a shared aggregation BiLSTM over each side's matching
sequence (packed by length), concatenates the final fw/bw states of both sides (4·agg_hidden) and
applies ``Dropout -> Linear -> ReLU -> Dropout -> Linear -> [B, C]``.
"""

import torch
from torch import nn

from stackft.kernels import attentive_match, maxpool_match, multi_perspective_cosine
from stackft.modeling.heads.bilstm import packed_lstm
from stackft.modeling.heads.init import kaiming_init, kaiming_normal
from stackft.modeling.heads.pooling import last_valid, zero_padded

STRATEGIES = ("full", "maxpool", "attentive", "max_attentive")


class MultiPerspectiveMatching(nn.Module):
    """BiMPM matching layer: ``(hidden_a [B,T1,H], mask_a, hidden_b [B,T2,H], mask_b)`` ->
    ``(match_a [B,T1,F], match_b [B,T2,F])`` with ``F = output_dim``.

    Feature layout along the last dim: for each half in ``halves`` (("fw", "bw") or ("all",)),
    for each strategy in :data:`STRATEGIES`, ``perspectives`` features; ``feature_names`` lists them.
    """

    def __init__(self, input_size: int, *, context_lstm: bool = True, context_hidden: int = 100,
                 perspectives: int = 20, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if context_lstm:
            self.context = nn.LSTM(input_size, context_hidden, batch_first=True, bidirectional=True)
            self.halves = ("fw", "bw")
            dim = context_hidden
        else:
            self.context = None
            self.halves = ("all",)
            dim = input_size
        self.perspectives = perspectives
        self.feature_names = [f"{s}_{h}" for h in self.halves for s in STRATEGIES]
        self.weights = nn.ParameterDict(
            {name: nn.Parameter(torch.empty(perspectives, dim)) for name in self.feature_names})
        self.output_dim = len(self.feature_names) * perspectives
        kaiming_init(self)

    def init_kaiming(self) -> None:
        for weight in self.weights.values():
            kaiming_normal(weight)

    def context_states(self, hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The vectors matched per half: ``{"fw": [B,T,d], "bw": [B,T,d]}`` or ``{"all": hidden}`` (after dropout)."""
        x = self.dropout(hidden)
        if self.context is None:
            return {"all": x}
        out, _ = packed_lstm(self.context, x, mask)
        out = self.dropout(out)
        fw, bw = out.chunk(2, dim=-1)
        return {"fw": fw, "bw": bw}

    @staticmethod
    def _full_anchor(half: str, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # fw: last real step (not the padded last row); bw: first step; no context: [CLS].
        if half == "fw":
            return last_valid(states, mask)
        return states[:, 0]

    def forward(self, hidden_a, mask_a, hidden_b, mask_b) -> tuple[torch.Tensor, torch.Tensor]:
        states_a = self.context_states(hidden_a, mask_a)
        states_b = self.context_states(hidden_b, mask_b)
        feats_a, feats_b = [], []
        for half in self.halves:
            p, q = states_a[half], states_b[half]
            w = {s: self.weights[f"{s}_{half}"] for s in STRATEGIES}
            # full
            feats_a.append(multi_perspective_cosine(p, self._full_anchor(half, q, mask_b).unsqueeze(1), w["full"]))
            feats_b.append(multi_perspective_cosine(q, self._full_anchor(half, p, mask_a).unsqueeze(1), w["full"]))
            # maxpool (both directions from one call)
            p_max, q_max = maxpool_match(p, q, w["maxpool"], mask_a, mask_b)
            feats_a.append(p_max)
            feats_b.append(q_max)
            # attentive and max-attentive
            for strategy, mode in (("attentive", "mean"), ("max_attentive", "max")):
                feats_a.append(attentive_match(p, q, w[strategy], mask_a, mask_b, mode=mode))
                feats_b.append(attentive_match(q, p, w[strategy], mask_b, mask_a, mode=mode))
        match_a = zero_padded(torch.cat(feats_a, dim=-1), mask_a)
        match_b = zero_padded(torch.cat(feats_b, dim=-1), mask_b)
        return match_a, match_b


class BiMPMHead(nn.Module):
    """BiMPM pair head: siamese features -> logits ``[B, C]``."""

    level = "sequence"
    pair_input = True

    def __init__(self, hidden_size: int, num_labels: int, *, context_lstm: bool = True, perspectives: int = 20,
                 context_hidden: int = 100, agg_hidden: int = 100, dropout: float = 0.1):
        super().__init__()
        self.matching = MultiPerspectiveMatching(hidden_size, context_lstm=context_lstm,
                                                 context_hidden=context_hidden, perspectives=perspectives,
                                                 dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.aggregation = nn.LSTM(self.matching.output_dim, agg_hidden, batch_first=True, bidirectional=True)
        self.fc1 = nn.Linear(4 * agg_hidden, 2 * agg_hidden)
        self.fc2 = nn.Linear(2 * agg_hidden, num_labels)
        kaiming_init(self)

    def _aggregate(self, match: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, h_n = packed_lstm(self.aggregation, self.dropout(match), mask)
        return torch.cat([h_n[0], h_n[1]], dim=-1)  # final fw state, final bw state: [B, 2A]

    def forward(self, features: dict) -> torch.Tensor:
        mask_a, mask_b = features["mask_a"], features["mask_b"]
        match_a, match_b = self.matching(features["hidden_a"], mask_a, features["hidden_b"], mask_b)
        x = torch.cat([self._aggregate(match_a, mask_a), self._aggregate(match_b, mask_b)], dim=-1)
        x = self.dropout(torch.relu(self.fc1(self.dropout(x))))
        return self.fc2(x)


class BiMPMNoContextHead(BiMPMHead):
    """BiMPM without the context BiLSTM ("bimpm-noctx"): matching directly on the encoder outputs."""

    def __init__(self, hidden_size: int, num_labels: int, **options):
        options.setdefault("context_lstm", False)
        super().__init__(hidden_size, num_labels, **options)
