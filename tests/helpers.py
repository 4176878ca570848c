"""Shared test helpers: paths, the keyword-data writer, seeding and the tolerance policy.

Importable as ``import helpers`` from every test folder: with pytest's default ``prepend`` import
mode the folder of the rootless ``tests/conftest.py`` (this folder, which has no ``__init__.py``) is
put on ``sys.path`` before any test module is imported. Fixtures live in ``tests/conftest.py``;
plain functions and constants live here.
"""

from __future__ import annotations

import csv
import os
import random
import zlib
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
DEMO_DATA = REPO / "stackft" / "demo_data"


# --------------------------------------------------------------------------- seeds

SEED_ENV = "STACKFT_TEST_SEED"


def base_seed() -> int:
    """The suite's base seed: ``STACKFT_TEST_SEED`` (default 0)."""
    return int(os.environ.get(SEED_ENV, "0"))


def test_seed_for(nodeid: str, base: int | None = None) -> int:
    """The per-test seed: a stable hash (crc32) of the base seed and the test's node id.

    Stable across processes and Python versions (unlike ``hash``), so a failing test is replayed
    with ``STACKFT_TEST_SEED=<base> pytest '<nodeid>'``.
    """
    base = base_seed() if base is None else base
    return zlib.crc32(f"{base}:{nodeid}".encode()) & 0x7FFFFFFF


test_seed_for.__test__ = False  # not a test, despite the name


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch's global RNG (CPU and every CUDA device)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fresh():
    """A new ``torch.Generator`` seeded from the global torch RNG (which conftest seeds per test): ``(gen, seed)``.

    The seed goes into failure messages; a test that needs several independent streams calls this again.
    """
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return torch.Generator().manual_seed(seed), seed


# --------------------------------------------------------------------------- tolerances

# One policy for every float comparison against a reference: ``assert_close(actual, expected)`` picks the
# tolerance by the dtype the result was computed in (``dtype=``, else ``actual.dtype``). bf16 results are
# compared with a float32/float64 reference on the same bf16-rounded inputs. Gradients are compared after
# scaling by the reference's largest magnitude (``scale="max"``): they sum many products, so their absolute
# error grows with their size while the relative precision of each term stays that of the dtype.
TOL = {
    torch.float64: dict(atol=1e-7, rtol=1e-7),
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


def assert_close(actual, expected, dtype=None, *, scale: str | None = None, msg=None) -> None:
    """``torch.testing.assert_close`` under the suite's tolerance for ``dtype`` (default: ``actual.dtype``).

    Both sides are compared in float64 (dtypes may differ: a bf16 result against an fp32 reference).
    ``scale="max"`` measures the error relative to ``max|expected|`` (for gradients and other sums).
    ``msg``: a string or a callable as in ``torch.testing.assert_close``, e.g. to name the seed.
    """
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    dtype = dtype or actual.dtype
    t = dict(TOL[dtype])
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if scale == "max":
        s = e.abs().max().item() if e.numel() else 1.0
        a, e = a / max(s, 1.0), e / max(s, 1.0)
    elif scale is not None:
        raise ValueError(f"scale must be None or 'max', not {scale!r}")
    torch.testing.assert_close(a, e, **t, msg=msg)


# --------------------------------------------------------------------------- data

_KEYWORDS = {"neg": ["bad", "awful", "sad", "poor"], "pos": ["good", "great", "fine", "happy"]}
_FILLER = ["the", "a", "movie", "was", "day", "it", "very", "quite"]


def write_keyword_csv(path, n: int = 60, seed: int = 0, *, keywords: dict | None = None, filler=None,
                      words: tuple[int, int] = (2, 5)) -> str:
    """A learnable ``text,label`` CSV: row ``i`` has label ``list(keywords)[i % len(keywords)]`` and is
    ``words`` (min, max) filler words with one of that label's keywords inserted at a random position.

    Deterministic in ``seed``; returns ``str(path)`` (for argv lists and configs).
    """
    keywords = keywords or _KEYWORDS
    filler = filler or _FILLER
    labels = list(keywords)
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for i in range(n):
            label = labels[i % len(labels)]
            row = [rng.choice(filler) for _ in range(rng.randint(*words))]
            pos = rng.randint(0, len(row))
            kws = keywords[label]
            row.insert(pos, kws[0] if len(kws) == 1 else rng.choice(kws))
            w.writerow([" ".join(row), label])
    return str(path)


def tiny_keyword_task(folder, *, n_train: int = 48, n_dev: int = 16, max_length: int = 24):
    """``(encoder, data)``: a tiny random BERT and a learnable 2-class keyword task encoded for it.

    48 training rows make 6 steps an epoch at batch 8. Used by trainer-level tests that need a
    complete but seconds-long run.
    """
    from stackft.data.pipeline import load_task_data
    from stackft.modeling.encoders import tiny_random_encoder

    folder = Path(folder)
    enc = tiny_random_encoder(hidden_size=32, num_layers=2, seed=0)
    data = load_task_data("classification", write_keyword_csv(folder / "train.csv", n_train, seed=0),
                          write_keyword_csv(folder / "dev.csv", n_dev, seed=1), tokenizer=enc.tokenizer,
                          max_length=max_length)
    return enc, data
