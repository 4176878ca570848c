"""C++/CUDA sources of the ``stackft_C`` op library (``torch.ops.stackft_C``), shipped so it can be built just in time."""
