"""What is trained: encoders, the stacked model, task heads and parameter-efficient add-ons.

- :mod:`~stackft.modeling.encoders`: :class:`Encoder` (any HF encoder by id or folder; packaged MiniLM default).
- :mod:`~stackft.modeling.model`: :class:`StackModel` = encoder + head; ``features`` / ``forward_features``.
- :mod:`~stackft.modeling.heads`: task heads (fc, linear, bilstm, highway-lstm, densenet, bimpm, sim-transformer).
- :mod:`~stackft.modeling.pet`: LoRA (peft) / BitFit for EH-FT's phase 1.
"""
