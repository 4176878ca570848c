"""Checkpoints: model weights as safetensors, config and metrics as JSON, trainer state for resume.

A checkpoint is a folder ``{model.safetensors, meta.json[, state.pt]}`` (names: :mod:`stackft.run_dir`) written atomically (built
in a temporary sibling, then renamed), so a crash never leaves a half-written checkpoint behind.
A run folder also holds ``encoder/`` (the encoder's config and tokenizer) so a checkpoint can be
loaded without the original encoder files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from stackft.run_dir import ENCODER_DIR, META_FILE, STATE_FILE, WEIGHTS_FILE


def _atomic_dir(target: Path, write) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_checkpoint(path, model: torch.nn.Module, meta: dict, state: dict | None = None) -> Path:
    """Write ``model.safetensors``, ``meta.json`` and (for resume) ``state.pt`` into ``path``."""

    def write(tmp: Path):
        save_model(model, str(tmp / WEIGHTS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if state is not None:
            torch.save(state, tmp / STATE_FILE)

    return _atomic_dir(Path(path), write)


def load_weights(path, model: torch.nn.Module) -> None:
    """Load ``path/model.safetensors`` into ``model`` (strict)."""
    f = Path(path) / WEIGHTS_FILE
    if not f.exists():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {path}")
    missing, unexpected = load_model(model, str(f), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def has_weights(path) -> bool:
    """Whether the checkpoint folder ``path`` holds model weights."""
    return (Path(path) / WEIGHTS_FILE).exists()


def read_meta(path) -> dict:
    f = Path(path) / META_FILE
    if not f.exists():
        raise FileNotFoundError(f"{path} is not a stackft checkpoint (no {META_FILE})")
    return json.loads(f.read_text())


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_encoder_files(encoder, run_dir) -> Path:
    """Save the encoder's config and tokenizer (no weights) to ``run_dir/encoder``."""
    def write(tmp: Path):
        encoder.model.config.save_pretrained(tmp)
        if encoder.tokenizer is not None:
            encoder.tokenizer.save_pretrained(tmp)

    return _atomic_dir(Path(run_dir) / ENCODER_DIR, write)
