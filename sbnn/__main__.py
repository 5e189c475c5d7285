"""``python -m sbnn``: the ``sbnn`` command."""

import sys

from sbnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
