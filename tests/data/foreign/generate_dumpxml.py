"""Regenerate ``tests/data/foreign/dumpxml/``: domain XML as libvirt itself writes it.

What users keep in git when they copy a guest made in virt-manager (or by any tool) is
``virsh dumpxml --inactive`` output: every default filled in, controllers with indexes,
root ports with chassis/port, a PCI address on every device, the expanded machine name.
This script defines every third virt-install document of the corpus on the real
``qemu:///system`` under the name ``vrf-dx-*`` (without UUID and MACs, so libvirt picks
new ones), writes ``virsh dumpxml --inactive`` of it, and undefines it again.

    .venv/bin/python tests/data/foreign/generate_dumpxml.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.testbed import daemon  # noqa: E402

SOURCE = HERE / "virt-install"
OUT = HERE / "dumpxml"
URI = "qemu:///system"


def _virsh(*args: str, stdin: str | None = None) -> str:
    r = subprocess.run(
        ["virsh", "-q", "-c", URI, *args], input=stdin, capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def dump(path: Path) -> tuple[str, str]:
    name = path.stem.replace("vrf-vi-", "vrf-dx-")
    xml = path.read_text()
    xml = re.sub(r"<name>[^<]+</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"\s*<uuid>[^<]+</uuid>", "", xml, count=1)
    xml = re.sub(r"\s*<mac address=\"[^\"]+\"/>", "", xml)
    tmp = OUT / f".{name}.in.xml"
    tmp.write_text(xml)
    try:
        _virsh("define", str(tmp))
        try:
            return name, _virsh("dumpxml", "--inactive", name)
        finally:
            _virsh("undefine", "--nvram", name)
    finally:
        tmp.unlink()


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.xml"):
        old.unlink()
    failed = 0
    with daemon.exclusive_session():
        daemon.ensure_system_libvirtd()
        try:
            for path in sorted(SOURCE.glob("vrf-vi-*.xml"))[::3]:
                try:
                    name, xml = dump(path)
                except RuntimeError as e:
                    print(f"{path.name}: {e}", file=sys.stderr)
                    failed += 1
                    continue
                (OUT / f"{name}.xml").write_text(xml)
                print(f"{name}.xml")
        finally:
            daemon.stop_all()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
