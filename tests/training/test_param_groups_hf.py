"""build_param_groups on a plain nn.Module whose ``encoder`` is a raw Hugging Face model.

Layer-wise lr from the parameter names (embeddings 0, ``encoder.layer.N.`` N+1, the rest L, L from
the config), no weight decay on biases and LayerNorm, each trainable parameter in one group, frozen
parameters left out; and the same numbering for other architectures' names.
"""

import math

import pytest
import torch
from torch import nn

from stackft.training.optim import build_param_groups

L = 3


class Wrapped(nn.Module):
    """Not a StackModel: a raw ``BertModel`` as ``encoder`` and a linear ``head``."""

    def __init__(self, encoder: nn.Module, hidden: int = 32):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, 5)


@pytest.fixture(scope="module")
def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=L, num_attention_heads=2, intermediate_size=37,
                     vocab_size=100)
    return BertModel(cfg)  # with its pooler: a parameter outside embeddings and layers


def _expected_layer(name: str) -> int:
    """The layer index the rule gives a parameter of the raw BertModel (names relative to it)."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("encoder.layer."):
        return int(name.split(".")[2]) + 1
    assert name.startswith("pooler."), name
    return L


def _by_param(groups):
    out = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a parameter appears in two groups"
            out[id(p)] = g
    return out


def test_raw_bert_layer_decay_lrs(bert):
    model = Wrapped(bert)
    head_lr, enc_lr, decay = 1e-3, 2e-5, 0.8
    groups = build_param_groups(model, head_lr=head_lr, encoder_lr=enc_lr, weight_decay=0.01, layer_decay=decay)
    where = _by_param(groups)
    assert set(where) == {id(p) for p in model.parameters() if p.requires_grad}
    layers_seen = set()
    for name, p in model.encoder.named_parameters():
        k = _expected_layer(name)
        g = where[id(p)]
        assert g["layer"] == k, name
        assert math.isclose(g["lr"], enc_lr * decay ** (L - k), rel_tol=1e-12), name
        assert g["name"].startswith(f"encoder.layer{k}."), name
        layers_seen.add(k)
    assert layers_seen == set(range(L + 1))  # embeddings, the three layers (pooler with the top one)
    for p in model.head.parameters():
        assert where[id(p)]["lr"] == head_lr and where[id(p)]["layer"] == -1
    # the lr strictly grows from the embeddings to the top layer
    lrs = {g["layer"]: g["lr"] for g in groups if g["layer"] >= 0}
    assert [lrs[k] for k in range(L + 1)] == sorted(lrs.values()) and len(set(lrs.values())) == L + 1
    assert lrs[L] == enc_lr


def test_raw_bert_no_decay_on_biases_and_layernorm(bert):
    model = Wrapped(bert)
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5, weight_decay=0.01, layer_decay=0.9)
    where = _by_param(groups)
    checked = {"bias": 0, "LayerNorm": 0, "decayed": 0}
    for name, p in model.named_parameters():
        wd = where[id(p)]["weight_decay"]
        if name.endswith(".bias"):
            assert wd == 0.0, name
            checked["bias"] += 1
        elif "LayerNorm" in name:
            assert wd == 0.0, name
            checked["LayerNorm"] += 1
        else:
            assert wd == 0.01, name
            checked["decayed"] += 1
        assert where[id(p)]["name"].endswith(".no_decay" if wd == 0 else ".decay")
    assert all(checked.values()), checked
    # decayed weights are in every encoder layer and the head
    assert "encoder.embeddings.word_embeddings.weight" in {n for n, p in model.named_parameters()
                                                           if where[id(p)]["weight_decay"] > 0}


def test_raw_bert_frozen_params_excluded(bert):
    model = Wrapped(bert)
    frozen = {n for n, _ in model.encoder.named_parameters() if n.startswith(("embeddings.", "encoder.layer.0."))}
    try:
        for n, p in model.encoder.named_parameters():
            p.requires_grad_(n not in frozen)
        groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5, layer_decay=0.5)
        where = _by_param(groups)
        assert set(where) == {id(p) for p in model.parameters() if p.requires_grad}
        assert not any(id(p) in where for n, p in model.encoder.named_parameters() if n in frozen)
        assert {g["layer"] for g in groups} == {-1, 2, 3}  # no empty groups for frozen layers
        assert all(g["params"] for g in groups)
        # the frozen layers do not shift the numbering of the others
        assert {g["layer"]: g["lr"] for g in groups if g["layer"] == 2}[2] == 2e-5 * 0.5
        # a wholly frozen encoder leaves the head alone
        model.encoder.requires_grad_(False)
        groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5)
        assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    finally:
        model.encoder.requires_grad_(True)


def test_raw_bert_groups_drive_an_optimizer(bert):
    """The groups go into the library's optimizer as they are and one step moves the encoder."""
    import copy

    from stackft.training.optim import make_optimizer

    model = Wrapped(copy.deepcopy(bert))
    opt = make_optimizer(build_param_groups(model, head_lr=1e-3, encoder_lr=1e-3, layer_decay=0.5), lr=1e-3)
    before = model.encoder.encoder.layer[2].output.dense.weight.detach().clone()
    ids = torch.randint(0, 100, (2, 7))
    out = model.head(model.encoder(input_ids=ids).last_hidden_state)
    out.sum().backward()
    opt.step()
    assert not torch.equal(before, model.encoder.encoder.layer[2].output.dense.weight)


class _Block(nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)


class _GPTLike(nn.Module):
    """GPT-2-style names: ``wte``/``wpe`` embeddings, ``h.N.`` layers, ``ln_f``; config ``n_layer``."""

    def __init__(self, n_layer=2, config_layers=True):
        super().__init__()
        self.wte = nn.Embedding(10, 4)
        self.wpe = nn.Embedding(8, 4)
        self.h = nn.ModuleList(_Block() for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(4)
        if config_layers:
            self.config = type("Cfg", (), {"n_layer": n_layer})()


class _BlockLike(nn.Module):
    """T5-/Llama-style names: ``block.N.`` / ``layers.N.``, no config: L is the largest index seen."""

    def __init__(self, key="block", n=3):
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        setattr(self, key, nn.ModuleList(_Block() for _ in range(n)))
        self.final_norm = nn.LayerNorm(4)


@pytest.mark.parametrize("encoder, expected, top", [
    (_GPTLike(), {"wte.weight": 0, "wpe.weight": 0, "h.0.attn.weight": 1, "h.1.ln.bias": 2, "ln_f.weight": 2}, 2),
    (_GPTLike(config_layers=False), {"h.1.attn.weight": 2, "ln_f.bias": 2}, 2),
    (_BlockLike("block"), {"embed_tokens.weight": 0, "block.0.attn.bias": 1, "block.2.ln.weight": 3,
                           "final_norm.weight": 3}, 3),
    (_BlockLike("layers", 2), {"embed_tokens.weight": 0, "layers.1.attn.weight": 2, "final_norm.bias": 2}, 2),
])
def test_layer_numbering_of_other_architectures(encoder, expected, top):
    model = Wrapped(encoder, hidden=4)
    groups = build_param_groups(model, head_lr=1.0, encoder_lr=1.0, layer_decay=0.5)
    where = _by_param(groups)
    params = dict(model.encoder.named_parameters())
    for name, k in expected.items():
        g = where[id(params[name])]
        assert g["layer"] == k, name
        assert g["lr"] == 0.5 ** (top - k), name
    assert max(g["layer"] for g in groups) == top
    assert set(where) == {id(p) for p in model.parameters()}


def test_config_depth_wins_over_names():
    """L comes from the config when it says: a 4-layer config with 2 blocks present puts the rest at 4."""
    enc = _GPTLike(n_layer=2)
    enc.config.n_layer = 4
    groups = build_param_groups(Wrapped(enc, hidden=4), head_lr=1.0, encoder_lr=1.0, layer_decay=0.5)
    where = _by_param(groups)
    assert where[id(enc.ln_f.weight)]["layer"] == 4
    assert where[id(enc.h[1].attn.weight)]["lr"] == 0.5 ** (4 - 2)


def test_model_without_encoder_is_all_head():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = build_param_groups(model, head_lr=0.1, encoder_lr=0.0)
    assert {g["name"] for g in groups} == {"head.decay", "head.no_decay"}
    assert all(g["lr"] == 0.1 for g in groups)
