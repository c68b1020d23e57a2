"""``python -m multitask``: the same as the ``multitask`` command (see :mod:`multitask.cli`)."""

import sys

from .cli import main

sys.exit(main())
