"""``python -m bench.reproduce`` (from the repository root): the same as ``python bench/reproduce.py``."""

import sys

from .cli import main

sys.exit(main())
