"""Reproduce the experiments of Wang et al. 2019: ``python bench/reproduce.py --help``.

A thin entry point; the code is the package ``bench/reproduce/`` (plan, run, report; see
``bench/reproduce/cli.py`` for what it runs). ``python -m bench.reproduce`` does the same.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the package beside this file

from reproduce.cli import main  # noqa: E402  (the package directory wins over this file's own name)

if __name__ == "__main__":
    sys.exit(main())
