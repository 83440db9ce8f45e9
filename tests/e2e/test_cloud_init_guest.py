"""cloud-init seeds and UEFI state on the real daemon. Objects are named ``vrt-ci-*``.

- The test bed's guest (tests/testbed/guest.py) mounts the seed cdrom when its
  command line says ``vr.seed`` and prints the ``VR-MARK-*`` words of its
  user-data: a guest boots with seed A, new user data swaps the media of the
  running guest (the old seed volume goes in the same run) and the next boot
  reads seed B.
- A UEFI domain with a vTPM keeps its NVRAM file and vTPM state through two
  redefinitions and restarts, and through a prune with the default keepState;
  keepState: false removes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.testbed.cli import vr
from tests.testbed.guest import SEED_LINE, Guest, wait_for_ready

POOL = "vrt-ci-pool"
GUEST = "vrt-ci-web"
UEFI = "vrt-ci-uefi"
# The shared daemon holds other runs' managed objects: a prune here is always
# narrowed to this file's objects by their label.
LABEL = "{vrt-test: cloud-init}"


@pytest.fixture
def conn(system_uri: str) -> Iterator[libvirt.virConnect]:
    c = libvirt.open(system_uri)
    yield c
    c.close()


def _apply(folder: Path, uri: str, *extra: str) -> dict[str, object]:
    # Another run on the shared daemon may hold the host lock for a moment.
    result = vr("apply", folder, "-c", uri, "-o", "json", "--lock-timeout", "120", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def _prune(folder: Path, uri: str) -> None:
    """Apply with --prune, narrowed to the objects of this file (``LABEL``)."""
    _apply(folder, uri, "--prune", "--force-prune", "--selector", "vrt-test=cloud-init")


def _converged(folder: Path, uri: str) -> None:
    result = vr(
        "plan", folder, "-c", uri, "--detailed-exitcode", "--selector", "vrt-test=cloud-init"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _seeds(conn: libvirt.virConnect) -> list[str]:
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    return sorted(v for v in pool.listVolumes() if v.startswith(f"{GUEST}-cidata-"))


def _write_guest(folder: Path, scratch: Path, guest: Guest, log: Path, marker: str) -> None:
    (folder / "guest.yaml").write_text(f"""\
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {{name: {POOL}, labels: {LABEL}}}
spec: {{type: dir, target: {scratch / "pool"}, state: active}}
---
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {GUEST}, labels: {LABEL}}}
spec:
  type: qemu
  machine: q35
  memory: 128MiB
  kernel:
    path: {guest.kernel}
    initrd: {guest.initrd}
    cmdline: "console=ttyS0 quiet loglevel=3 panic=-1 vr.seed"
  cloudInit:
    pool: {POOL}
    bus: scsi          # the test bed's cloud kernel has no AHCI driver
    userData: |
      #cloud-config
      # {marker}
      hostname: web
    metaData: {{local-hostname: web}}
  state: running
  xml: |
    <domain>
      <features><acpi/></features>
      <devices>
        <controller type='usb' model='none'/>
        <controller type='scsi' model='virtio-scsi'/>
        <serial type='file'><source path='{log}'/></serial>
        <memballoon model='none'/>
      </devices>
    </domain>
""")


def test_a_guest_reads_its_seed_and_new_user_data_swaps_it(
    system_uri: str, scratch_dir: Path, guest: Guest, conn: libvirt.virConnect
) -> None:
    folder = scratch_dir / "manifests"
    folder.mkdir()
    log = scratch_dir / "serial.log"
    started = time.monotonic()
    _write_guest(folder, scratch_dir, guest, log, "VR-MARK-A")
    _apply(folder, system_uri)
    dom = conn.lookupByName(GUEST)
    wait_for_ready(log, timeout=120, line=f"{SEED_LINE} VR-MARK-A", domain=dom)
    [seed_a] = _seeds(conn)
    _converged(folder, system_uri)
    first_boot = time.monotonic() - started

    # New user data: a new seed, the media of the running guest swapped, the old seed gone.
    _write_guest(folder, scratch_dir, guest, log, "VR-MARK-B")
    plan = vr("plan", folder, "-c", system_uri)
    assert f"delete Volume/{POOL}/{seed_a}" in plan.stdout, plan.stdout
    assert "old cloud-init seed of Domain/vrt-ci-web" in plan.stdout
    _apply(folder, system_uri)
    [seed_b] = _seeds(conn)
    assert seed_b != seed_a
    live = etree.fromstring(dom.XMLDesc(0).encode())
    [cdrom] = live.findall("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("volume") == seed_b
    assert cdrom.find("readonly") is not None
    assert dom.ID() > 0  # swapped live: the guest kept running
    _converged(folder, system_uri)

    # The next boot reads the new seed.
    dom.destroy()
    log.write_text("")
    restarted = time.monotonic()
    dom.create()
    wait_for_ready(log, timeout=120, line=f"{SEED_LINE} VR-MARK-B", domain=dom)
    assert "VR-MARK-A" not in log.read_text()
    print(
        f"seed e2e: first boot {first_boot:.1f}s, second boot {time.monotonic() - restarted:.1f}s"
    )

    # Deleting the domain (prune) deletes its seed.
    (folder / "guest.yaml").write_text((folder / "guest.yaml").read_text().split("---\n", 1)[0])
    _prune(folder, system_uri)
    assert _seeds(conn) == []


def _write_uefi(folder: Path, memory: str, vcpus: int, keep: str = "") -> None:
    (folder / "uefi.yaml").write_text(f"""\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {UEFI}, labels: {LABEL}}}
spec:
  type: qemu
  machine: q35
  firmware: efi
  memory: {memory}
  vcpus: {vcpus}
  state: paused        # qemu opens the NVRAM; the firmware never runs and writes nothing
{keep}  xml: |
    <domain>
      <features><acpi/></features>
      <devices>
        <controller type='usb' model='none'/>
        <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
      </devices>
    </domain>
""")


def _nvram(dom: libvirt.virDomain) -> Path:
    path = etree.fromstring(dom.XMLDesc(0).encode()).findtext("os/nvram")
    assert path, dom.XMLDesc(0)
    return Path(path)


def _tpm_state(dom: libvirt.virDomain) -> Path:
    """The vTPM's state file (swtpm keeps it under the domain's UUID)."""
    return Path("/var/lib/libvirt/swtpm") / dom.UUIDString() / "tpm2" / "tpm2-00.permall"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_uefi_nvram_survives_redefinition_restarts_and_a_default_prune(
    system_uri: str, scratch_dir: Path, conn: libvirt.virConnect
) -> None:
    folder = scratch_dir / "manifests"
    folder.mkdir()
    started = time.monotonic()
    _write_uefi(folder, "128MiB", 1)
    _apply(folder, system_uri)
    dom = conn.lookupByName(UEFI)
    nvram = _nvram(dom)
    tpm = [_tpm_state(dom)]
    try:
        assert tpm[0].exists()
        dom.destroy()
        # A recognisable pattern of the template's size, as if the guest had
        # stored its boot entries there.
        size = nvram.stat().st_size
        nvram.write_bytes((b"VR-NVRAM-" * (size // 9 + 1))[:size])
        pattern = _digest(nvram)

        # Redefined (memory), started again: the same file, untouched.
        _write_uefi(folder, "192MiB", 1)
        _apply(folder, system_uri)
        assert conn.lookupByName(UEFI).isActive()
        assert _nvram(conn.lookupByName(UEFI)) == nvram and _digest(nvram) == pattern
        # Redefined again (vcpus: the next start), stopped and started by apply.
        _write_uefi(folder, "192MiB", 2)
        _apply(folder, system_uri)
        conn.lookupByName(UEFI).destroy()
        _apply(folder, system_uri)
        assert conn.lookupByName(UEFI).info()[3] == 2
        assert _digest(nvram) == pattern
        assert _tpm_state(conn.lookupByName(UEFI)) == tpm[0] and tpm[0].exists()
        _converged(folder, system_uri)

        # Prune with the default keepState: the domain goes, its NVRAM stays.
        (folder / "uefi.yaml").unlink()
        _prune(folder, system_uri)
        assert UEFI not in [d.name() for d in conn.listAllDomains(0)]
        assert _digest(nvram) == pattern
        assert tpm[0].exists()

        # keepState: false removes it (the domain, defined again, finds it there).
        _write_uefi(folder, "192MiB", 2, keep="  keepState: false\n")
        _apply(folder, system_uri)
        assert _digest(nvram) == pattern
        # A domain defined anew has a new UUID, so a new vTPM state.
        tpm.append(_tpm_state(conn.lookupByName(UEFI)))
        assert tpm[1].exists()
        (folder / "uefi.yaml").unlink()
        _prune(folder, system_uri)
        assert not nvram.exists()
        assert not tpm[1].exists()
        print(f"uefi e2e: {time.monotonic() - started:.1f}s")
    finally:
        nvram.unlink(missing_ok=True)
        for state in tpm:
            shutil.rmtree(state.parent.parent, ignore_errors=True)
