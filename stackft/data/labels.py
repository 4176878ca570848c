"""LabelVocab: the label-string <-> id mapping of a task, saved with checkpoints via to_list()."""

from __future__ import annotations

from typing import Iterable

from stackft.data.errors import DataError

NER_TASKS = ("ner", "tagging")


def _sort_labels(labels: Iterable[str]) -> list[str]:
    """Sorted unique labels; numerically when every label is an integer ("0","1","10" not "0","1","10","2")."""
    unique = set(labels)
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


class LabelVocab:
    """Ordered label list; a label's id is its position.

    ``LabelVocab(["O", "B-PER", "I-PER"])``; ``encode("B-PER") -> 1``; ``decode(1) -> "B-PER"``.
    """

    def __init__(self, labels: list[str]):
        labels = [str(label) for label in labels]
        if not labels:
            raise ValueError("LabelVocab needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        self._labels = labels
        self._ids = {label: i for i, label in enumerate(labels)}

    @classmethod
    def from_examples(cls, examples, task: str) -> "LabelVocab":
        """Build the vocabulary of ``examples``.

        task "ner" (or "tagging"): every tag of every TaggedSentence, "O" first (always present),
        then sorted. Other tasks ("classification", "pairs"): the sorted unique ``.label`` values,
        integers in numeric order, so QQP's "0","1" keep ids 0, 1 (positive class 1). When
        ``examples`` carries ``label_names`` (lists returned by ``load_hf_examples`` for a
        ClassLabel column) that order is used instead, so ids match the dataset's integers.
        """
        names = getattr(examples, "label_names", None)
        if names:
            return cls(list(names))
        if task in NER_TASKS:
            tags = {tag for sentence in examples for tag in sentence.tags}
            tags.discard("O")
            return cls(["O"] + sorted(tags))
        labels = _sort_labels(example.label for example in examples)
        if not labels:
            raise ValueError("no examples to build a label vocabulary from")
        return cls(labels)

    @classmethod
    def from_list(cls, labels: list[str]) -> "LabelVocab":
        """Inverse of to_list()."""
        return cls(labels)

    def to_list(self) -> list[str]:
        """The labels in id order (a copy; JSON-serialisable)."""
        return list(self._labels)

    def encode(self, label: str, *, path=None, line: int | None = None) -> int:
        """Id of ``label``; DataError(path, line, "unknown label ...") when it is not in the vocabulary."""
        try:
            return self._ids[label]
        except KeyError:
            known = ", ".join(self._labels)
            raise DataError(path, line, f"unknown label {label!r} (known: {known})") from None

    def decode(self, i: int) -> str:
        """Label of id ``i``."""
        return self._labels[int(i)]

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self):
        return iter(self._labels)

    def __contains__(self, label) -> bool:
        return label in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelVocab) and self._labels == other._labels

    def __repr__(self) -> str:
        return f"LabelVocab({self._labels!r})"
