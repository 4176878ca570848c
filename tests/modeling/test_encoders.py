"""stackft.encoders: loading (packaged default, local folders), freezing, layer numbering, layer mixing,
fingerprints."""

import copy

import pytest
import torch

from stackft.modeling.encoders import Encoder, default_encoder_path, load_encoder, resolve_encoder, tiny_random_encoder


@pytest.fixture(scope="module")
def default_encoder():
    return load_encoder()  # the packaged all-MiniLM-L6-v2: offline, a few seconds


@pytest.fixture(scope="module")
def enc32(make_tiny_encoder):
    """The encoder saved in ``tiny_encoder_dir`` (hidden 32, 2 layers, seed 0), built afresh for this module."""
    return make_tiny_encoder()


def _batch(tokenizer, texts=("EU rejects German call", "Peter Blackburn went to Brussels today .")):
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")


# -- loading --------------------------------------------------------------------------------

def test_default_encoder_is_packaged_minilm(default_encoder):
    enc = default_encoder
    assert enc.hidden_size == 384 and enc.num_layers == 6
    assert enc.model.config.model_type == "bert"
    assert resolve_encoder(None) == resolve_encoder("minilm") == default_encoder_path()
    ids, mask, tt = _batch(enc.tokenizer)
    enc.eval()
    with torch.no_grad():
        out = enc(ids, mask, tt)
    assert out.shape == (2, ids.shape[1], 384)
    assert torch.isfinite(out).all()
    # pretrained, not random: the two sentences get clearly different [CLS] vectors
    assert not torch.allclose(out[0, 0], out[1, 0], atol=1e-3)


def test_local_folder_loads_the_saved_weights(enc32, tiny_encoder_dir):
    enc = load_encoder(str(tiny_encoder_dir))
    assert isinstance(enc, Encoder)
    assert enc.hidden_size == 32 and enc.num_layers == 2
    assert enc.name_or_path == str(tiny_encoder_dir)
    saved = enc32.model.state_dict()
    loaded = enc.model.state_dict()
    assert set(loaded) <= set(saved)
    for name, t in loaded.items():
        assert torch.equal(t, saved[name]), name
    assert enc.tokenizer.get_vocab() == enc32.tokenizer.get_vocab()
    ids, mask, tt = _batch(enc.tokenizer)
    enc.eval(), enc32.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask, tt), enc32(ids, mask, tt))
    assert enc.fingerprint() == enc32.fingerprint()


def test_load_encoder_dropout_override(tiny_encoder_dir):
    enc = load_encoder(str(tiny_encoder_dir), dropout=0.0)
    assert enc.model.config.hidden_dropout_prob == 0.0
    assert enc.model.config.attention_probs_dropout_prob == 0.0
    enc.train()
    ids, mask, tt = _batch(enc.tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask, tt), enc(ids, mask, tt))  # no dropout left in train mode


def test_missing_folder_is_a_clear_file_not_found(tmp_path):
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(FileNotFoundError, match="no-such-encoder"):
        load_encoder(str(missing))
    with pytest.raises(FileNotFoundError):
        load_encoder("./definitely/not/here")


# -- freezing -------------------------------------------------------------------------------

def test_freeze_unfreeze(enc32):
    enc = copy.deepcopy(enc32)
    assert not enc.frozen and all(p.requires_grad for p in enc.parameters())
    assert enc.freeze() is enc
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    ids, mask, tt = _batch(enc.tokenizer)
    assert not enc(ids, mask, tt).requires_grad
    assert enc.unfreeze() is enc
    assert not enc.frozen and all(p.requires_grad for p in enc.parameters())
    out = enc(ids, mask, tt)
    out.sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is not None


# -- layer structure ------------------------------------------------------------------------

def test_layer_index_numbering(enc32):
    enc = enc32
    L = enc.num_layers
    assert enc.layer_index("model.embeddings.word_embeddings.weight") == 0
    assert enc.layer_index("model.embeddings.LayerNorm.bias") == 0
    assert enc.layer_index("model.encoder.layer.0.attention.self.query.weight") == 1
    assert enc.layer_index("model.encoder.layer.1.output.LayerNorm.weight") == 2
    assert enc.layer_index("model.encoder.layer.11.output.dense.bias") == 12  # multi-digit
    assert enc.layer_index("model.pooler.dense.weight") == L  # anything else: the top
    # other architectures' naming
    assert enc.layer_index("transformer.h.3.attn.c_attn.weight") == 4
    assert enc.layer_index("encoder.layers.5.fc1.weight") == 6
    groups = enc.layer_groups()
    assert list(groups) == [0, 1, 2]
    assert sum(len(v) for v in groups.values()) == len(list(enc.parameters()))
    assert all(".layer.0." in n for n, _ in groups[1]) and all(".layer.1." in n for n, _ in groups[2])
    assert all("embeddings" in n for n, _ in groups[0])


def test_layers_average_hidden_states(enc32):
    ids, mask, tt = _batch(enc32.tokenizer)
    model = enc32.model.eval()
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True).hidden_states
        assert len(hs) == enc32.num_layers + 1
        last = Encoder(model, enc32.tokenizer)(ids, mask, tt)
        top2 = Encoder(model, enc32.tokenizer, layers=(-2, -1))(ids, mask, tt)
        emb_and_first = Encoder(model, enc32.tokenizer, layers=(0, 1))(ids, mask, tt)
    torch.testing.assert_close(last, hs[-1])
    torch.testing.assert_close(top2, (hs[-2] + hs[-1]) / 2)
    torch.testing.assert_close(emb_and_first, (hs[0] + hs[1]) / 2)
    assert not torch.allclose(top2, last)


def test_layers_out_of_range_raise(enc32):
    with pytest.raises(ValueError, match="out of range"):
        Encoder(enc32.model, enc32.tokenizer, layers=(3,))
    with pytest.raises(ValueError, match="out of range"):
        Encoder(enc32.model, enc32.tokenizer, layers=(-4,))
    Encoder(enc32.model, enc32.tokenizer, layers=(-3, 2))  # embeddings .. top: fine


def test_token_type_ids_reach_the_model(enc32):
    ids, mask, _ = _batch(enc32.tokenizer)
    enc32.eval()
    with torch.no_grad():
        a = enc32(ids, mask, torch.zeros_like(ids))
        b = enc32(ids, mask, torch.ones_like(ids))
    assert not torch.allclose(a, b)


# -- fingerprint ----------------------------------------------------------------------------

def test_fingerprint_tracks_weights_and_layers(enc32):
    enc = copy.deepcopy(enc32)
    fp = enc.fingerprint()
    assert fp == copy.deepcopy(enc32).fingerprint()  # deterministic
    assert len(fp) == 64
    w = enc.model.encoder.layer[1].output.dense.weight
    with torch.no_grad():
        old = w[3, 5].item()
        w[3, 5] += 1e-3
    assert enc.fingerprint() != fp
    with torch.no_grad():
        w[3, 5] = old
    assert enc.fingerprint() == fp
    assert Encoder(enc.model, enc.tokenizer, layers=(-2, -1)).fingerprint() != fp
    other = tiny_random_encoder(hidden_size=32, num_layers=2, seed=1, tokenizer=enc32.tokenizer)
    assert other.fingerprint() != fp


def test_fingerprint_covers_scalar_buffers(enc32):
    enc = copy.deepcopy(enc32)
    enc.model.register_buffer("scale", torch.tensor(2.0))  # 0-d entries exist in some models' state dicts
    fp = enc.fingerprint()
    enc.model.scale.fill_(3.0)
    assert enc.fingerprint() != fp
