"""Kaiming initialisation for task heads (He et al. 2015, arXiv 1502.01852; docs/methods.md, section 5).

Wang et al. (2019) initialise their heads with Kaiming init and give no detail; the recipe is:

- ``nn.Linear`` / ``nn.Conv1d`` weights: ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``,
  biases 0. PyTorch's own default (``kaiming_uniform_(a=√5)``) has a different gain, so every head
  calls :func:`kaiming_init` explicitly.
- ``nn.LSTM``: ``weight_ih_*`` Kaiming-normal, ``weight_hh_*`` orthogonal per gate block
  (each ``[H, H]`` gate slice is an orthogonal matrix), biases 0.
- Any other module may define ``init_kaiming()``; it is called for its own raw parameters (the
  highway LSTM layer, the BiMPM perspective weights).
- Submodules from ``transformers`` (encoder weights) are never touched.
"""

import torch
from torch import nn


def kaiming_normal(weight: torch.Tensor) -> None:
    """In place: ``kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")`` (std = sqrt(2/fan_in))."""
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


def block_orthogonal(weight: torch.Tensor, block_rows: int) -> None:
    """In place: fill ``weight [k*block_rows, cols]`` with independent orthogonal blocks of ``block_rows`` rows."""
    with torch.no_grad():
        for block in weight.split(block_rows, dim=0):
            nn.init.orthogonal_(block)


def _init_lstm(lstm: nn.LSTM) -> None:
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("weight_ih"):
            kaiming_normal(param)
        elif name.startswith("weight_hh"):
            block_orthogonal(param, hidden)
        elif name.startswith("bias"):
            nn.init.zeros_(param)


def _is_encoder(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.")


def kaiming_init(module: nn.Module) -> nn.Module:
    """Apply the head init recipe to every submodule of ``module`` (skipping encoder subtrees); returns it."""
    if _is_encoder(module):
        return module
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        kaiming_normal(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LSTM):
        _init_lstm(module)
    hook = getattr(module, "init_kaiming", None)
    if callable(hook):
        hook()
    for child in module.children():
        kaiming_init(child)
    return module
