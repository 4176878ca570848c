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
