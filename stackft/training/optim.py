"""Optimisation: parameter groups, BERT-Adam, learning-rate schedules, gradient clipping.

- :func:`build_param_groups`: one torch param group per (encoder layer, decay / no decay) plus the
  head's. Layer-wise lr decay: encoder layer k of L (embeddings 0, top layer L) trains at
  ``encoder_lr * layer_decay**(L-k)``; ``layer_decay=1`` (the default) is one encoder lr. Biases and
  the parameters of normalisation layers (LayerNorm, RMSNorm, BatchNorm, GroupNorm, HF's
  ``*LayerNorm``/``*RMSNorm`` classes, any name containing ``LayerNorm``/``layer_norm``) get no
  weight decay; every other trainable parameter gets ``weight_decay`` (0.01 by default).
- :class:`BertAdam`: BERT's optimizer, i.e. Adam with decoupled weight decay (the decay term is
  added to the update, inside the lr product, not to the gradient) and, by default, *no* bias
  correction of the moments; betas (0.9, 0.999), eps 1e-6. ``make_optimizer``: ``bert_adam``
  (that), ``adamw`` (the same with bias correction) or ``torch_adamw`` (``torch.optim.AdamW``).
- :func:`schedule_factor` / :func:`make_scheduler`: the lr multiplier per optimizer step. All
  schedules start with a linear warmup over W = ``round(warmup_proportion * T)`` of the T steps
  (10% by default), ramping ``(step+1)/W`` so no step runs at lr 0.
  ``bert_tf`` (TF BERT's): then ``1 - step/T``, a linear decay that starts from step 0, so the lr
  steps down at the end of warmup; ``linear_hf`` (HF's ``get_linear_schedule_with_warmup``): a
  continuous linear decay ``(T-step)/(T-W)``; ``cosine``: half a cosine from 1 to 0 after warmup;
  ``constant``: 1 after warmup.
- :func:`clip_gradients`: by the global L2 norm of all gradients (TF BERT's
  ``clip_by_global_norm``) or per tensor (what the PyTorch ``BertAdam`` port did), max norm from
  ``TrainConfig.clip`` (1.0).
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("bert_tf", "linear_hf", "constant", "cosine")
_NORMS = tuple(c for c in (nn.LayerNorm, getattr(nn, "RMSNorm", None), nn.GroupNorm,
                           nn.modules.batchnorm._NormBase) if c is not None)


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names of biases and of normalisation-layer parameters (never weight-decayed)."""
    names = set()
    for mod_name, mod in model.named_modules():
        # torch norms (LayerNorm, RMSNorm, GroupNorm, BatchNorm*, InstanceNorm*) and HF's own classes
        # (T5LayerNorm, LlamaRMSNorm, ...)
        is_norm = isinstance(mod, _NORMS) or any(k in type(mod).__name__.lower() for k in ("layernorm", "rmsnorm"))
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            low = full.lower()
            if is_norm or "bias" in p_name or "layernorm" in low or "layer_norm" in low:
                names.add(full)
    return names


_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_NUM_LAYERS_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def _config_num_layers(encoder: nn.Module) -> int | None:
    """The number of transformer layers in ``encoder.config``, if it says (HF models do)."""
    cfg = getattr(encoder, "config", None)
    for key in _NUM_LAYERS_KEYS:
        n = getattr(cfg, key, None)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def _generic_layer_indices(encoder: nn.Module) -> tuple[dict[int, int], int]:
    """Layer index per parameter (by id) of any encoder module, and the top index L.

    From the parameter name: a name containing ``embed`` 0; ``...layer.N.``, ``layers.N.``,
    ``h.N.``, ``block(s).N.`` N+1; another ``nn.Embedding`` weight (GPT-2's ``wte``/``wpe``) 0;
    anything else (pooler, final norm) L. L is the config's ``num_hidden_layers`` /
    ``n_layer`` / ``num_layers`` (never below the largest index seen), else the largest index seen.
    """
    embedding_params = {id(p) for m in encoder.modules() if isinstance(m, nn.Embedding)
                        for p in m.parameters(recurse=False)}
    found: dict[int, int | None] = {}
    for name, p in encoder.named_parameters():
        m = None if "embed" in name else _LAYER_RE.search(name)
        if m:
            found[id(p)] = int(m.group(1)) + 1
        elif "embed" in name or id(p) in embedding_params:  # an Embedding inside a layer (T5's
            found[id(p)] = 0  # relative position bias) stays with its layer
        else:
            found[id(p)] = None
    seen = max((k for k in found.values() if k is not None), default=0)
    L = max(_config_num_layers(encoder) or 0, seen)
    return {i: (L if k is None else k) for i, k in found.items()}, L


def build_param_groups(
    model: nn.Module,
    *,
    head_lr: float,
    encoder_lr: float,
    weight_decay: float = 0.01,
    layer_decay: float = 1.0,
) -> list[dict]:
    """Torch param groups for a :class:`~stackft.modeling.model.StackModel` or any ``nn.Module``
    whose ``encoder`` attribute is the encoder.

    The encoder may be stackft's :class:`~stackft.modeling.encoders.Encoder` (its ``layer_index``
    and ``num_layers`` number the layers) or a plain module such as a Hugging Face ``BertModel``
    (numbered from the parameter names, see :func:`_generic_layer_indices`); every other parameter
    of ``model`` is the head's (a model without ``encoder`` is all head). Encoder layer k
    (embeddings 0, top layer L) gets ``encoder_lr * layer_decay**(L-k)``; the head gets
    ``head_lr``. Biases and normalisation-layer parameters get no weight decay, the rest
    ``weight_decay``. Only trainable parameters are included, each in exactly one group. Groups
    carry ``name`` (e.g. ``"encoder.layer3.decay"``) and ``layer`` (-1 for the head) for logging.
    """
    if not (math.isfinite(layer_decay) and layer_decay > 0):  # NaN fails every comparison
        raise ValueError(f"layer_decay must be a finite number > 0, got {layer_decay}")
    encoder = getattr(model, "encoder", None)
    if encoder is not None and not isinstance(encoder, nn.Module):
        raise TypeError(f"model.encoder must be an nn.Module, got {type(encoder).__name__}")
    no_decay = _no_decay_names(model)
    if encoder is None:
        L, layer_of = 0, {}
    elif callable(getattr(encoder, "layer_index", None)) and hasattr(encoder, "num_layers"):
        L = int(encoder.num_layers)  # stackft's Encoder (names relative to it)
        layer_of = {id(p): encoder.layer_index(n) for n, p in encoder.named_parameters()}
    else:
        layer_of, L = _generic_layer_indices(encoder)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = name not in no_decay
        if id(p) in layer_of:
            k = layer_of[id(p)]
            key = ("encoder", k, decay)
            lr = encoder_lr * layer_decay ** (L - k)
            gname = f"encoder.layer{k}"
        else:
            key = ("head", -1, decay)
            lr = head_lr
            gname = "head"
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{gname}.{'decay' if decay else 'no_decay'}",
                "layer": key[1],
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != "head", k[1], not k[2]))]


class BertAdam(torch.optim.Optimizer):
    """AdamW as in BERT: decoupled weight decay inside the lr product, optional bias correction.

    Per parameter: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; u = m / (sqrt(v) + eps)
    (m, v bias-corrected only if ``bias_correction``); u += wd * theta; theta -= lr * u.
    Defaults are BERT's: betas (0.9, 0.999), eps 1e-6, weight_decay 0.01, no bias correction.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, bias_correction: bool = False):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid BertAdam settings lr={lr} betas={betas} eps={eps}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                if group["bias_correction"]:
                    t = state["step"]
                    denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                    update = (m / (1 - b1**t)) / denom
                else:
                    update = m / v.sqrt().add_(group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


def schedule_factor(kind: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based, of ``total_steps``).

    Warmup ramps (step+1)/W so no step runs at lr 0; the decays stay above 0 up to the last step.
    """
    if kind not in SCHEDULES:  # checked first, or a typo would pass silently during warmup
        raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    T, W = max(1, total_steps), max(0, warmup_steps)
    if step < W:
        return (step + 1) / W
    if kind == "constant":
        return 1.0
    if kind == "bert_tf":  # TF BERT: polynomial decay from step 0, so the lr steps down after warmup
        return max(0.0, 1.0 - step / T)
    if kind == "linear_hf":
        return max(0.0, (T - step) / max(1, T - W))
    if kind == "cosine":
        progress = min(1.0, (step - W) / max(1, T - W))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")


def make_scheduler(optimizer, kind: str = "bert_tf", *, total_steps: int, warmup_proportion: float = 0.1) -> LambdaLR:
    """A LambdaLR for ``kind`` over ``total_steps`` with ``warmup_proportion`` linear warmup."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    warmup = int(round(warmup_proportion * total_steps))
    return LambdaLR(optimizer, lambda s: schedule_factor(kind, s, total_steps, warmup))


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float, mode: str = "global") -> float:
    """Clip by the global L2 norm (TF BERT) or per tensor (``BertAdam``); returns the global norm."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if mode == "global":
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if mode == "per_tensor":
        norms = [torch.nn.utils.clip_grad_norm_([p], max_norm) for p in params]
        return float(torch.stack([n.float() for n in norms]).norm())
    raise ValueError(f"unknown clip mode {mode!r}; choose 'global' or 'per_tensor'")


def make_optimizer(groups: list[dict], *, kind: str = "bert_adam", lr: float = 1e-3) -> torch.optim.Optimizer:
    """``bert_adam`` (no bias correction), ``adamw`` (bias-corrected BertAdam) or ``torch_adamw``."""
    if kind == "bert_adam":
        return BertAdam(groups, lr=lr, bias_correction=False)
    if kind == "adamw":
        return BertAdam(groups, lr=lr, bias_correction=True)
    if kind == "torch_adamw":
        return torch.optim.AdamW(groups, lr=lr, eps=1e-6)
    raise ValueError(f"unknown optimizer {kind!r}; choose bert_adam, adamw or torch_adamw")
