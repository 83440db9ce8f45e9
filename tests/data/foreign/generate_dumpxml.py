"""Regenerate ``tests/data/foreign/dumpxml/``: domain XML as libvirt itself writes it.

What users keep in git when they copy a guest made in virt-manager (or by any tool) is
``virsh dumpxml --inactive`` output: every default filled in, controllers with indexes,
root ports with chassis/port, a PCI address on every device, the expanded machine name.
This script defines every third virt-install document of the corpus on the real
``qemu:///system`` under the name ``vrf-dx-*`` (without UUID and MACs, so libvirt picks
new ones), writes ``virsh dumpxml --inactive`` of it, and undefines it again.

Some people save a *running* guest instead (``virsh dumpxml NAME > NAME.xml``): ids,
aliases, the VNC/SPICE ports in use, dynamic seclabels.  For a few documents
(``LIVE``) the disks and NICs are dropped, the test bed's tiny guest kernel is
booted instead (``tests/testbed/guest.py``) under TCG, and the live XML is written as
``vrf-live-*``; the guest is destroyed and undefined right after.

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

from tests.testbed import daemon, guest  # noqa: E402

SOURCE = HERE / "virt-install"
OUT = HERE / "dumpxml"
URI = "qemu:///system"
LIVE = (
    "vrf-vi-vnc-password", "vrf-vi-vnc-keymap", "vrf-vi-channel-qemu-ga", "vrf-vi-q35-uefi",
    "vrf-vi-tpm-emulator", "vrf-vi-serial-console", "vrf-vi-pc-everything", "vrf-vi-headless",
)  # fmt: skip


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


def dump_live(path: Path, kernel: Path, initrd: Path) -> tuple[str, str]:
    name = path.stem.replace("vrf-vi-", "vrf-live-")
    xml = path.read_text()
    xml = re.sub(r"<name>[^<]+</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"\s*<uuid>[^<]+</uuid>", "", xml, count=1)
    xml = re.sub(r"\s*<(disk|interface)\b.*?</\1>", "", xml, flags=re.S)
    xml = re.sub(r"\s*<boot dev=\"[a-z]+\"/>", "", xml)
    # TCG: this host's KVM cannot run host-passthrough guests (nested MSRs)
    xml = xml.replace('<domain type="kvm">', '<domain type="qemu">', 1)
    xml = re.sub(r"\s*<cpu mode=\"host-passthrough\"/>", "", xml)
    boot = (
        f"<kernel>{kernel}</kernel>\n    <initrd>{initrd}</initrd>\n"
        "    <cmdline>console=ttyS0</cmdline>"
    )
    xml = re.sub(r"(<type [^>]*>hvm</type>)", rf"\1\n    {boot}", xml, count=1)
    tmp = OUT / f".{name}.in.xml"
    tmp.write_text(xml)
    try:
        _virsh("define", str(tmp))
        try:
            _virsh("start", name)
            return name, _virsh("dumpxml", name)
        finally:
            subprocess.run(["virsh", "-q", "-c", URI, "destroy", name], capture_output=True)
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
            tiny = guest.build_guest()
            for stem in LIVE:
                try:
                    name, xml = dump_live(SOURCE / f"{stem}.xml", tiny.kernel, tiny.initrd)
                except RuntimeError as e:
                    print(f"{stem}: {e}", file=sys.stderr)
                    failed += 1
                    continue
                (OUT / f"{name}.xml").write_text(xml)
                print(f"{name}.xml")
        finally:
            daemon.stop_all()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
