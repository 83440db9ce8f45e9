#!/usr/bin/env bash
# Install what virt-reconcile and its tests need on a Debian machine. Idempotent.
#   - Debian packages that are missing (libvirt daemon + client, QEMU, build deps
#     of libvirt-python, busybox/cpio for the test guest, chromium for the status page test)
#   - a virtualenv in .venv with virt-reconcile (editable) and its test tools
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(
    python3 python3-venv python3-dev gcc pkg-config libvirt-dev
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base
    busybox-static cpio zstd xz-utils
    ovmf swtpm swtpm-tools
    time  # GNU time: peak RSS of a measured process (benchmarks/measure.py)
    etcd-server  # the coordination backend of tests/e2e/test_replicas.py (started per test)
    chromium  # headless: renders watch's status page in tests/integration/test_status_page.py
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "install: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
        # The package starts a system etcd on :2379 where it can; tests start their own
        # (private port and data dir), so leave none running and none enabled.
        if [[ -d /run/systemd/system ]]; then
            $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
        else
            $SUDO /etc/init.d/etcd stop >/dev/null 2>&1 || true
        fi
    fi
fi
$SUDO mkdir -p /var/log/libvirt/qemu

cd "$REPO"
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
echo "install: ready (.venv)"
