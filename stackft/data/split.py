"""Deterministic (optionally stratified) train/dev split of a list of examples."""

from __future__ import annotations

import numpy as np


def _dev_count(n: int, n_dev) -> int:
    if isinstance(n_dev, bool):
        raise TypeError("n_dev must be an int or a float")
    if isinstance(n_dev, float):
        if not 0.0 < n_dev < 1.0:
            raise ValueError(f"a fractional n_dev must be in (0, 1), got {n_dev}")
        count = max(1, int(round(n_dev * n)))
    else:
        count = int(n_dev)
    if not 0 < count < n:
        raise ValueError(f"n_dev={n_dev} leaves no examples on one side of the split ({n} examples)")
    return count


def _with_label_names(source, part: list):
    """Carry a ``label_names`` attribute (see hf.ExampleList) over to the split parts."""
    names = getattr(source, "label_names", None)
    if names is None:
        return part
    from stackft.data.hf import ExampleList

    return ExampleList(part, label_names=names)


def split_examples(examples, n_dev, *, seed: int = 0, stratify: bool = True):
    """Split ``examples`` into (train, dev) lists, deterministic given ``seed``.

    Args:
        examples: a list of examples; stratification uses their ``.label`` (examples without one,
            e.g. TaggedSentences, are split uniformly).
        n_dev: number of dev examples (int), or a fraction of the examples (float in (0, 1)).
        stratify: keep label proportions: each label gets its share of ``n_dev`` (largest-remainder
            rounding), picked at random within the label.

    Both parts keep the original relative order of the examples.
    """
    examples = list(examples) if not isinstance(examples, list) else examples
    n = len(examples)
    count = _dev_count(n, n_dev)
    rng = np.random.default_rng(seed)
    labels = [getattr(e, "label", None) for e in examples]
    if stratify and all(label is not None for label in labels):
        groups: dict = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        keys = sorted(groups, key=str)
        quotas = {k: count * len(groups[k]) / n for k in keys}
        take = {k: int(np.floor(quotas[k])) for k in keys}
        left = count - sum(take.values())
        by_remainder = sorted(keys, key=lambda k: (-(quotas[k] - take[k]), str(k)))
        for k in by_remainder[:left]:
            take[k] += 1
        dev_index = []
        for k in keys:
            members = np.asarray(groups[k])
            dev_index.extend(rng.choice(members, size=take[k], replace=False).tolist())
    else:
        dev_index = rng.choice(n, size=count, replace=False).tolist()
    in_dev = np.zeros(n, dtype=bool)
    in_dev[dev_index] = True
    train = [e for e, d in zip(examples, in_dev) if not d]
    dev = [e for e, d in zip(examples, in_dev) if d]
    return _with_label_names(examples, train), _with_label_names(examples, dev)
