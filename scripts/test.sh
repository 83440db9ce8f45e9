#!/usr/bin/env bash
# The whole test suite: install, prepare the real-libvirt test bed, lint, type-check,
# install the built wheel into a fresh venv and run it from outside the checkout,
# then every tier (unit, integration on test-driver hosts, e2e on real libvirtd).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="$REPO/.venv/bin/python" bash scripts/setup-testbed.sh  # runs scripts/install.sh
.venv/bin/ruff check reconciler tests benchmarks
.venv/bin/ruff format --check reconciler tests benchmarks
.venv/bin/mypy reconciler
.venv/bin/lint-imports --no-cache --no-logo
bash scripts/wheel-smoke.sh  # the wheel in a fresh venv, run from outside the checkout
exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
