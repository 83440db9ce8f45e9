#!/usr/bin/env bash
# Prepare this machine for the e2e tier (real libvirtd + tiny TCG guests). Idempotent.
#   - installs what is missing through scripts/install.sh (Debian packages, .venv)
#   - creates /var/log/libvirt (libvirtd -d needs it without systemd)
#   - builds + caches the tiny guest (kernel + busybox initramfs), see tests/testbed/guest.py
# Daemons are NOT started here: the e2e fixtures start (and stop) what they need.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-testbed: must run as root (apt, libvirtd, mount namespaces)" >&2
    exit 1
fi

# Packages and the venv: one list, in scripts/install.sh.
bash "$REPO/scripts/install.sh"

mkdir -p /var/log/libvirt /var/log/libvirt/qemu

if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
    py="$REPO/.venv/bin/python"
else
    py=python3
fi
cd "$REPO"
"$py" -m tests.testbed.guest
echo "setup-testbed: ready"
