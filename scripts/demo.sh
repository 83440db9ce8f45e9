#!/usr/bin/env bash
# The main job: install, then apply examples/manifests to a local libvirtd (started
# here when none answers and one can be started), else to test:///default; show the
# plan, the changes and the converged check.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/install.sh
VR=(.venv/bin/python -m reconciler)

uri="test:///default"
if timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; then
    uri="qemu:///system"
elif [[ $(id -u) -eq 0 ]] && command -v libvirtd >/dev/null; then
    mkdir -p /var/log/libvirt
    # Without systemd nothing starts virtlogd, which QEMU domains need.
    pgrep -x virtlogd >/dev/null || virtlogd -d || true
    libvirtd -d || true
    for _ in $(seq 1 30); do
        if timeout 5 virsh -c qemu:///system version >/dev/null 2>&1; then uri="qemu:///system"; break; fi
        sleep 1
    done
fi
echo "== host: $uri"
echo "== validate"
"${VR[@]}" validate examples/manifests
echo "== plan"
"${VR[@]}" plan examples/manifests -c "$uri" || true
echo "== apply (re-reads the host and re-plans at the end: the converged check)"
"${VR[@]}" apply examples/manifests -c "$uri" -v
if [[ $uri != test:///default ]]; then
    echo "== plan --detailed-exitcode (0: nothing left to do)"
    "${VR[@]}" plan examples/manifests -c "$uri" --detailed-exitcode
    echo "converged: plan exit code 0"
fi
