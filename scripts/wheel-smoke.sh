#!/usr/bin/env bash
# The package as a user gets it: build the wheel from the working tree, install
# it (not editable) into a fresh venv, and run `validate` and `plan` from a
# folder outside the checkout, so nothing can come from the repository itself
# (the JSON Schemas must come from the wheel).
#
# Fast on every run: the dependencies' wheels are kept in a cache folder
# ($VIRT_RECONCILE_WHEEL_CACHE, default ~/.cache/virt-reconcile/wheels) and
# installed with --no-index from there. libvirt-python has no wheel on PyPI; it
# is built from source (gcc, pkg-config, libvirt-dev) once, into that cache. A
# --system-site-packages venv would be quicker still, but would also see
# Debian's python3-* packages, so a dependency missing from pyproject.toml
# could go unnoticed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_PY="${PYTHON:-$REPO/.venv/bin/python}"  # has setuptools>=77 (the test extra)
CACHE="${VIRT_RECONCILE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virt-reconcile/wheels}"
WORK="$(mktemp -d /tmp/vr-wheel.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE" "$WORK/src" "$WORK/dist" "$WORK/elsewhere/examples"

# 1. The wheel, built from a copy of the sources (an in-tree build would leave
#    build/ behind, whose stale files could end up in a later wheel).
cp "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/LICENSE" "$WORK/src/"
cp -r "$REPO/reconciler" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$DEV_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >/dev/null
WHEEL="$(ls "$WORK"/dist/virt_reconcile-*.whl)"

# 2. Wheels of its dependencies: from the cache; fetched (and built) only when missing.
mapfile -t REQS < <("$DEV_PY" - "$WHEEL" <<'PY'
import email, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = email.message_from_bytes(zf.read(meta))
for req in msg.get_all("Requires-Dist", []):
    if "extra ==" not in req:
        print(req)
PY
)
if ! "$DEV_PY" -m pip wheel -q --no-index --find-links "$CACHE" -w "$CACHE" "${REQS[@]}" \
    >/dev/null 2>&1; then
    echo "wheel-smoke: filling the wheel cache $CACHE (libvirt-python builds from source once)"
    "$DEV_PY" -m pip wheel -q --find-links "$CACHE" -w "$CACHE" "${REQS[@]}" >/dev/null
fi

# 3. A fresh venv with the wheel, not editable, no network. (The venv gets no pip
#    of its own: the dev venv's pip installs into it, which saves ~10 s a run.)
python3 -m venv --without-pip "$WORK/venv"
"$DEV_PY" -m pip --python "$WORK/venv/bin/python" install -q --no-compile --no-index \
    --find-links "$CACHE" "$WHEEL"

# 4. The README's first commands, from a folder outside the checkout.
cp -r "$REPO/examples/manifests" "$WORK/elsewhere/examples/"
cd "$WORK/elsewhere"
installed="$(env -u PYTHONPATH "$WORK/venv/bin/python" -c 'import reconciler; print(reconciler.__file__)')"
case "$installed" in
    "$WORK/venv/"*) ;;
    *) echo "wheel-smoke: reconciler imported from $installed, not the venv" >&2; exit 1 ;;
esac
"$WORK/venv/bin/virt-reconcile" --version
"$WORK/venv/bin/virt-reconcile" validate examples/manifests
"$WORK/venv/bin/virt-reconcile" plan examples/manifests -c test:///default >/dev/null
echo "wheel-smoke: $(basename "$WHEEL") installs and runs from a fresh venv"
