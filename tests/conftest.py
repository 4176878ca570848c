"""Shared test setup.

Triton reads TRITON_INTERPRET when kernels are decorated, so it is set here, before any test
module imports stackft.kernels: without a GPU the Triton kernels then run in the interpreter on
CPU tensors.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The suite's tensors are small: one intra-op thread is as fast and never oversubscribes a busy box.
torch.set_num_threads(1)


_POS, _NEG = ["great", "superb", "lovely"], ["awful", "dreadful", "poor"]
_FILLER = "the a film plot actor scene story music was is very quite really".split()


def write_keyword_csv(path, n: int, seed: int) -> str:
    """A learnable 2-class ``text,label`` CSV: the label is given by one keyword among fillers."""
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for i in range(n):
            label = i % 2
            words = rng.sample(_FILLER, rng.randint(3, 9)) + [rng.choice(_POS if label else _NEG)]
            rng.shuffle(words)
            w.writerow([" ".join(words), "pos" if label else "neg"])
    return str(path)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers) with the default tokenizer, saved as a HF folder."""
    from stackft.modeling.encoders import tiny_random_encoder

    path = tmp_path_factory.mktemp("tiny-bert")
    enc = tiny_random_encoder(hidden_size=32, num_layers=2, seed=0)
    enc.model.save_pretrained(path)
    enc.tokenizer.save_pretrained(path)
    return path
