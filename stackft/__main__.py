"""``python -m stackft`` = the ``stackft`` console script."""

import sys

from stackft.cli import main

if __name__ == "__main__":
    sys.exit(main())
