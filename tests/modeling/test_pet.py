"""PET for EH-FT phase 1 (stackft.pet) and the eh-ft strategy end to end on a tiny encoder."""

import pytest
import torch
from helpers import write_keyword_csv
from safetensors.torch import load_file

pytest.importorskip("peft")

from stackft.config import TrainConfig  # noqa: E402
from stackft.modeling import pet  # noqa: E402


def fresh_encoder(tokenizer):
    from stackft.modeling.encoders import tiny_random_encoder

    return tiny_random_encoder(tokenizer=tokenizer)  # same seed: same pretrained weights every time


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return ids, mask


def test_lora_attach_trains_only_lora_and_keeps_forward(tokenizer):
    enc = fresh_encoder(tokenizer)
    ids, mask = _batch()
    with torch.no_grad():
        before = enc.eval()(ids, mask)
    expected = pet.count_lora_parameters(enc.model, r=8)
    assert expected == 2 * 2 * 8 * (32 + 32)  # 2 layers x {query, value} x r (in + out)
    pet.attach(enc, "lora")
    assert pet.is_attached(enc) and pet.attached_method(enc) == "lora"
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    assert sum(p.numel() for _, p in trainable) == expected
    assert {id(p) for p in pet.pet_parameters(enc)} == {id(p) for _, p in trainable}
    assert all(not p.requires_grad for n, p in enc.named_parameters() if "lora_" not in n)
    # B starts at zero: the adapted encoder computes what the encoder computed
    with torch.no_grad():
        assert torch.allclose(enc(ids, mask), before, atol=1e-6)
    enc.train()
    out = enc(ids, mask, torch.zeros_like(ids))
    assert out.shape == before.shape
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for n, p in enc.named_parameters() if "lora_" not in n)
    # idempotent
    pet.attach(enc, "lora")
    assert sum(p.numel() for p in pet.pet_parameters(enc)) == expected
    assert type(enc.model).__name__ == "PeftModel" and type(enc.model.base_model.model).__name__ == "BertModel"
    with pytest.raises(ValueError, match="already attached"):
        pet.attach(enc, "bitfit")


def test_lora_detach_restores_original_keys_without_merging(tokenizer):
    enc = fresh_encoder(tokenizer)
    original = {k: v.clone() for k, v in enc.model.state_dict().items()}
    pet.attach(enc, "lora")
    with torch.no_grad():
        for p in pet.pet_parameters(enc):
            p.add_(0.5)  # a trained adapter: merging it would change the query/value weights
    enc.freeze()  # what the trainer does before attaching again on resume
    pet.attach(enc, "lora")
    assert all(p.requires_grad for p in pet.pet_parameters(enc))
    pet.detach(enc, "lora")
    assert not pet.is_attached(enc) and pet.pet_parameters(enc) == []
    state = enc.model.state_dict()
    assert list(state) == list(original)
    assert not any("lora" in k for k in state)
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert type(enc.model).__name__ == "BertModel"
    assert not any(p.requires_grad for p in enc.parameters())
    pet.detach(enc)  # nothing attached: no-op


def test_lora_attach_leaves_global_rng_alone_and_is_seeded(tokenizer):
    a, b = fresh_encoder(tokenizer), fresh_encoder(tokenizer)
    state = torch.get_rng_state()
    pet.attach(a, "lora")
    assert torch.equal(torch.get_rng_state(), state)  # drew nothing from the global RNG
    pet.attach(b, "lora", seed=1)
    la = [p for p in pet.pet_parameters(a)]
    lb = [p for p in pet.pet_parameters(b)]
    assert not torch.equal(la[0], lb[0])  # lora_A drawn under another seed
    with pytest.raises(TypeError):
        pet.attach(fresh_encoder(tokenizer), "lora", rank=4)
    with pytest.raises(ValueError, match="unknown PET"):
        pet.attach(fresh_encoder(tokenizer), "prefix")


def test_bitfit_trains_only_biases(tokenizer):
    enc = fresh_encoder(tokenizer)
    keys = list(enc.model.state_dict())
    pet.attach(enc, "bitfit")
    assert pet.attached_method(enc) == "bitfit"
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable == [n for n, _ in enc.named_parameters() if n.endswith(".bias")]
    assert any("LayerNorm.bias" in n for n in trainable) and any("query.bias" in n for n in trainable)
    assert list(enc.model.state_dict()) == keys  # no modules added
    ids, mask = _batch()
    enc.train()(ids, mask).sum().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if n.endswith(".bias")
               and "token_type" not in n)
    assert all(p.grad is None for n, p in enc.named_parameters() if not n.endswith(".bias"))
    pet.detach(enc, "bitfit")
    assert not pet.is_attached(enc) and not any(p.requires_grad for p in enc.parameters())


# ------------------------------------------------------------------------------------------
# eh-ft end to end
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tokenizer, tmp_path_factory):
    from stackft.data.pipeline import load_task_data

    path = write_keyword_csv(tmp_path_factory.mktemp("d") / "kw.csv", 60, 0, words=(3, 3),
                             keywords={"neg": ["bad", "awful"], "pos": ["good", "great"]},
                             filler=["the", "a", "movie", "was", "it"])
    return load_task_data("classification", path, tokenizer=tokenizer, max_length=12, dev_size=20)


def ehft_cfg(out, method, **kw):
    return TrainConfig(task="classification", strategy="eh-ft", head="fc", pet=method, pet_lr=1e-2, phase1_lr=1e-2,
                       phase1_epochs=1, phase2_epochs=1, batch_size=8, evals_per_epoch=1, cache="off",
                       progress=False, device="cpu", output_dir=str(out), **kw)


def _encoder_tensors(path, pretrained: dict) -> dict:
    """The encoder tensors of checkpoint ``path``. A checkpoint of a frozen phase leaves out the encoder
    tensors it did not train; those must be declared as omitted, and their digest must be the
    pretrained tensors' (so a left-out tensor is known to equal ``pretrained``'s)."""
    from stackft.training import checkpoint as ckpt

    stored = {k[len("encoder."):]: v for k, v in load_file(str(path / "model.safetensors")).items()
              if k.startswith("encoder.")}
    missing = sorted(k for k in pretrained if k not in stored)
    if missing:
        names = [f"encoder.{k}" for k in missing]
        assert ckpt.omits(path, names), f"{path} lacks {len(missing)} encoder tensors it does not declare"
        digest = ckpt.tensors_digest({f"encoder.{k}": pretrained[k] for k in missing}, names)
        assert digest == ckpt.weights_info(path)["digest"], f"{path}: left-out tensors are not the pretrained ones"
        stored.update({k: pretrained[k] for k in missing})
    return stored


def test_ehft_lora_run(tokenizer, data, tmp_path):
    from stackft.training.trainer import Trainer

    enc = fresh_encoder(tokenizer)
    pretrained = {k: v.clone() for k, v in enc.state_dict().items()}
    trainer = Trainer(ehft_cfg(tmp_path / "run", "lora"), encoder=enc, data=data)
    summary = trainer.fit()
    assert summary["status"] == "finished" and summary["best"]["phase"] == "phase2"
    # phase 1 trained the adapter (the chosen phase-1 checkpoint holds it) ...
    chosen = load_file(str(tmp_path / "run" / "phase1_chosen" / "model.safetensors"))
    lora_b = [v for k, v in chosen.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    # ... while every encoder weight stayed bit-identical to the pretrained one
    p1 = _encoder_tensors(tmp_path / "run" / "phase1_end", pretrained)
    assert set(p1) == set(pretrained)
    assert all(torch.equal(p1[k], pretrained[k]) for k in pretrained)
    # the final model has no PET modules, and phase 2 did train the encoder from there
    for ckpt_dir in ("best", "phase1_end", "last"):
        assert not any("lora" in k for k in load_file(str(tmp_path / "run" / ckpt_dir / "model.safetensors")))
    assert not any("lora" in k for k in trainer.model.state_dict()) and not pet.is_attached(trainer.model.encoder)
    best = _encoder_tensors(tmp_path / "run" / "best", pretrained)
    assert any(not torch.equal(best[k], pretrained[k]) for k in pretrained)


def test_ehft_bitfit_phase2_starts_from_pretrained(tokenizer, data, tmp_path):
    from stackft.training.trainer import Trainer

    out = tmp_path / "run"
    enc = fresh_encoder(tokenizer)
    pretrained = {k: v.clone() for k, v in enc.state_dict().items()}
    assert Trainer(ehft_cfg(out, "bitfit", stop_after_phase=0), encoder=enc, data=data).fit()["status"] == "paused"
    p1 = _encoder_tensors(out / "phase1_end", pretrained)
    biases = [k for k in pretrained if k.endswith(".bias")]
    assert all(torch.equal(p1[k], pretrained[k]) for k in pretrained if not k.endswith(".bias"))
    assert any(not torch.equal(p1[k], pretrained[k]) for k in biases)  # BitFit moved the biases
    # resume (a new process: a freshly loaded encoder) and stop before the first phase-2 step
    r = Trainer(ehft_cfg(out, "bitfit", max_steps_this_run=0), encoder=fresh_encoder(tokenizer), data=data).fit(resume=True)
    assert r["status"] == "interrupted" and r["position"]["phase"] == 1 and r["position"]["phase_step"] == 0
    start = _encoder_tensors(out / "last", pretrained)
    assert all(torch.equal(start[k], pretrained[k]) for k in pretrained)  # biases reloaded as well
    head_p1 = {k: v for k, v in load_file(str(out / "phase1_end" / "model.safetensors")).items() if k.startswith("head.")}
    head_start = {k: v for k, v in load_file(str(out / "last" / "model.safetensors")).items() if k.startswith("head.")}
    assert all(torch.equal(head_p1[k], head_start[k]) for k in head_p1)  # the head comes from phase 1
    done = Trainer(ehft_cfg(out, "bitfit"), encoder=fresh_encoder(tokenizer), data=data).fit(resume=True)
    assert done["status"] == "finished"


def test_ehft_study_with_early_discard_inside_the_pet_phase(tokenizer, data, tmp_path):
    """Trials cut inside phase 1 leave LoRA attached to the shared encoder: the next trial and the
    caller must get the pretrained encoder back; the kept trial resumes inside the PET phase."""
    from stackft import studies as trials

    enc = fresh_encoder(tokenizer)
    pretrained = {k: v.clone() for k, v in enc.model.state_dict().items()}
    base = ehft_cfg(tmp_path / "unused", "lora")
    res = trials.run_trials(base, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "s",
                            early_discard=(2, 0.3, 1), encoder=enc, data=data)  # budget 3 of 10 steps
    assert sorted(r["status"] for r in res) == ["discarded", "finished"]
    assert len(trials.load_trials(tmp_path / "s", "probe")) == 2  # no evaluation within 3 steps: probed
    (kept,) = [r for r in res if r["status"] == "finished"]
    assert kept["phase_steps"] == {"phase1": 5, "phase2": 5}
    assert not pet.is_attached(enc) and type(enc.model).__name__ == "BertModel"
    state = enc.model.state_dict()
    assert list(state) == list(pretrained) and all(torch.equal(state[k], pretrained[k]) for k in pretrained)
    # the interrupted-and-resumed trial logs what an uninterrupted run of the same seeds logs
    ref = trials.run_trials(base, init_seeds=[kept["init_seed"]], data_seeds=[0], out_dir=tmp_path / "ref",
                            encoder=enc, data=data)
    def evals(d):
        return [(r["phase"], r["global_step"], r["dev"], r["loss"]) for r in trials.load_trials(d, "eval")
                if r["trial"] == kept["trial"]]

    assert len(evals(tmp_path / "ref")) == 2 and evals(tmp_path / "s") == evals(tmp_path / "ref")
    assert ref[0]["best_score"] == kept["best_score"]
