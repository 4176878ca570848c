"""Parameter-efficient tuning (PET) for EH-FT phase 1 (Yang et al. 2022, arXiv 2210.16771).

EH-FT trains the randomly initialised head together with a small PET module (LoRA: Hu et al. 2021,
arXiv 2106.09685; BitFit: Ben Zaken et al. 2021, arXiv 2106.10199) on the frozen encoder, then
drops the PET parameters and fine-tunes from the pretrained encoder (docs/methods.md, section 9).
The trainer (``strategy="eh-ft"``) calls this module:

- ``attach(encoder, method, **opts)``: make ``method``'s parameters the only trainable ones of the
  encoder. ``"lora"`` wraps ``encoder.model`` with a :mod:`peft` LoRA adapter (r=8, alpha=16 on the
  attention query/value linears; ``encoder(input_ids, attention_mask)`` works unchanged) and
  ``"bitfit"`` adds no module and makes the encoder's bias parameters trainable (EH-FT's BitFit:
  the qkv, attention-output, MLP-in/out and LayerNorm biases, which in a BERT are all its biases).
  Every other encoder parameter gets ``requires_grad=False``. Calling it again with the same method
  adds nothing and only re-applies the trainable flags (the trainer freezes the encoder before
  attaching, also when it resumes a run whose weights already include the PET modules).
- ``detach(encoder, method)``: drop the LoRA modules **without merging** them (the encoder's
  weights are then exactly what they were before ``attach``, and ``encoder.model.state_dict()``
  has the original keys again); for BitFit, freeze the biases again (their trained values stay:
  EH-FT reloads the pretrained encoder for phase 2, which the trainer does).
- ``is_attached(encoder)``, ``attached_method(encoder)``, ``pet_parameters(encoder)``.

LoRA options: ``r`` (8), ``alpha`` (16), ``dropout`` (0.0), ``target_modules`` (default: the
attention query/value linears, found by name: ``query``/``value`` in BERT, RoBERTa, ELECTRA,
ALBERT; ``q_lin``/``v_lin`` in DistilBERT; ``query_proj``/``value_proj`` in DeBERTa; ``q_proj``/
``v_proj``), ``seed`` (0): LoRA's A matrices are drawn under this seed in a forked RNG, so attaching
never moves the global RNG (B starts at zero, so the adapter starts as the identity).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

METHODS = ("lora", "bitfit")
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0}
_QV_NAMES = (("query", "value"), ("q_lin", "v_lin"), ("query_proj", "value_proj"), ("q_proj", "v_proj"))
_MARK = "_stackft_pet"


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown PET method {method!r}; choose from {METHODS}")


def attached_method(encoder: nn.Module) -> str | None:
    """The PET method attached to ``encoder`` (``"lora"`` | ``"bitfit"``), or None."""
    method = getattr(encoder, _MARK, None)
    if method is None and _is_peft(getattr(encoder, "model", None)):
        return "lora"
    return method


def is_attached(encoder: nn.Module) -> bool:
    """Whether a PET method is attached to ``encoder``."""
    return attached_method(encoder) is not None


def _is_peft(model) -> bool:
    if model is None:
        return False
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _lora_target_modules(model: nn.Module) -> list[str]:
    leaf_linear = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    for q, v in _QV_NAMES:
        if q in leaf_linear and v in leaf_linear:
            return [q, v]
    raise ValueError(
        f"cannot find the attention query/value linears of {type(model).__name__} (looked for "
        f"{', '.join('/'.join(p) for p in _QV_NAMES)}); pass target_modules=[...] to attach()")


def _is_lora_param(name: str) -> bool:
    return "lora_" in name


def _is_bias_param(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")


def pet_parameters(encoder: nn.Module) -> list[nn.Parameter]:
    """The parameters of the attached PET method (empty when none is attached)."""
    method = attached_method(encoder)
    if method == "lora":
        return [p for n, p in encoder.named_parameters() if _is_lora_param(n)]
    if method == "bitfit":
        return [p for n, p in encoder.named_parameters() if _is_bias_param(n)]
    return []


def _set_trainable(encoder: nn.Module) -> None:
    pet_ids = {id(p) for p in pet_parameters(encoder)}
    for p in encoder.parameters():
        p.requires_grad_(id(p) in pet_ids)


def attach(encoder: nn.Module, method: str, **opts) -> nn.Module:
    """Attach PET ``method`` to ``encoder`` (an :class:`~stackft.modeling.encoders.Encoder`); returns it.

    Afterwards exactly :func:`pet_parameters` require grad. Idempotent for the same method; a
    different method already attached raises ``ValueError`` (detach it first). ``seed`` (the
    run's init seed) is accepted by every method; only LoRA draws random initial weights.
    """
    _check_method(method)
    current = attached_method(encoder)
    if current is not None and current != method:
        raise ValueError(f"PET method {current!r} is already attached; detach it before attaching {method!r}")
    if current is None:
        if method == "lora":
            unknown = set(opts) - {"r", "alpha", "dropout", "target_modules", "seed"}
            if unknown:
                raise TypeError(f"unknown LoRA options: {sorted(unknown)}")
            _attach_lora(encoder, **opts)
        elif set(opts) - {"seed"}:
            raise TypeError(f"bitfit takes no options, got {sorted(set(opts) - {'seed'})}")
        setattr(encoder, _MARK, method)
    _set_trainable(encoder)
    if not pet_parameters(encoder):
        raise ValueError(f"{method}: the encoder has no parameters to train")
    return encoder


def _attach_lora(encoder: nn.Module, *, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 target_modules=None, seed: int = 0) -> None:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("EH-FT with LoRA needs peft: pip install 'stackft[peft]' (or pip install peft)") from exc
    model = encoder.model
    targets = list(target_modules) if target_modules else _lora_target_modules(model)
    config = LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets, bias="none")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls deprecated transformers helpers
        torch.manual_seed(seed)
        encoder.model = get_peft_model(model, config).to(device)


def detach(encoder: nn.Module, method: str | None = None) -> nn.Module:
    """Remove the attached PET method (LoRA: unload without merging; BitFit: refreeze the biases).

    ``method`` (optional) must match the attached one. Detaching when nothing is attached does
    nothing. Afterwards every encoder parameter is frozen; the trainer unfreezes for phase 2.
    """
    current = attached_method(encoder)
    if method is not None:
        _check_method(method)
        if current is not None and current != method:
            raise ValueError(f"PET method {current!r} is attached, not {method!r}")
    if current is None:
        return encoder
    if current == "lora" and _is_peft(encoder.model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            encoder.model = encoder.model.unload()  # drops the adapters, restores the original linears
    if hasattr(encoder, _MARK):
        delattr(encoder, _MARK)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def count_lora_parameters(model: nn.Module, r: int = 8, target_modules=None) -> int:
    """How many parameters LoRA rank ``r`` adds to ``model``'s target linears: r·(in+out) each."""
    targets = set(target_modules or _lora_target_modules(model))
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets)
