"""BiLSTM tagger, the stack-and-finetune NER head (Wang et al. 2019: BERT -> BiLSTM -> per-token
linear, no CRF; sizes are stackft's, see docs/methods.md, section 6), and a packed-LSTM helper.

``hidden [B, T, H] -> Dropout -> BiLSTM (256 per direction) -> Dropout -> Linear -> [B, T, C]``.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stackft.modeling.heads.init import kaiming_init
from stackft.modeling.heads.pooling import lengths_from_mask


def packed_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a batch-first ``lstm`` over the real tokens only.

    ``x [B, T, in]``, ``mask [B, T]`` bool (left-aligned) -> ``(out [B, T, D*hidden], h_n [layers*D, B, hidden])``;
    ``out`` is 0 at padded positions, ``h_n`` holds each row's final state at its own last real step
    (forward) and at position 0 (backward). Rows with no real token are run over position 0.
    """
    lengths = lengths_from_mask(mask).clamp(min=1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, h_n


class BiLSTMTagger(nn.Module):
    """Token-level BiLSTM head: features ``{"hidden" [B,T,H], "mask" [B,T]}`` -> logits ``[B, T, C]``.

    Padded positions get logits 0.
    """

    level = "token"
    pair_input = False

    def __init__(self, hidden_size: int, num_labels: int, *, lstm_hidden: int = 256, num_layers: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden_size, lstm_hidden, num_layers=num_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
        self.classifier = nn.Linear(2 * lstm_hidden, num_labels)
        kaiming_init(self)

    def forward(self, features: dict) -> torch.Tensor:
        mask = features["mask"]
        out, _ = packed_lstm(self.lstm, self.dropout(features["hidden"]), mask)
        logits = self.classifier(self.dropout(out))
        return logits * mask.unsqueeze(-1).to(logits.dtype)
