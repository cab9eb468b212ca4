"""``python -m pipelines``: the ``regkit`` command line."""

import sys

from pipelines.cli import main

sys.exit(main())
