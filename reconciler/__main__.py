"""Entry point for ``python -m reconciler``."""

import sys

from reconciler import cli

sys.exit(cli.main())
