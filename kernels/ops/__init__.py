"""Triton implementations, one file per op (kernels, launchers and ``autograd.Function`` together),
and ``highway_lstm_cpp``: the C++ CPU highway-LSTM layer of the ``stackft_C`` extension as a custom op.

Reach them through the dispatchers in :mod:`stackft.kernels`, which fall back to
:mod:`stackft.kernels.reference` where Triton cannot run. Nothing is re-exported here, so a module
name never shadows a public function of the same name.
"""
