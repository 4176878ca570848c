"""BERT+HighwayLSTM text classifier: the highway LSTM of He et al. (2017, "Deep Semantic Role
Labeling", ACL) in the gate layout of AllenNLP's alternating highway LSTM (docs/methods.md, section 8).

Per layer and direction, gates from ``W_x x_t`` (6H: i, f, g, o, r, carry) and ``W_h h_{t-1} + b`` (5H):
``c_t = f·c_{t-1} + i·g``, ``h_t = r·o·tanh(c_t) + (1 - r)·carry`` where the carry is the linear
slice of ``W_x x_t``, so the input width may differ from H. The recurrence itself is
``stackft.kernels.highway_lstm`` (Triton on CUDA; on CPU the C++ layer of the ``stackft_C``
extension, the torch reference when it does not build).

Each of ``num_layers`` layers runs a forward and a reverse pass with separate weights and
concatenates them (2·lstm_hidden). When training, a variational recurrent-dropout mask is drawn
once per sequence, layer and direction. Then masked max-pool over time, concatenated with
[CLS] (``concat_cls``), ``-> Dropout -> Linear -> [B, C]``.
"""

import torch
from torch import nn

from stackft.kernels import highway_lstm
from stackft.modeling.heads.init import block_orthogonal, kaiming_init, kaiming_normal
from stackft.modeling.heads.pooling import lengths_from_mask, masked_max


class UnidirectionalHighwayLSTM(nn.Module):
    """One direction of one highway LSTM layer, as an ``nn.Module`` holding its weights:
    ``x [B, T, in]`` -> ``out [B, T, H]`` (0 at t >= length).

    The recurrence runs in :func:`stackft.kernels.highway_lstm` (whose Triton autograd function is
    ``stackft.kernels.ops.highway_lstm.HighwayLSTMLayerFunction``, and whose CPU op is
    ``torch.ops.stackft.highway_lstm_layer`` from ``stackft.kernels.ops.highway_lstm_cpp``).

    Parameters: ``W_x [6H, in]``, ``W_h [5H, H]``, ``b [5H]`` (forget-gate slice initialised to 1).
    """

    def __init__(self, input_size: int, hidden: int, *, reverse: bool = False):
        super().__init__()
        self.hidden = hidden
        self.reverse = reverse
        self.W_x = nn.Parameter(torch.empty(6 * hidden, input_size))
        self.W_h = nn.Parameter(torch.empty(5 * hidden, hidden))
        self.b = nn.Parameter(torch.empty(5 * hidden))
        self.init_kaiming()

    def init_kaiming(self) -> None:
        kaiming_normal(self.W_x)
        block_orthogonal(self.W_h, self.hidden)
        with torch.no_grad():
            self.b.zero_()
            self.b[self.hidden:2 * self.hidden].fill_(1.0)  # forget gate, as AllenNLP

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, dropout_mask: torch.Tensor | None = None):
        out, _ = highway_lstm(x, lengths, self.W_x, self.W_h, self.b, reverse=self.reverse,
                              dropout_mask=dropout_mask)
        return out


class HighwayLSTMClassifier(nn.Module):
    """Sequence-level head: features ``{"hidden" [B,T,H], "mask" [B,T]}`` -> logits ``[B, C]``."""

    level = "sequence"
    pair_input = False

    def __init__(self, hidden_size: int, num_labels: int, *, lstm_hidden: int = 256, num_layers: int = 2,
                 dropout: float = 0.1, recurrent_dropout: float | None = None, concat_cls: bool = True):
        super().__init__()
        self.lstm_hidden = lstm_hidden
        self.recurrent_dropout = dropout if recurrent_dropout is None else recurrent_dropout
        self.concat_cls = concat_cls
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            in_size = hidden_size if layer == 0 else 2 * lstm_hidden
            self.layers.append(nn.ModuleList([UnidirectionalHighwayLSTM(in_size, lstm_hidden),
                                              UnidirectionalHighwayLSTM(in_size, lstm_hidden, reverse=True)]))
        out_size = 2 * lstm_hidden + (hidden_size if concat_cls else 0)
        self.classifier = nn.Linear(out_size, num_labels)
        kaiming_init(self)

    def _dropout_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        p = self.recurrent_dropout
        if not self.training or p == 0.0:
            return None
        keep = torch.full((x.size(0), self.lstm_hidden), 1.0 - p, device=x.device, dtype=x.dtype)
        return torch.bernoulli(keep) / (1.0 - p)

    def forward(self, features: dict) -> torch.Tensor:
        hidden, mask = features["hidden"], features["mask"]
        lengths = lengths_from_mask(mask)
        x = self.dropout(hidden)
        for forward_dir, backward_dir in self.layers:
            x = torch.cat([forward_dir(x, lengths, self._dropout_mask(x)),
                           backward_dir(x, lengths, self._dropout_mask(x))], dim=-1)
        pooled = masked_max(x, mask)
        if self.concat_cls:
            pooled = torch.cat([pooled, hidden[:, 0]], dim=-1)
        return self.classifier(self.dropout(pooled))


# 0.1 name (deprecated, removed in 0.3): it collided with the Triton autograd function
# stackft.kernels.ops.highway_lstm.HighwayLSTMLayer (now HighwayLSTMLayerFunction).
_RENAMED = {"HighwayLSTMLayer": "UnidirectionalHighwayLSTM"}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        warnings.warn(f"{__name__}.{name} was renamed {_RENAMED[name]}; the old name goes away in stackft 0.3",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
