"""Model ensembles (methods.md §1.6 B: "trained three models, and perform a model ensemble").

``ensemble_predict(model_dirs, dataset, vote="soft"|"hard")`` loads each checkpoint with
:func:`stackft.trainer.load_trained` and combines the members' class probabilities:

- ``soft`` (default, the toolkit's reading of the paper): the mean of the members' softmax
  probabilities; the prediction is its argmax.
- ``hard``: majority vote of the members' argmax predictions; a tie goes to the tied class with the
  highest mean probability. The returned probabilities are then the vote fractions.

Members may differ in encoder, tokenizer, ``max_length`` and input kind (joint or siamese pairs):
each member encodes the raw examples itself, as its checkpoint's meta says. All members must be
trained on the same task with the same label set (the label order may differ; probabilities are
aligned to the first member's order). Token-level tasks (NER) are combined per word, at each word's
first sub-token, so members with different tokenizers line up too; words a member's ``max_length``
cut off count as a sure "O" for that member (what :func:`stackft.tasks.decode_batch` predicts).
"""

from __future__ import annotations

from pathlib import Path

import torch

from stackft.data.labels import LabelVocab
from stackft.data.pipeline import encode_examples, read_examples
from stackft.run_dir import META_FILE, RunDir
from stackft.tasks import get_task
from stackft.training.evaluation import probabilities
from stackft.training.scoring import score

VOTES = ("soft", "hard")


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder (with meta.json) as given, or a run folder's ``best/``."""
    path = Path(path)
    if (path / META_FILE).exists():
        return path
    best = RunDir(path).best
    if (best / META_FILE).exists():
        return best
    raise FileNotFoundError(f"{path} is neither a stackft checkpoint ({META_FILE}) nor a run folder with {best.name}/")


def _raw_examples(dataset, task_name: str, split: str):
    if isinstance(dataset, (str, Path)):
        return read_examples(task_name, str(dataset), split=split)
    examples = getattr(dataset, "examples", None)  # an EncodedDataset: re-encode per member
    if examples is not None:
        return list(examples)
    return list(dataset)


@torch.no_grad()
def member_probabilities(model, meta: dict, examples, *, batch_size: int = 64, device="cpu") -> list:
    """Class probabilities of one member, in its own label order.

    Sequence tasks: a ``[N, C]`` tensor. Token tasks: a list of ``[n_words, C]`` tensors, one per
    sentence (truncated words: probability 1 on "O").
    """
    task = get_task(meta["task"])
    vocab = LabelVocab.from_list(meta["labels"])
    ds = encode_examples(task, examples, model.encoder.tokenizer, vocab, max_length=meta["max_length"],
                         pair_mode=meta.get("pair_mode") or "joint")
    probs = probabilities(model, ds, task, meta["labels"], batch_size=batch_size, device=device)
    if task.level == "token":
        return probs
    return torch.stack(probs) if len(ds) else torch.zeros(0, len(vocab))


def _combine(member_probs: list[torch.Tensor], vote: str) -> tuple[torch.Tensor, torch.Tensor]:
    """M member probability tensors [..., C] -> (ensemble probabilities [..., C], predicted ids [...])."""
    stacked = torch.stack(member_probs)
    mean = stacked.mean(0)
    if vote == "soft":
        return mean, mean.argmax(-1)
    m, c = stacked.size(0), stacked.size(-1)
    votes = torch.nn.functional.one_hot(stacked.argmax(-1), c).sum(0).to(mean.dtype)
    # ties: the tied class with the highest mean probability (0.5 * mean < 1 never outweighs a vote)
    winner = (votes + 0.5 * mean).argmax(-1)
    fractions = votes / m
    return fractions, winner


def ensemble_predict(model_dirs, dataset, *, vote: str = "soft", batch_size: int = 64, device: str = "cpu",
                     split: str = "validation") -> dict:
    """Soft- or hard-vote ensemble of trained checkpoints on ``dataset``.

    ``model_dirs``: checkpoint folders (``RUN/best``) or run folders (their ``best/`` is used).
    ``dataset``: a data file in the task's format (or a ``datasets`` source, with ``split``), a list
    of raw examples, or an EncodedDataset (its raw examples are re-encoded for each member).

    Returns ``{"vote", "task", "labels", "n", "members": [{"model_dir", "head", "strategy",
    "pair_mode", "metrics"}], "ensemble": metrics, "predictions", "probs"}``. Metrics come from
    :func:`stackft.tasks.score` (accuracy/F1; entity F1 for NER). ``probs``: the ensemble's class
    probabilities in ``labels`` order (soft: mean probabilities; hard: vote fractions), a ``[N, C]``
    tensor (a list of ``[n_words, C]`` tensors for NER); each row sums to 1.
    """
    from stackft.training.trainer import load_trained

    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    model_dirs = list(model_dirs)
    if not model_dirs:
        raise ValueError("ensemble_predict needs at least one model")
    paths = [resolve_checkpoint(p) for p in model_dirs]
    members = []
    for path in paths:
        model, meta = load_trained(path, device=device)
        members.append((path, model, meta))
    ref_path, _, ref_meta = members[0]
    task = get_task(ref_meta["task"])
    ref_labels = list(ref_meta["labels"])
    for path, _, meta in members[1:]:
        if get_task(meta["task"]).name != task.name:
            raise ValueError(f"members disagree on the task: {ref_path} is {task.name!r}, {path} is {meta['task']!r}")
        if sorted(meta["labels"]) != sorted(ref_labels):
            raise ValueError(f"members must share the label list: {ref_path} has {ref_labels}, "
                             f"{path} has {list(meta['labels'])}")

    examples = _raw_examples(dataset, task.name, split)
    if not examples:
        raise ValueError("ensemble_predict: the dataset is empty")
    ref_vocab = LabelVocab.from_list(ref_labels)
    gold_ds = encode_examples(task, examples, members[0][1].encoder.tokenizer, ref_vocab,
                              max_length=ref_meta["max_length"], pair_mode=ref_meta.get("pair_mode") or "joint")

    def to_preds(ids_per_item):
        if task.level == "token":
            return [[ref_vocab.decode(i) for i in ids.tolist()] for ids in ids_per_item]
        return ids_per_item.tolist()

    per_member, member_rows = [], []
    for path, model, meta in members:
        probs = member_probabilities(model, meta, examples, batch_size=batch_size, device=device)
        perm = [list(meta["labels"]).index(label) for label in ref_labels]  # ref class j = member class perm[j]
        probs = [p[:, perm] for p in probs] if task.level == "token" else probs[:, perm]
        per_member.append(probs)
        ids = [p.argmax(-1) for p in probs] if task.level == "token" else probs.argmax(-1)
        member_rows.append({"model_dir": str(path), "head": meta.get("head"),
                            "strategy": meta.get("config", {}).get("strategy"), "pair_mode": meta.get("pair_mode"),
                            "metrics": score(task, gold_ds, to_preds(ids), ref_vocab)})

    if task.level == "token":
        ens_probs, ens_ids = [], []
        for s in range(len(examples)):
            p, ids = _combine([m[s] for m in per_member], vote)
            ens_probs.append(p)
            ens_ids.append(ids)
    else:
        ens_probs, ens_ids = _combine(per_member, vote)
    predictions = to_preds(ens_ids)
    return {
        "vote": vote,
        "task": task.name,
        "labels": ref_labels,
        "n": len(examples),
        "members": member_rows,
        "ensemble": score(task, gold_ds, predictions, ref_vocab),
        "predictions": predictions,
        "probs": ens_probs,
    }
