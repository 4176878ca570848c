"""Prediction on unlabelled input (``predict_texts``, ``stackft predict``) and exports (``export_model``,
``load_exported``, ``stackft export``) on small trained runs with a tiny random BERT.

Pinned: predictions agree with the evaluation path; every input format gives the same predictions
for the same sentences; an export reloads to identical predictions; the plain-transformers folder of
a finetune-only classifier gives identical logits through ``AutoModelForSequenceClassification``;
what cannot be represented in transformers (the 2-FC token head, 2-FC heads on joint pairs) is
refused with the reason, and the one token head that can (LP-FT's linear head) maps exactly.
"""

import contextlib
import io
import json
import random
import sys

import pytest
import torch
from helpers import DEMO_DATA, FIXTURES, write_keyword_csv

from stackft import cli
from stackft.config import TrainConfig
from stackft.data.conll import read_conll
from stackft.data.pipeline import encode_examples, read_examples
from stackft.training.export import (
    FC_TOKEN_REASON,
    PAIRS_REASON,
    NotRepresentable,
    export_model,
    load_exported,
    probe_batch,
    to_transformers,
    transformers_logits,
)
from stackft.training.predict import load_model, predict_texts


def _train(tokenizer, out, task, train_path, dev_path=None, **kw):
    from stackft.modeling.encoders import tiny_random_encoder
    from stackft.training.trainer import Trainer

    if dev_path is None:
        kw.setdefault("dev_size", 20)
    cfg = TrainConfig(task=task, train_path=str(train_path), dev_path=None if dev_path is None else str(dev_path),
                      max_length=32, batch_size=8, phase1_epochs=1, phase2_epochs=1, stack_epochs=1,
                      phase1_lr=1e-2, phase2_lr=1e-3, evals_per_epoch=1, cache="off", progress=False, device="cpu",
                      output_dir=str(out), **kw)
    Trainer(cfg, encoder=tiny_random_encoder(tokenizer=tokenizer)).fit()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_keyword_csv(d / "kw.csv", 48, 0)
    rng = random.Random(1)
    with open(d / "pairs.tsv", "w") as f:
        for i in range(48):
            k = rng.choice(["good", "bad", "sad", "fine"])
            other = k if i % 2 else rng.choice(["movie", "day"])
            f.write(f"{i % 2}\tthe {k} one\ta {other} thing\t{i}\n")
    return d


@pytest.fixture(scope="module")
def runs(tokenizer, files, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {
        "ner_ft": _train(tokenizer, d / "ner-ft", "ner", DEMO_DATA / "conll_train.txt", FIXTURES / "conll_small.txt",
                         strategy="finetune-only", max_train=24),
        "ner_sf": _train(tokenizer, d / "ner-sf", "ner", DEMO_DATA / "conll_train.txt", FIXTURES / "conll_small.txt",
                         strategy="stack-and-finetune", max_train=24, head_options={"lstm_hidden": 8}),
        "cls_ft": _train(tokenizer, d / "cls-ft", "classification", files / "kw.csv", strategy="finetune-only"),
        "pairs_ft": _train(tokenizer, d / "pairs-ft", "pairs", files / "pairs.tsv", strategy="finetune-only"),
    }


def _cli(argv, stdin: bytes | None = None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _close(a, b, tol=1e-5) -> bool:
    """Nested dicts/lists of numbers equal to ``tol``, everything else exactly."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the API ---------------------------------------------------------------------------------------

def test_predict_texts_ner_agrees_with_evaluation(runs):
    from stackft.data.labels import LabelVocab
    from stackft.tasks import get_task
    from stackft.training.evaluation import predict
    from stackft.training.trainer import load_trained

    model, meta = load_trained(runs["ner_ft"] / "best")
    sentences = read_conll(FIXTURES / "conll_small.txt")
    got = predict_texts(model, [s.tokens for s in sentences])  # the meta travels with the model
    task, vocab = get_task("ner"), LabelVocab.from_list(meta["labels"])
    ds = encode_examples(task, sentences, model.encoder.tokenizer, vocab, max_length=meta["max_length"])
    assert [g["labels"] for g in got] == predict(model, ds, task, vocab)
    for g, s in zip(got, sentences):
        assert g["words"] == s.tokens and len(g["probs"]) == len(s.tokens)
        for probs, label in zip(g["probs"], g["labels"]):
            assert set(probs) == set(meta["labels"]) and abs(sum(probs.values()) - 1) < 1e-5
            assert max(probs, key=probs.get) == label
    # a string is split on whitespace; a path loads the checkpoint; (model, meta) works too
    joined = predict_texts(str(runs["ner_ft"]), [" ".join(sentences[0].tokens)])
    assert joined[0]["labels"] == got[0]["labels"] and _close(joined[0]["probs"], got[0]["probs"])
    assert _close(predict_texts((model, meta), [sentences[0].tokens]), got[:1])  # alone: other padding


def test_predict_texts_classification_and_pairs(runs, files):
    model, meta = load_model(runs["cls_ft"])
    texts = [e.text for e in read_examples("classification", str(files / "kw.csv"))][:10]
    got = predict_texts(model, texts, batch_size=3)
    assert [g["text"] for g in got] == texts  # input order, whatever the length batching did
    for g in got:
        assert set(g["probs"]) == set(meta["labels"]) and g["label"] == max(g["probs"], key=g["probs"].get)
        assert abs(sum(g["probs"].values()) - 1) < 1e-5
    again = predict_texts(model, texts[:4], batch_size=64)  # other batches: the same labels, probabilities to rounding
    assert [g["label"] for g in again] == [g["label"] for g in got[:4]]
    assert _close([g["probs"] for g in again], [g["probs"] for g in got[:4]])

    pairs = predict_texts(runs["pairs_ft"], [("the good one", "a good thing"), {"text_a": "x", "text_b": "y"}])
    assert [(p["text_a"], p["text_b"]) for p in pairs] == [("the good one", "a good thing"), ("x", "y")]
    assert all(set(p["probs"]) == {"0", "1"} for p in pairs)


def test_predict_texts_rejects_what_it_cannot_read(runs):
    model, meta = load_model(runs["cls_ft"])
    with pytest.raises(TypeError, match="not one string"):
        predict_texts(model, "one text")
    with pytest.raises(ValueError, match="input 1: empty"):
        predict_texts(model, ["fine", "  "])
    bare = torch.nn.Module()
    with pytest.raises(TypeError, match="meta"):
        predict_texts(bare, ["x"])


def test_long_sentences_are_truncated_and_counted(runs):
    model, meta = load_model(runs["ner_ft"])
    words = ["word"] * 60  # > max_length 32 tokens
    with pytest.warns(UserWarning, match="1 of 1 inputs were truncated"):
        (got,) = predict_texts(model, [words])
    assert len(got["labels"]) == 60 and got["truncated"] > 0
    assert got["labels"][-got["truncated"]:] == ["O"] * got["truncated"]


# -- the command line: every input format ------------------------------------------------------------

def test_predict_cli_ner_formats_agree(runs, tmp_path, monkeypatch):
    sentences = read_conll(FIXTURES / "conll_small.txt")
    (tmp_path / "words.conll").write_text("\n\n".join("\n".join(s.tokens) for s in sentences) + "\n")
    (tmp_path / "lines.txt").write_text("\n".join(" ".join(s.tokens) for s in sentences) + "\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"tokens": s.tokens, "id": i}) + "\n"
                                               for i, s in enumerate(sentences)))
    ckpt = str(runs["ner_ft"] / "best")
    results = {}
    for name in ("words.conll", "lines.txt", "in.jsonl"):
        code, out, err = _cli(["predict", ckpt, "--data", str(tmp_path / name), "--no-progress"])
        assert code == 0, err
        results[name] = _jsonl(out)
        assert f"{len(sentences)} ner predictions" in err
    # the tagged CoNLL fixture (detected as CoNLL), and stdin (one sentence per line)
    code, out, err = _cli(["predict", ckpt, "--data", str(FIXTURES / "conll_small.txt"), "--no-progress"])
    assert code == 0 and "read as conll" in err
    results["tagged"] = _jsonl(out)
    code, out, err = _cli(["predict", ckpt, "--data", "-", "--no-progress"],
                          stdin=(tmp_path / "lines.txt").read_bytes(), monkeypatch=monkeypatch)
    assert code == 0 and "<stdin>" in err and "read as lines" in err
    results["stdin"] = _jsonl(out)
    ref = results["words.conll"]
    assert [r["words"] for r in ref] == [s.tokens for s in sentences]
    for name, recs in results.items():
        assert [r["labels"] for r in recs] == [r["labels"] for r in ref], name
        assert _close([r["probs"] for r in recs], [r["probs"] for r in ref]), name
    assert [r["id"] for r in results["in.jsonl"]] == list(range(len(sentences)))


def test_predict_cli_classification_and_pairs_formats(runs, files, tmp_path):
    texts = [e.text for e in read_examples("classification", str(files / "kw.csv"))][:8]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out_file = tmp_path / "out.jsonl"
    runs_cls = str(runs["cls_ft"])
    got = {}
    for data in (files / "kw.csv", tmp_path / "t.txt", tmp_path / "t.jsonl"):
        code, out, err = _cli(["predict", runs_cls, "--data", str(data), "--out", str(out_file), "--no-progress",
                               "--digits", "4"])
        assert code == 0 and out == "", err
        got[data.name] = _jsonl(out_file.read_text())
    assert len(got["kw.csv"]) == 48 and got["kw.csv"][:8] == got["t.txt"] == got["t.jsonl"]
    assert all(len(str(p).split(".")[-1]) <= 4 for r in got["t.txt"] for p in r["probs"].values())

    (tmp_path / "p.tsv").write_text("the good one\ta good thing\tA\nthe sad one\ta movie thing\n")
    code, out, err = _cli(["predict", str(runs["pairs_ft"]), "--data", str(files / "pairs.tsv"), "--no-progress"])
    assert code == 0, err
    train_layout = _jsonl(out)
    assert len(train_layout) == 48 and train_layout[0]["id"] == "0" and train_layout[0]["text_a"].startswith("the")
    code, out, err = _cli(["predict", str(runs["pairs_ft"]), "--data", str(tmp_path / "p.tsv"), "--no-progress"])
    recs = _jsonl(out)
    assert code == 0 and [r.get("id") for r in recs] == ["A", None] and recs[1]["text_b"] == "a movie thing"


def test_predict_cli_bad_input_is_one_line(runs, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    code, out, err = _cli(["predict", str(runs["cls_ft"]), "--data", str(bad), "--no-progress"])
    assert code == 2 and err.strip().count("\n") == 0 and f"{bad}:2: expected the key text" in err
    code, out, err = _cli(["predict", str(runs["cls_ft"]), "--data", str(bad), "--no-progress", "--on-error", "skip"])
    assert code == 0 and len(_jsonl(out)) == 1 and "1 malformed skipped" in err
    code, out, err = _cli(["predict", str(tmp_path), "--data", str(bad)])
    assert code == 2 and "not a stackft checkpoint" in err


# -- exports ------------------------------------------------------------------------------------------

def test_export_round_trip_gives_identical_predictions(runs, tmp_path):
    sentences = [s.tokens for s in read_conll(FIXTURES / "conll_small.txt")]
    for run in ("ner_sf", "ner_ft"):
        out = tmp_path / run
        report = export_model(runs[run] / "best", out)
        assert report["reload_max_diff"] == 0.0
        model, meta = load_exported(out)
        ref, ref_meta = load_model(runs[run] / "best")
        assert meta["labels"] == ref_meta["labels"] and meta["task"] == "ner"
        assert predict_texts(model, sentences) == predict_texts(ref, sentences)
        assert predict_texts(str(out), sentences[:1]) == predict_texts(ref, sentences[:1])  # by path
        for name in ("README.md", "model.safetensors", "stackft_export.json", "labels.json", "train_config.json",
                     "encoder/config.json", "encoder/tokenizer_config.json"):
            assert (out / name).is_file(), (run, name)
        labels = json.loads((out / "labels.json").read_text())
        assert labels["id2label"]["0"] == meta["labels"][0] and labels["label2id"][meta["labels"][0]] == 0
        card = (out / "README.md").read_text()
        assert "## Dev metrics" in card and "| f1 |" in card and '"strategy"' in card
        assert json.loads((out / "train_config.json").read_text()) == ref_meta["config"]
    # the 2-FC token head (finetune-only NER) has no transformers counterpart: no hf/, and the reason
    assert report["transformers"] is None and report["transformers_reason"] == FC_TOKEN_REASON
    assert not (tmp_path / "ner_ft" / "hf").exists() and FC_TOKEN_REASON in (tmp_path / "ner_ft" / "README.md").read_text()


def test_export_needs_nothing_of_the_run_folder(runs, tmp_path):
    import shutil

    run = tmp_path / "run-copy"
    shutil.copytree(runs["cls_ft"], run)
    export_model(run, tmp_path / "out")
    texts = ["the good movie", "a sad day was it"]
    before = predict_texts(str(run), texts)
    shutil.rmtree(run)
    assert predict_texts(str(tmp_path / "out"), texts) == before


def test_finetune_only_classifier_exports_a_plain_transformers_model(runs, files, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "cls"
    report = export_model(runs["cls_ft"] / "best", out)
    assert report["transformers_class"] == "DistilBertForSequenceClassification", report
    model, meta = load_exported(out)
    hf = AutoModelForSequenceClassification.from_pretrained(out / "hf").eval()
    tok = AutoTokenizer.from_pretrained(out / "hf")
    assert hf.config.id2label == dict(enumerate(meta["labels"]))
    texts = [e.text for e in read_examples("classification", str(files / "kw.csv"))][:12] + ["word " * 50]
    enc = tok(texts, truncation=True, padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"} and enc["input_ids"].shape[1] <= meta["max_length"]
    with torch.no_grad():
        logits = hf(**enc).logits
    ours = predict_texts(model, texts)
    probs = torch.tensor([[r["probs"][label] for label in meta["labels"]] for r in ours])
    torch.testing.assert_close(torch.softmax(logits, -1), probs, atol=1e-5, rtol=1e-5)
    assert [meta["labels"][i] for i in logits.argmax(-1).tolist()] == [r["label"] for r in ours]
    # the logits themselves: the same batch through both models
    batch = probe_batch(model, meta)
    with torch.no_grad():
        torch.testing.assert_close(transformers_logits(hf, batch, ["input_ids", "attention_mask"]), model(batch),
                                   atol=1e-5, rtol=1e-5)


def test_what_has_no_transformers_counterpart_is_refused_with_the_reason(runs, tmp_path):
    report = export_model(runs["pairs_ft"], tmp_path / "pairs")
    assert report["transformers"] is None and report["transformers_reason"] == PAIRS_REASON
    with pytest.raises(NotRepresentable, match="no counterpart"):
        export_model(runs["ner_sf"], tmp_path / "sf", transformers="yes")
    assert not (tmp_path / "sf").exists()
    report = export_model(runs["cls_ft"], tmp_path / "cls-no-hf", transformers="no")
    assert report["transformers"] is None and not (tmp_path / "cls-no-hf" / "hf").exists()


def test_transformers_token_heads_are_a_single_linear_layer(make_tiny_encoder):
    """Why the 2-FC token head cannot be exported: transformers' token classifiers have one Linear on top."""
    from transformers import AutoModelForTokenClassification

    cfg = make_tiny_encoder().model.config
    hf = AutoModelForTokenClassification.from_config(cfg)
    head = {n: p.shape for n, p in hf.named_parameters() if not n.startswith(hf.base_model_prefix + ".")}
    assert head == {"classifier.weight": torch.Size([cfg.num_labels, cfg.hidden_size]),
                    "classifier.bias": torch.Size([cfg.num_labels])}


def test_the_linear_token_head_maps_exactly_onto_a_token_classifier(make_tiny_encoder, tmp_path):
    from transformers import AutoModelForTokenClassification

    from stackft.modeling.heads import build_head
    from stackft.modeling.model import StackModel

    enc = make_tiny_encoder()
    model = StackModel(enc, build_head("linear", enc.hidden_size, 3, level="token")).eval()
    meta = {"task": "ner", "labels": ["O", "B-PER", "I-PER"], "max_length": 32, "head": "linear"}
    hf, info = to_transformers(model, meta)
    hf.save_pretrained(tmp_path / "hf")
    hf = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    batch = probe_batch(model, meta)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        torch.testing.assert_close(transformers_logits(hf, batch)[mask], model(batch)[mask], atol=1e-5, rtol=1e-5)
    fc = StackModel(make_tiny_encoder(), build_head("fc", enc.hidden_size, 3, level="token"))
    with pytest.raises(NotRepresentable, match="2-FC token head"):
        to_transformers(fc, meta)


def test_export_cli(runs, tmp_path):
    out = tmp_path / "exp"
    code, printed, err = _cli(["export", str(runs["cls_ft"]), str(out)])
    assert code == 0, err
    report = json.loads(printed)
    assert report["transformers_class"] == "DistilBertForSequenceClassification" and (out / "hf" / "config.json").exists()
    code, _, err = _cli(["export", str(runs["cls_ft"]), str(out)])
    assert code == 2 and "exists" in err and "--overwrite" in err
    code, _, err = _cli(["export", str(runs["cls_ft"]), str(out), "--overwrite", "--transformers", "no"])
    assert code == 0 and not (out / "hf").exists()
    code, _, err = _cli(["export", str(runs["ner_ft"]), str(tmp_path / "n"), "--transformers", "yes"])
    assert code == 2 and "no transformers folder" in err and not (tmp_path / "n").exists()
