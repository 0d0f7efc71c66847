"""``python -m edgeworker`` is the ``edgeworker`` command."""

import sys

from .cli import main

sys.exit(main())
