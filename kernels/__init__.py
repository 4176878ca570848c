"""Triton kernels and their plain-PyTorch references (installed as ``stackft.kernels``)."""
