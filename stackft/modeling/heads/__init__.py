"""Task heads: ``Head(hidden_size, num_labels, **options)`` with ``level`` and ``pair_input`` class attributes.

``forward(features) -> logits``: single features ``{"hidden" [B,T,H], "mask" [B,T] bool}`` or siamese
``{"hidden_a", "mask_a", "hidden_b", "mask_b"}``; logits ``[B,T,C]`` (token) or ``[B,C]`` (sequence).
See docs/design.md. Build by name with :func:`build_head`.
"""

from torch import nn

from stackft.modeling.heads.bilstm import BiLSTMTagger
from stackft.modeling.heads.bimpm import BiMPMHead, BiMPMNoContextHead, MultiPerspectiveMatching
from stackft.modeling.heads.densenet import DenseNetCNNClassifier
from stackft.modeling.heads.fc import FCSequenceHead, FCTokenHead
from stackft.modeling.heads.highway_lstm import HighwayLSTMClassifier
from stackft.modeling.heads.init import kaiming_init
from stackft.modeling.heads.linear import LinearSequenceHead, LinearTokenHead
from stackft.modeling.heads.sim_transformer import SimTransformerHead

LEVELS = ("token", "sequence")

# "fc" and "linear" (the LP-FT probe) resolve to their token or sequence class by level; see build_head.
_BY_LEVEL = {
    "fc": {"token": FCTokenHead, "sequence": FCSequenceHead},
    "linear": {"token": LinearTokenHead, "sequence": LinearSequenceHead},
}
HEADS = {
    "fc": FCSequenceHead,
    "linear": LinearSequenceHead,
    "bilstm": BiLSTMTagger,
    "highway-lstm": HighwayLSTMClassifier,
    "densenet": DenseNetCNNClassifier,
    "bimpm": BiMPMHead,
    "bimpm-noctx": BiMPMNoContextHead,
    "sim-transformer": SimTransformerHead,
}


# Revisions of the heads' default options. A run records the revision it was built with
# (TrainConfig.head_defaults; a config.json without it reads as 1), and build_model applies the
# options below under the run's own head_options, so an old run's head is rebuilt as it trained.
HEAD_DEFAULTS = 3
_DEFAULTS_BEFORE = {
    # 1 -> 2: DenseNet's width from the encoder's (384 for MiniLM) to 128 channels, chosen on dev
    # (docs/methods.md, DenseNet width)
    1: {"densenet": {"channels": None}},  # None: the encoder's width
    # 2 -> 3: Sim-Transformer batch-normalises its matching features (without it, it collapsed to the
    # majority class on real encoder features) and is half as wide (d_model 128, FF 512), chosen on dev
    # (docs/methods.md, section 6)
    2: {"sim-transformer": {"match_norm": "none", "d_model": 256, "dim_feedforward": 1024}},
}


def _key(name: str) -> str:
    """A head name as :data:`HEADS` spells it (``_`` and ``-`` interchangeable, any case)."""
    return name.strip().lower().replace("_", "-")


def revision_options(name: str, revision: int) -> dict:
    """Options that make head ``name`` build as revision ``revision`` of the defaults built it."""
    if not 1 <= revision <= HEAD_DEFAULTS:
        raise ValueError(f"head_defaults must be 1 to {HEAD_DEFAULTS}, got {revision}")
    key = _key(name)
    out: dict = {}
    for r in range(HEAD_DEFAULTS - 1, revision - 1, -1):  # newest change first, the oldest wins
        out.update(_DEFAULTS_BEFORE.get(r, {}).get(key, {}))
    return out


def _factory(name: str, level: str | None):
    key = _key(name)
    if key not in HEADS:
        raise ValueError(f"unknown head {name!r}; known heads: {', '.join(HEADS)}")
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if key in _BY_LEVEL:
        return _BY_LEVEL[key][level or "sequence"]
    factory = HEADS[key]
    if level is not None and level != factory.level:
        raise ValueError(f"head {name!r} is {factory.level}-level, but level={level!r} was requested")
    return factory


def build_head(name: str, hidden_size: int, num_labels: int, *, level: str | None = None, **options) -> nn.Module:
    """Construct head ``name`` (a key of :data:`HEADS`; ``_`` and ``-`` are interchangeable).

    ``level`` picks the variant for "fc" and "linear" (None means "sequence"); for the other heads it is
    only checked against the head's own level. Unknown names or mismatched levels raise ValueError.
    """
    return _factory(name, level)(hidden_size, num_labels, **options)


def head_class(name: str, level: str | None = None) -> type:
    """The class ``build_head(name, level=level)`` would construct (ValueError for an unknown name)."""
    return _factory(name, level)


def head_level(name: str, level: str | None = None) -> str:
    """The level ("token" or "sequence") of the head ``build_head(name, level=level)`` would build."""
    return _factory(name, level).level


def head_pair_input(name: str) -> bool:
    """Whether head ``name`` consumes siamese pair features."""
    return _factory(name, None).pair_input


__all__ = [
    "HEADS", "HEAD_DEFAULTS", "build_head", "head_class", "head_level", "head_pair_input", "kaiming_init",
    "revision_options",
    "FCTokenHead", "FCSequenceHead", "LinearTokenHead", "LinearSequenceHead", "BiLSTMTagger", "HighwayLSTMClassifier", "DenseNetCNNClassifier",
    "BiMPMHead", "BiMPMNoContextHead", "MultiPerspectiveMatching", "SimTransformerHead",
]
