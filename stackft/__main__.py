"""``python -m stackft`` = the ``stackft`` console script."""

import sys

from stackft.cli import main

sys.exit(main())
