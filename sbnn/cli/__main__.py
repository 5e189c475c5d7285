"""``python -m sbnn.cli``: the ``sbnn`` command."""

import sys

from sbnn.cli import main

sys.exit(main())
