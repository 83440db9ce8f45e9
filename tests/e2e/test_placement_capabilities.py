"""Placement on two real, isolated libvirtds: domain capabilities, and a real rollback.

Host A's daemon sees an empty ``/usr/share/qemu/firmware`` (in its own mount
namespace only), so its ``getDomainCapabilities`` offers no ``efi`` firmware;
host B is a stock daemon. Each daemon has its own ``/var/lib/libvirt``, so a
disk image under it exists on one host only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from tests.testbed.cli import vr
from tests.testbed.daemon import IsolatedHost

HEAD = "apiVersion: virt-reconcile/v1\n"
# UEFI on x86 needs ACPI.
EFI = "  firmware: efi\n  xml: '<domain><features><acpi/></features></domain>'\n"


@pytest.fixture(scope="module")
def pair(isolated_hosts: Callable[..., list[IsolatedHost]]) -> list[IsolatedHost]:
    return isolated_hosts(2, prefix="vrplace", hide={0: ["/usr/share/qemu/firmware"]})


def _folder(tmp_path: Path, hosts: list[IsolatedHost], *docs: str) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    host_docs = [
        f'{HEAD}kind: Host\nmetadata: {{name: {h.name}}}\nspec: {{uri: "{h.uri}"}}\n' for h in hosts
    ]
    (folder / "all.yaml").write_text("---\n".join([*host_docs, *docs]))
    return folder


def _domain(name: str, a: IsolatedHost, b: IsolatedHost, extra: str) -> str:
    return (
        f"{HEAD}kind: Domain\nmetadata: {{name: {name}}}\n"
        f"spec:\n  placement: {{hosts: [{a.name}, {b.name}]}}\n  type: qemu\n"
        f"  machine: q35\n  memory: 64MiB\n{extra}"
    )


def _domains(uri: str) -> dict[str, bool]:
    conn = libvirt.open(uri)
    try:
        return {d.name(): bool(d.isActive()) for d in conn.listAllDomains()}
    finally:
        conn.close()


def _firmware(uri: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        caps = etree.fromstring(conn.getDomainCapabilities(None, "x86_64", "q35", "qemu", 0))
    finally:
        conn.close()
    return {v.text or "" for v in caps.iterfind("os/enum[@name='firmware']/value")}


def _action(doc: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    [hp] = [h for h in doc["hosts"] if h["host"] == host]
    return dict([a for a in hp["actions"] if a["name"] == name][-1])


def _remove(uri: str, name: str) -> None:
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


def test_a_domain_goes_to_the_candidate_whose_capabilities_support_it_and_stays(
    pair: list[IsolatedHost], tmp_path: Path
) -> None:
    a, b = pair
    # The premise, read from the daemons themselves: only b offers efi.
    assert "efi" not in _firmware(a.uri) and "efi" in _firmware(b.uri)
    folder = _folder(tmp_path, pair, _domain("vrt-efi", a, b, EFI))
    planned = vr("plan", folder, "-o", "json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    action = _action(json.loads(planned.stdout), b.name, "vrt-efi")
    assert action["action"] == "create" and action["placement"]["host"] == b.name
    assert action["placement"]["skipped"] == {a.name: "capabilities: no efi firmware"}
    try:
        applied = vr("apply", folder)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "vrt-efi" in _domains(b.uri) and "vrt-efi" not in _domains(a.uri)
        # Stays on b: nothing to do on the next runs, nothing appears on a.
        again = vr("plan", folder, "--detailed-exitcode", "-o", "json")
        assert again.returncode == 0, again.stdout + again.stderr
        kept = _action(json.loads(again.stdout), b.name, "vrt-efi")
        assert kept["placement"]["reason"] == "exists there"
        assert vr("apply", folder).returncode == 0
        assert "vrt-efi" not in _domains(a.uri)
    finally:
        _remove(b.uri, "vrt-efi")


def test_a_machine_no_candidate_has_is_a_plan_time_error(
    pair: list[IsolatedHost], tmp_path: Path
) -> None:
    a, b = pair
    doc = _domain("vrt-nomachine", a, b, "").replace("machine: q35", "machine: pc-q35-99.0")
    result = vr("plan", _folder(tmp_path, pair, doc), "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    action = _action(json.loads(result.stdout), a.name, "vrt-nomachine")
    assert "no candidate host fits" in action["error"]
    skipped = action["placement"]["skipped"]
    assert set(skipped) == {a.name, b.name}
    assert all("'pc-q35-99.0' is not supported" in why for why in skipped.values())
    result = vr("apply", _folder(tmp_path, pair, doc))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "vrt-nomachine" not in {**_domains(a.uri), **_domains(b.uri)}


def test_a_start_that_fails_on_the_first_candidate_is_rolled_back_there(
    pair: list[IsolatedHost], tmp_path: Path
) -> None:
    a, b = pair
    # The image exists in b's /var/lib/libvirt only: a defines the domain, then
    # cannot start it.
    images = b.workdir / "lib" / "images"
    images.mkdir(parents=True, exist_ok=True)
    (images / "vrt-placed.raw").write_bytes(b"\0" * (1 << 20))
    disk = (
        "  state: running\n  disks:\n    - target: vda\n      bus: virtio\n      format: raw\n"
        "      source: {file: /var/lib/libvirt/images/vrt-placed.raw}\n"
    )
    folder = _folder(tmp_path, pair, _domain("vrt-rollback", a, b, disk))
    try:
        result = vr("apply", folder, "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        on_a = _action(doc, a.name, "vrt-rollback")
        assert on_a["result"] == "rolled-back"
        assert "vrt-placed.raw" in on_a["error"] and "rolled back" in on_a["error"]
        assert on_a["calls"].get("defineXMLFlags") == 1 and on_a["calls"].get("undefineFlags") == 1
        on_b = _action(doc, b.name, "vrt-rollback")
        assert on_b["result"] == "ok" and a.name in on_b["placement"]["skipped"]
        assert "vrt-rollback" not in _domains(a.uri)
        assert _domains(b.uri)["vrt-rollback"] is True
        assert vr("plan", folder, "--detailed-exitcode").returncode == 0
    finally:
        _remove(b.uri, "vrt-rollback")
        _remove(a.uri, "vrt-rollback")
