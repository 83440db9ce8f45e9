#!/usr/bin/env bash
# Prepare this machine for the e2e tier (real libvirtd + tiny TCG guests). Idempotent.
#   - installs the Debian packages that are missing (apt-get update only when needed)
#   - creates /var/log/libvirt (libvirtd -d needs it without systemd)
#   - builds + caches the tiny guest (kernel + busybox initramfs), see tests/testbed/guest.py
# Daemons are NOT started here: the e2e fixtures start (and stop) what they need.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(
    libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base libvirt-clients
    libvirt-dev pkg-config busybox-static cpio zstd xz-utils
)
export DEBIAN_FRONTEND=noninteractive

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-testbed: must run as root (apt, libvirtd, mount namespaces)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    echo "setup-testbed: installing ${missing[*]}"
    # Refresh the lists only when they are absent or a first attempt fails.
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        apt-get update -qq
    fi
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
else
    echo "setup-testbed: packages already installed"
fi

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
