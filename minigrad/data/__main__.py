"""``python -m minigrad.data fetch``: see ``minigrad.data.cli``."""

import sys

from minigrad.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
