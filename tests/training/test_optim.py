"""stackft.optim: parameter groups (no-decay rule, layer-wise lr decay), BertAdam, schedules, clipping.

Spec: ../shared/spec/methods.md §1.3 (BERT-Adam, no-decay names), §1.3.1 (schedules, clipping), §5 (LLRD).
"""

import math

import pytest
import torch
from torch import nn

from stackft.modeling.encoders import tiny_random_encoder
from stackft.modeling.heads import build_head
from stackft.modeling.model import StackModel
from stackft.training.optim import (
    SCHEDULES,
    BertAdam,
    build_param_groups,
    clip_gradients,
    make_optimizer,
    make_scheduler,
    schedule_factor,
)

NUM_LAYERS = 2


@pytest.fixture(scope="module")
def encoder():
    return tiny_random_encoder(hidden_size=16, num_layers=NUM_LAYERS)


class NormHead(nn.Module):
    """A head with every kind of parameter the no-decay rule must tell apart."""

    level = "token"
    pair_input = False

    def __init__(self, hidden):
        super().__init__()
        self.proj = nn.Linear(hidden, 8)
        self.norm = nn.LayerNorm(8)  # a norm whose name does not say "LayerNorm"
        self.lstm = nn.LSTM(8, 4, batch_first=True)  # biases named bias_ih_l0 / bias_hh_l0
        self.out = nn.Linear(4, 3, bias=False)
        self.frozen = nn.Parameter(torch.zeros(3), requires_grad=False)


def _model(encoder, head=None):
    import copy

    return StackModel(copy.deepcopy(encoder), head if head is not None else NormHead(encoder.hidden_size))


def _names_by_id(model):
    return {id(p): n for n, p in model.named_parameters()}


def _expect_no_decay(model):
    """Parameter names that must not be decayed: biases and every parameter of a normalisation layer."""
    out = set()
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if "bias" in p_name or isinstance(mod, nn.LayerNorm):
                out.add(full)
    return out


# -- build_param_groups ---------------------------------------------------------------------

def test_every_trainable_param_in_exactly_one_group(encoder):
    model = _model(encoder)
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter appears in two groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert id(model.head.frozen) not in set(ids)
    # every group is usable by torch optimizers as is (the key is weight_decay, not weight_decay_rate)
    for g in groups:
        assert set(g) >= {"params", "lr", "weight_decay"} and "weight_decay_rate" not in g
        assert g["params"]


def test_frozen_encoder_is_excluded(encoder):
    model = _model(encoder)
    model.freeze_encoder()
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5)
    ids = {id(p) for g in groups for p in g["params"]}
    assert ids == {id(p) for p in model.head.parameters() if p.requires_grad}
    assert all(g["lr"] == 1e-3 for g in groups)
    assert not any(id(p) in ids for p in model.encoder.parameters())


def test_no_weight_decay_exactly_on_biases_and_norms(encoder):
    model = _model(encoder)
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5, weight_decay=0.01)
    names = _names_by_id(model)
    no_decay = _expect_no_decay(model)
    # the expectation is not vacuous: HF LayerNorm weights, head norm, LSTM biases are all in it
    assert "encoder.model.embeddings.LayerNorm.weight" in no_decay
    assert "encoder.model.encoder.layer.0.attention.output.LayerNorm.weight" in no_decay
    assert {"head.norm.weight", "head.norm.bias", "head.lstm.bias_ih_l0", "head.proj.bias"} <= no_decay
    seen = 0
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            expected = 0.0 if name in no_decay else 0.01
            assert g["weight_decay"] == expected, f"{name}: weight_decay {g['weight_decay']}, expected {expected}"
            seen += 1
    assert seen == sum(1 for p in model.parameters() if p.requires_grad)
    # decayed parameters exist in both the encoder and the head
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "encoder.model.encoder.layer.1.attention.self.query.weight" in decayed
    assert {"head.proj.weight", "head.lstm.weight_ih_l0", "head.lstm.weight_hh_l0", "head.out.weight"} <= decayed
    assert "encoder.model.embeddings.word_embeddings.weight" in decayed


class T5LayerNorm(nn.Module):
    """Stands in for HF's own norm classes (T5LayerNorm, LlamaRMSNorm): a plain ``weight``."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))


class OtherNormsHead(nn.Module):
    level = "token"
    pair_input = False

    def __init__(self, hidden):
        super().__init__()
        self.rms = nn.RMSNorm(hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.custom = T5LayerNorm(hidden)
        self.out = nn.Linear(hidden, 3)


def test_no_weight_decay_on_other_norm_layers(encoder):
    model = _model(encoder, OtherNormsHead(encoder.hidden_size))
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=2e-5, weight_decay=0.01)
    names = _names_by_id(model)
    wd = {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    for name in ("head.rms.weight", "head.bn.weight", "head.bn.bias", "head.custom.weight", "head.out.bias"):
        assert wd[name] == 0.0, name
    assert wd["head.out.weight"] == 0.01


@pytest.mark.parametrize("decay", [1.0, 0.5, 0.8])
def test_layerwise_lr_decay(encoder, decay):
    model = _model(encoder)
    enc_lr, head_lr = 1e-4, 3e-3
    groups = build_param_groups(model, head_lr=head_lr, encoder_lr=enc_lr, layer_decay=decay)
    names = _names_by_id(model)
    L = NUM_LAYERS
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    for name, lr in lr_of.items():
        if name.startswith("head."):
            assert lr == head_lr, name
        elif ".embeddings." in name:
            assert lr == pytest.approx(enc_lr * decay**L, rel=1e-12), name
        else:
            k = int(name.split(".layer.")[1].split(".")[0]) + 1  # transformer layer i is layer k = i + 1
            assert lr == pytest.approx(enc_lr * decay ** (L - k), rel=1e-12), name
    # top layer gets exactly encoder_lr; embeddings the smallest lr
    top = [lr for n, lr in lr_of.items() if f".layer.{L - 1}." in n]
    assert top and all(lr == pytest.approx(enc_lr) for lr in top)
    emb = lr_of["encoder.model.embeddings.word_embeddings.weight"]
    assert emb == pytest.approx(enc_lr * decay**L)
    if decay < 1:
        assert emb < min(lr for n, lr in lr_of.items() if ".layer." in n)


def test_layer_decay_group_metadata(encoder):
    model = _model(encoder, build_head("fc", encoder.hidden_size, 3, level="token"))
    groups = build_param_groups(model, head_lr=1e-3, encoder_lr=1e-4, layer_decay=0.5)
    layers = {g["layer"] for g in groups}
    assert layers == {-1, 0, 1, 2}  # head, embeddings, two transformer layers
    for g in groups:
        if g["layer"] >= 0:
            assert g["lr"] == pytest.approx(1e-4 * 0.5 ** (NUM_LAYERS - g["layer"]))


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_layer_decay_raises(encoder, bad):
    model = _model(encoder)
    with pytest.raises(ValueError, match="layer_decay"):
        build_param_groups(model, head_lr=1e-3, encoder_lr=1e-4, layer_decay=bad)


# -- BertAdam -------------------------------------------------------------------------------

GRADS = [
    torch.tensor([0.5, -1.0, 2.0, 0.0, 1e-3], dtype=torch.float64),
    torch.tensor([0.1, 0.3, -2.0, 0.7, -1e-3], dtype=torch.float64),
    torch.tensor([-0.4, 0.2, 1.0, -0.7, 5.0], dtype=torch.float64),
    torch.tensor([0.0, -0.1, 0.5, 0.2, 0.3], dtype=torch.float64),
]
THETA0 = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.25], dtype=torch.float64)


def _reference_bert_adam(theta, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-6):
    """methods.md §1.3, written out element by element in plain python floats."""
    theta = [float(x) for x in theta]
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for g in grads:
        for i, gi in enumerate(g.tolist()):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            u = m[i] / (math.sqrt(v[i]) + eps)  # no bias correction
            u += wd * theta[i]  # decoupled decay inside the lr product
            theta[i] -= lr * u
    return torch.tensor(theta, dtype=torch.float64)


def _run(opt_cls, grads, **kw):
    p = nn.Parameter(THETA0.clone())
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("wd", [0.0, 0.01, 0.3])
def test_bert_adam_matches_spec_formula(wd):
    got = _run(BertAdam, GRADS, lr=0.05, weight_decay=wd, bias_correction=False)
    want = _reference_bert_adam(THETA0, GRADS, lr=0.05, wd=wd)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and this differs from a bias-corrected step, so the flag is not a no-op
    corrected = _run(BertAdam, GRADS, lr=0.05, weight_decay=wd, bias_correction=True)
    assert not torch.allclose(got, corrected, atol=1e-4)


def test_bert_adam_defaults_are_berts():
    opt = BertAdam([nn.Parameter(torch.zeros(1))])
    d = opt.defaults
    assert d["betas"] == (0.9, 0.999) and d["eps"] == 1e-6 and d["weight_decay"] == 0.01
    assert d["bias_correction"] is False


def test_bert_adam_bias_corrected_matches_torch_adamw():
    got = _run(BertAdam, GRADS, lr=0.05, weight_decay=0.0, bias_correction=True)
    want = _run(torch.optim.AdamW, GRADS, lr=0.05, eps=1e-6, weight_decay=0.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bert_adam_bias_corrected_matches_torch_adamw_with_decay():
    # torch's AdamW decays theta before its step, i.e. lr * wd * theta_old: the same decoupled decay
    got = _run(BertAdam, GRADS, lr=0.05, weight_decay=0.1, bias_correction=True)
    want = _run(torch.optim.AdamW, GRADS, lr=0.05, eps=1e-6, weight_decay=0.1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_weight_decay_is_decoupled():
    lr, wd = 0.05, 0.1
    # zero gradient: an L2 penalty added to the gradient would move theta by ~lr per step
    # (Adam normalises it); decoupled decay shrinks it by exactly (1 - lr*wd)
    p = nn.Parameter(THETA0.clone())
    opt = BertAdam([p], lr=lr, weight_decay=wd)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), THETA0 * (1 - lr * wd), rtol=1e-12, atol=1e-12)
    # with gradients: the decay term does not pass through the moments, so it is additive on a single step
    with_wd = _run(BertAdam, GRADS[:1], lr=lr, weight_decay=wd)
    without = _run(BertAdam, GRADS[:1], lr=lr, weight_decay=0.0)
    torch.testing.assert_close(without - with_wd, lr * wd * THETA0, rtol=1e-10, atol=1e-12)


def test_bert_adam_uses_group_settings_and_skips_params_without_grad():
    a, b, c = (nn.Parameter(THETA0.clone()) for _ in range(3))
    opt = BertAdam([{"params": [a], "lr": 0.1, "weight_decay": 0.0},
                    {"params": [b, c], "lr": 0.01, "weight_decay": 0.5}], lr=1.0)
    a.grad, b.grad = GRADS[0].clone(), GRADS[0].clone()
    opt.step()
    torch.testing.assert_close(a.detach(), _reference_bert_adam(THETA0, GRADS[:1], lr=0.1, wd=0.0))
    torch.testing.assert_close(b.detach(), _reference_bert_adam(THETA0, GRADS[:1], lr=0.01, wd=0.5))
    assert torch.equal(c.detach(), THETA0)  # no grad: untouched, not even decayed
    assert c not in opt.state or not opt.state[c]


def test_make_optimizer_kinds():
    p = [nn.Parameter(torch.zeros(2))]
    assert make_optimizer([{"params": p}], kind="bert_adam").defaults["bias_correction"] is False
    assert make_optimizer([{"params": p}], kind="adamw").defaults["bias_correction"] is True
    assert isinstance(make_optimizer([{"params": p}], kind="torch_adamw"), torch.optim.AdamW)
    with pytest.raises(ValueError):
        make_optimizer([{"params": p}], kind="sgd-ish")


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(eps=-1e-6), dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1))])
def test_bert_adam_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        BertAdam([nn.Parameter(torch.zeros(1))], **bad)


# -- schedules ------------------------------------------------------------------------------

T, W = 20, 5


def _curve(kind, total=T, warmup=W):
    return [schedule_factor(kind, s, total, warmup) for s in range(total)]


@pytest.mark.parametrize("kind", SCHEDULES)
def test_warmup_ramps_linearly_to_peak(kind):
    c = _curve(kind)
    assert c[:W] == pytest.approx([(s + 1) / W for s in range(W)])
    assert c[0] > 0  # no step runs at lr 0
    assert c[W - 1] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_never_negative_even_past_the_end(kind):
    for total, warmup in [(T, W), (1, 0), (7, 0), (10, 10), (3, 1)]:
        for s in range(total + 5):
            assert schedule_factor(kind, s, total, warmup) >= 0.0, (kind, s, total, warmup)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_positive_through_the_last_step(kind):
    assert all(f > 0 for f in _curve(kind))


def test_bert_tf_shape():
    c = _curve("bert_tf")
    # polynomial decay from step 0: after warmup the lr steps down to 1 - W/T, then falls linearly
    for s in range(W, T):
        assert c[s] == pytest.approx(1.0 - s / T)
    assert c[W] == pytest.approx(1.0 - W / T) and c[W] < c[W - 1]
    assert c[-1] == pytest.approx(1.0 / T)


def test_linear_hf_shape():
    c = _curve("linear_hf")
    for s in range(W, T):
        assert c[s] == pytest.approx((T - s) / (T - W))
    assert c[W] == pytest.approx(1.0)  # continuous at the end of warmup
    diffs = [c[s] - c[s + 1] for s in range(W, T - 1)]
    assert diffs == pytest.approx([diffs[0]] * len(diffs))  # a straight line


def test_cosine_shape():
    c = _curve("cosine")
    assert c[W] == pytest.approx(1.0)
    after = c[W:]
    assert all(a >= b for a, b in zip(after, after[1:]))
    mid = W + (T - W) // 2 if (T - W) % 2 == 0 else None
    if mid is not None:
        assert c[mid] == pytest.approx(0.5)
    for s in range(W, T):
        assert c[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - W) / (T - W))))


def test_constant_shape():
    assert _curve("constant")[W:] == [1.0] * (T - W)
    assert _curve("constant", warmup=0) == [1.0] * T


@pytest.mark.parametrize("kind", SCHEDULES)
def test_make_scheduler_drives_optimizer_lr(kind):
    p = nn.Parameter(torch.zeros(2))
    opt = BertAdam([{"params": [p], "lr": 0.5}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1}], lr=1.0)
    sched = make_scheduler(opt, kind, total_steps=T, warmup_proportion=0.25)  # 5 warmup steps
    seen = []
    for _ in range(T):
        seen.append([g["lr"] for g in opt.param_groups])  # the lr optimizer step s runs at
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    want = _curve(kind)
    assert [s[0] for s in seen] == pytest.approx([0.5 * f for f in want])
    assert [s[1] for s in seen] == pytest.approx([0.1 * f for f in want])  # each group keeps its own peak


def test_unknown_schedule_raises():
    opt = BertAdam([nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler(opt, "triangular", total_steps=10)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_factor("triangular", 8, 10, 2)
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_factor("triangular", 0, 10, 2)  # also during warmup


# -- clipping -------------------------------------------------------------------------------

def _params_with_grads():
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(2))
    c = nn.Parameter(torch.zeros(3))  # no grad: ignored
    a.grad = torch.tensor([3.0, 4.0])  # norm 5
    b.grad = torch.tensor([0.0, 0.5])  # norm 0.5
    return a, b, c


def test_clip_global_norm():
    a, b, c = _params_with_grads()
    total = math.sqrt(25 + 0.25)
    norm = clip_gradients([a, b, c], 1.0, "global")
    assert norm == pytest.approx(total, rel=1e-6)
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]) / total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.5]) / total, rtol=1e-5, atol=1e-6)
    new = math.sqrt(a.grad.norm() ** 2 + b.grad.norm() ** 2)
    assert new == pytest.approx(1.0, rel=1e-5)
    assert c.grad is None


def test_clip_per_tensor():
    a, b, _ = _params_with_grads()
    norm = clip_gradients([a, b], 1.0, "per_tensor")
    assert norm == pytest.approx(math.sqrt(25 + 0.25), rel=1e-6)  # the global norm before clipping
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8]), rtol=1e-5, atol=1e-6)  # clipped to norm 1 alone
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.5]))  # under the limit: untouched


def test_clip_below_limit_is_identity_and_bad_mode_raises():
    a, b, _ = _params_with_grads()
    clip_gradients([a, b], 100.0, "global")
    assert torch.equal(a.grad, torch.tensor([3.0, 4.0]))
    assert clip_gradients([nn.Parameter(torch.zeros(1))], 1.0) == 0.0  # nothing has a gradient
    with pytest.raises(ValueError, match="clip mode"):
        clip_gradients([a], 1.0, "per_layer")
