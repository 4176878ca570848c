"""``python -m stackft`` = the ``stackft`` console script."""

import sys

from .cli import main

sys.exit(main())
