"""Checks of a run's settings against this machine and the files they name, before anything loads.

:func:`check_config` runs ``cfg.validate()`` (every value on its own, :mod:`stackft.config`) and
then what needs the environment: the device exists, the optional packages the settings need are
installed (``peft`` for EH-FT's LoRA, ``datasets`` for datasets sources), the head takes the head
options, the data files exist. It loads no encoder and reads no data, so a mistake costs a fraction
of a second. :func:`check_encoder` checks what needs the loaded encoder (``max_length`` against its
positions). ``Trainer`` calls both; the command line calls :func:`check_config` before the Trainer.

Every failure is one exception whose message says what to do: :class:`~stackft.config.ConfigError`
(a ValueError naming the setting) for a value this machine or encoder cannot take,
:class:`MissingPackageError` (an ImportError and a ConfigError) for a package to install, and
FileNotFoundError for a data file that is not there.
"""

from __future__ import annotations

import importlib.util
import inspect

from stackft.config import ConfigError, TrainConfig, suggest


class MissingPackageError(ConfigError, ImportError):
    """A setting needs an optional package that is not installed; the message has the pip command."""


def check_config(cfg: TrainConfig, *, data: bool = True, encoder: bool = True) -> TrainConfig:
    """``cfg.validate()``, then the device, optional packages, head options, (``encoder``) the
    encoder folder's positions and (``data``) the data sources; returns cfg. A Trainer handed its
    encoder or data skips the checks of what it will not load."""
    cfg.validate()
    check_device(cfg.device)
    check_packages(cfg)
    check_head_options(cfg)
    if encoder:
        check_encoder_files(cfg)
    if data:
        check_data(cfg)
    return cfg


def _json(path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check_encoder_files(cfg: TrainConfig) -> None:
    """``max_length`` against the positions of a local encoder folder, from its JSON files alone
    (a hub encoder is checked once loaded, by :func:`check_encoder`)."""
    from pathlib import Path

    from stackft.modeling.encoders import resolve_encoder

    try:
        folder = Path(resolve_encoder(cfg.encoder)).expanduser()
    except ImportError:
        return  # the default encoder's package is missing: load_encoder says how to install it
    if not (folder / "config.json").is_file():
        return
    limit = _json(folder / "config.json").get("max_position_embeddings")
    tok_limit = _json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tok_limit, int) and tok_limit < 1_000_000:
        limit = tok_limit if not isinstance(limit, int) else min(limit, tok_limit)
    if isinstance(limit, int) and cfg.max_length > limit:
        raise ConfigError("max_length", cfg.max_length, f"above the {limit} positions of the encoder "
                                                        f"({cfg.encoder or 'minilm'}); use {limit} or less")


def check_device(device: str, field_name: str = "device") -> None:
    """The device ``device`` names exists here (``auto`` always does)."""
    if device in ("auto", "cpu"):
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConfigError(field_name, device, f"{why}; use cpu (or auto, which picks a GPU when there is one)")
        n = torch.cuda.device_count()
        if index and int(index) >= n:
            raise ConfigError(field_name, device, f"this machine has {n} CUDA device(s): cuda:0 to cuda:{n - 1}")
    elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(field_name, device, "MPS is not available here; use cpu or auto")
    elif kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ConfigError(field_name, device, "no XPU device is available here; use cpu or auto")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_packages(cfg: TrainConfig) -> None:
    """Optional packages the settings need: peft for ``strategy="eh-ft"`` with ``pet="lora"``."""
    if cfg.strategy == "eh-ft" and cfg.pet == "lora" and not _installed("peft"):
        raise MissingPackageError("strategy", cfg.strategy, "EH-FT with LoRA (--pet lora, the default) needs the "
                                  "peft package: pip install peft (or use --pet bitfit, which needs nothing)")


def head_option_names(cls) -> list[str] | None:
    """The keyword options a head class takes (None: it takes any)."""
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[3:]  # self, hidden_size, num_labels
        if any(p.kind is p.VAR_KEYWORD for p in params):
            continue  # passes its options on to a parent: look there
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return None


def check_head_options(cfg: TrainConfig) -> None:
    """Every key of ``cfg.head_options`` is an option of the head the run builds."""
    from stackft.modeling.heads import head_class
    from stackft.tasks import get_task
    from stackft.training.strategies import default_head

    task = get_task(cfg.task)
    name = cfg.head or default_head(cfg.strategy, task)
    pair_head = bool(getattr(head_class(name, None), "pair_input", False))  # the name is valid: validate()
    if pair_head and task.name != "pairs":
        raise ConfigError("head", name, f"a pair head reads two texts: it needs --task pairs, not {task.name}")
    if cfg.pair_mode == "siamese" and not pair_head:
        raise ConfigError("pair_mode", cfg.pair_mode, f"siamese pairs need a pair head (bimpm, bimpm-noctx, "
                                                      f"sim-transformer), not {name!r}; or use --pair-mode joint")
    try:
        cls = head_class(name, task.level)
    except ValueError as exc:  # e.g. a sequence head asked for a token task
        raise ConfigError("head", name, f"{exc}") from None
    names = head_option_names(cls)
    if names is None:
        return
    names = [n for n in names if n != "dropout"]  # set by --dropout
    for key in cfg.head_options:
        if key == "dropout":
            raise ConfigError("head_options", cfg.head_options, "set the head's dropout with --dropout, "
                                                                "not in the head options")
        if key not in names:
            raise ConfigError("head_options", cfg.head_options,
                              f"head {name!r} has no option {key!r}; {suggest(key, names)}"
                              f"its options: {', '.join(names) or 'none'}")


def check_data(cfg: TrainConfig) -> None:
    """The training and dev sources exist (files), or can be read (``datasets`` ids and files)."""
    from stackft.data.pipeline import check_source

    for source in (cfg.train_path, cfg.dev_path):
        if source is None:
            continue
        try:
            check_source(source)
        except ImportError as exc:
            raise MissingPackageError("train_path" if source == cfg.train_path else "dev_path", source,
                                      str(exc)) from None


def encoder_positions(encoder) -> int | None:
    """How many tokens ``encoder`` can take in one sequence (None: no limit known)."""
    config = getattr(getattr(encoder, "model", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    tok_limit = getattr(getattr(encoder, "tokenizer", None), "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 1_000_000:  # tokenizers say 1e30 when they do not know
        limit = tok_limit if limit is None else min(limit, tok_limit)
    return limit


def check_encoder(cfg: TrainConfig, encoder) -> None:
    """``cfg.max_length`` fits the encoder's position embeddings."""
    limit = encoder_positions(encoder)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError("max_length", cfg.max_length,
                          f"above the {limit} positions of the encoder ({encoder.name_or_path}); "
                          f"use {limit} or less")
