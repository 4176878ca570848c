"""C++/CUDA sources of the ``stackft._C`` extension, shipped so it can be built just in time."""
