"""stackft: stack-and-finetune training of BERT-style encoders (arXiv 1907.05338).

Phase 1 trains a task head on a frozen encoder; phase 2 fine-tunes both at a small lr.
See README.md for the quickstart and docs/design.md for the module map.
"""

__version__ = "0.1.0"
