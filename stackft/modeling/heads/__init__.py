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


def _factory(name: str, level: str | None):
    key = name.strip().lower().replace("_", "-")
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
    "HEADS", "build_head", "head_class", "head_level", "head_pair_input", "kaiming_init",
    "FCTokenHead", "FCSequenceHead", "LinearTokenHead", "LinearSequenceHead", "BiLSTMTagger", "HighwayLSTMClassifier", "DenseNetCNNClassifier",
    "BiMPMHead", "BiMPMNoContextHead", "MultiPerspectiveMatching", "SimTransformerHead",
]
