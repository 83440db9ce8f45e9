"""Defaults the command line shows in ``--help``, kept apart from the modules that
use them so that building the parser loads none of the pipeline (``--help`` is
instant; ``cli`` imports the pipeline on first use)."""

from __future__ import annotations

# Percent of a host's managed objects one run may delete without --force-prune.
DEFAULT_MAX_PRUNE = 50
# gitignore-like patterns of files a folder walk skips, one file per folder.
IGNORE_FILE = ".virtreconcileignore"
# watch's HTTP endpoint. 9177 is prometheus-libvirt-exporter's, which often runs
# on the same machine.
DEFAULT_PORT = 9178
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
# Seconds a watch replica's membership and host locks last without a heartbeat
# (--lease; ``coordination``).
DEFAULT_LEASE = 10.0
