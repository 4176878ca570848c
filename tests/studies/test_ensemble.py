"""Ensembles of trained checkpoints (stackft.ensemble) on tiny classification and pair data."""

import json
import random
import shutil

import pytest
import torch
from helpers import write_keyword_csv
from safetensors.torch import load_file, save_file

from stackft.config import TrainConfig
from stackft.studies.ensemble import ensemble_predict
from stackft.training import checkpoint as ckpt

POS, NEG, FILL = ["good", "great", "fine"], ["bad", "awful", "sad"], ["the", "a", "movie", "was", "it", "day"]


def _sentence(rng, keyword):
    words = [rng.choice(FILL) for _ in range(rng.randint(2, 4))]
    words.insert(rng.randint(0, len(words)), keyword)
    return " ".join(words)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_keyword_csv(d / "kw.csv", 60, 0, keywords={"neg": NEG, "pos": POS}, filler=FILL, words=(2, 4))
    rng = random.Random(1)
    with open(d / "pairs.tsv", "w") as f:  # duplicate = both sides carry the same keyword
        for i in range(60):
            k = rng.choice(POS + NEG)
            other = k if i % 2 else rng.choice([w for w in POS + NEG if w != k])
            f.write(f"{i % 2}\t{_sentence(rng, k)}\t{_sentence(rng, other)}\t{i}\n")
    return d


def train(tokenizer, out, task, train_path, **kw):
    from stackft.modeling.encoders import tiny_random_encoder
    from stackft.training.trainer import Trainer

    kw.setdefault("dev_size", 20)
    cfg = TrainConfig(task=task, train_path=str(train_path), max_length=16, batch_size=8,
                      phase1_epochs=1, phase2_epochs=1, stack_epochs=1, phase1_lr=1e-2, phase2_lr=1e-3,
                      evals_per_epoch=1, cache="off", progress=False, device="cpu", output_dir=str(out), **kw)
    Trainer(cfg, encoder=tiny_random_encoder(tokenizer=tokenizer)).fit()
    return out


@pytest.fixture(scope="module")
def cls_runs(tokenizer, files, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    a = train(tokenizer, d / "ft", "classification", files / "kw.csv", strategy="finetune-only", head="fc")
    b = train(tokenizer, d / "dn", "classification", files / "kw.csv", strategy="stack-only", head="densenet",
              head_options={"channels": 16, "kernel_sizes": [2], "layers_per_block": 1}, init_seed=1)
    return a, b


def _member_eval(run, data_path):
    """The member's metrics through the standard `stackft eval` path."""
    from stackft.data.labels import LabelVocab
    from stackft.data.pipeline import encode_examples, read_examples
    from stackft.tasks import get_task
    from stackft.training.evaluation import evaluate
    from stackft.training.trainer import load_trained

    model, meta = load_trained(run / "best")
    task = get_task(meta["task"])
    vocab = LabelVocab.from_list(meta["labels"])
    ds = encode_examples(task, read_examples(task.name, str(data_path)), model.encoder.tokenizer, vocab,
                         max_length=meta["max_length"], pair_mode=meta["pair_mode"])
    return evaluate(model, ds, task, vocab)


def test_soft_ensemble_probabilities_and_single_member(cls_runs, files):
    a, b = cls_runs
    data = files / "kw.csv"
    one = ensemble_predict([a], data)
    assert one["ensemble"] == one["members"][0]["metrics"] == _member_eval(a, data)
    assert one["probs"].shape == (60, 2)
    assert torch.allclose(one["probs"].sum(-1), torch.ones(60), atol=1e-6)
    both = ensemble_predict([a, b / "best"], data)
    assert both["labels"] == ["neg", "pos"] and both["n"] == 60
    assert [m["metrics"] for m in both["members"]] == [_member_eval(a, data), _member_eval(b, data)]
    assert torch.allclose(both["probs"].sum(-1), torch.ones(60), atol=1e-6)
    pb = ensemble_predict([b], data)["probs"]
    assert torch.allclose(both["probs"], (one["probs"] + pb) / 2, atol=1e-6)
    assert both["predictions"] == both["probs"].argmax(-1).tolist()
    hard_one = ensemble_predict([a], data, vote="hard")
    assert hard_one["predictions"] == one["predictions"] and hard_one["ensemble"] == one["ensemble"]
    assert set(hard_one["probs"].flatten().tolist()) <= {0.0, 1.0}


def test_hard_vote_majority_and_ties(cls_runs, files):
    a, b = cls_runs
    data = files / "kw.csv"
    pa, pb = ensemble_predict([a], data)["probs"], ensemble_predict([b], data)["probs"]
    res = ensemble_predict([a, b, a], data, vote="hard")
    assert res["predictions"] == pa.argmax(-1).tolist()  # a outvotes b 2:1
    assert torch.allclose(res["probs"].sum(-1), torch.ones(60))
    tie = ensemble_predict([a, b], data, vote="hard")  # 1:1 ties go to the higher mean probability
    assert tie["predictions"] == ((pa + pb) / 2).argmax(-1).tolist()
    with pytest.raises(ValueError, match="vote"):
        ensemble_predict([a], data, vote="median")


def test_labels_aligned_by_name_and_mismatch_is_an_error(cls_runs, files, tmp_path):
    a, _ = cls_runs
    data = files / "kw.csv"
    # the same model with its label list and output rows reversed: the same classifier
    rev = tmp_path / "rev"
    shutil.copytree(a, rev)
    meta = json.loads((rev / "best" / "meta.json").read_text())
    meta["labels"] = meta["labels"][::-1]
    (rev / "best" / "meta.json").write_text(json.dumps(meta))
    w = load_file(str(rev / "best" / "model.safetensors"))
    w["head.fc2.weight"], w["head.fc2.bias"] = w["head.fc2.weight"].flip(0).contiguous(), w["head.fc2.bias"].flip(0).contiguous()
    save_file(w, str(rev / "best" / "model.safetensors"))
    ckpt.seal(rev / "best")  # an edit on purpose: record the new checksums
    one = ensemble_predict([a], data)
    pair = ensemble_predict([a, rev], data)
    assert torch.allclose(pair["probs"], one["probs"], atol=1e-6)
    assert pair["members"][1]["metrics"] == one["ensemble"]
    # a different label set
    other = tmp_path / "other"
    shutil.copytree(a, other)
    meta["labels"] = ["neg", "positive"]
    (other / "best" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="share the label list"):
        ensemble_predict([a, other], data)
    with pytest.raises(FileNotFoundError):
        ensemble_predict([tmp_path / "missing"], data)


def test_pairs_joint_and_siamese_members(tokenizer, files, tmp_path):
    data = files / "pairs.tsv"
    joint = train(tokenizer, tmp_path / "joint", "pairs", data, strategy="finetune-only", head="fc")
    siam = train(tokenizer, tmp_path / "siam", "pairs", data, strategy="stack-only", head="bimpm-noctx",
                 head_options={"perspectives": 4, "agg_hidden": 8})
    assert json.loads((joint / "best" / "meta.json").read_text())["pair_mode"] == "joint"
    assert json.loads((siam / "best" / "meta.json").read_text())["pair_mode"] == "siamese"
    res = ensemble_predict([joint, siam], data)
    assert [m["pair_mode"] for m in res["members"]] == ["joint", "siamese"]
    assert [m["metrics"] for m in res["members"]] == [_member_eval(joint, data), _member_eval(siam, data)]
    assert torch.allclose(res["probs"].sum(-1), torch.ones(60), atol=1e-6)


def test_ner_word_level_and_cli(tokenizer, tmp_path, capsys):
    from stackft.cli import trials as cli_trials

    rng = random.Random(0)
    conll = tmp_path / "ner.txt"
    with open(conll, "w") as f:  # every sentence: a person (B-PER I-PER) and a place (B-LOC)
        for _ in range(30):
            rows = [(w, "O") for w in rng.sample(FILL, 2)]
            rows[rng.randint(0, 2):0] = [(rng.choice(["john", "mary"]), "B-PER"), ("smith", "I-PER")]
            rows.insert(rng.randint(0, 4), (rng.choice(["paris", "london"]), "B-LOC"))
            f.write("".join(f"{w} X X {t}\n" for w, t in rows) + "\n")
    run = train(tokenizer, tmp_path / "ner", "ner", conll, strategy="finetune-only", head="fc", dev_size=10)
    one = ensemble_predict([run], conll)
    assert one["ensemble"] == one["members"][0]["metrics"] == _member_eval(run, conll)
    assert all(torch.allclose(p.sum(-1), torch.ones(len(p)), atol=1e-6) for p in one["probs"])
    # a member whose max_length cuts words off: those words count as a sure "O" for it
    short = tmp_path / "short"
    shutil.copytree(run, short)
    meta = json.loads((short / "best" / "meta.json").read_text())
    meta["max_length"] = 4
    (short / "best" / "meta.json").write_text(json.dumps(meta))
    cut = ensemble_predict([short], conll)
    assert cut["ensemble"] == _member_eval(short, conll)
    assert all(tags[2:] == ["O"] * (len(tags) - 2) for tags in cut["predictions"])  # [CLS] + 2 words + [SEP]
    assert all(torch.allclose(p.sum(-1), torch.ones(len(p)), atol=1e-6) for p in cut["probs"])
    mixed = ensemble_predict([run, short], conll)
    assert [len(t) for t in mixed["predictions"]] == [len(t) for t in one["predictions"]]
    capsys.readouterr()
    assert cli_trials.main(["ensemble", str(run), str(run / "best"), "--data", str(conll), "--vote", "hard"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ensemble"] == one["ensemble"] and len(printed["members"]) == 2
