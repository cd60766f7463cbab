"""``python -m keylife.cli``: the same as the ``keylife`` command."""

import sys

from keylife.cli.main import main

sys.exit(main())
