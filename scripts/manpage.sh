#!/usr/bin/env bash
# Regenerate the man page docs/virt-reconcile.1 from the argument parser (argparse-manpage,
# installed with the test extra). tests/unit/test_editors.py fails when it is out of date.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-.venv/bin/python}"
"$(dirname "$PYTHON")/argparse-manpage" --module reconciler.cli --function _parser \
    --project-name virt-reconcile --prog virt-reconcile \
    --version "$("$PYTHON" -c 'import reconciler; print(reconciler.__version__)')" \
    --description "declarative GitOps reconciler for libvirt" \
    --manual-title "virt-reconcile manual" --format single-commands-section \
    --include docs/virt-reconcile.1.include \
    --output docs/virt-reconcile.1
echo "wrote docs/virt-reconcile.1"
