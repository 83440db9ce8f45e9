"""Complete documents that libvirt did not write (SPEC §4 "Complete documents").

Each document here is written the way virt-install and hand-written XML write
it (hex numbers, upper-case UUIDs, ``port='-1'``, bind sockets without a path,
controllers without an index, NICs without a MAC). It is defined on a
file-backed test host with libvirt directly, as ``virsh define`` would, and
then its own manifest (nothing but ``spec.xml``) is planned and applied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from reconciler import hosts
from reconciler.model import Kind
from tests.integration.conftest import Run

DOMAIN = """\
<domain type="kvm">
  <name>vrf-doc-1</name>
  <uuid>8F2B4AC2-0E1B-4B64-9D39-6C1F0E0A3B11</uuid>
  <memory unit="MiB">512</memory>
  <currentMemory unit="MiB">512</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    <boot dev="hd"/>
  </os>
  <features><acpi/><apic/><vmport state="off"/></features>
  <cpu mode="host-passthrough"/>
  <clock offset="utc"><timer name="rtc" tickpolicy="catchup"/></clock>
  <pm><suspend-to-mem enabled="no"/><suspend-to-disk enabled="no"/></pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2" discard="unmap"/>
      <source file="/var/lib/libvirt/images/vrf-doc-1.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <controller type="usb" model="qemu-xhci" ports="15"/>
    <controller type="pci" model="pcie-root"/>
    <controller type="pci" model="pcie-root-port"/>
    <controller type="pci" model="pcie-root-port"/>
    <controller type="pci" model="pcie-root-port"/>
    <interface type="network">
      <source network="default"/>
      <model type="virtio"/>
    </interface>
    <console type="pty"/>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="org.qemu.guest_agent.0"/>
    </channel>
    <input type="tablet" bus="usb"/>
    <graphics type="vnc" port="-1" autoport="yes"/>
    <video><model type="virtio"/></video>
    <hostdev mode="subsystem" type="pci" managed="yes">
      <source><address domain="0x0000" bus="0x1" slot="0x00" function="0x0"/></source>
    </hostdev>
    <memballoon model="virtio"/>
    <rng model="virtio"><backend model="random">/dev/urandom</backend></rng>
  </devices>
</domain>
"""

NETWORK = """\
<network>
  <name>vrf-doc-net</name>
  <forward mode="nat"/>
  <ip address="10.77.0.1" netmask="255.255.255.0">
    <dhcp>
      <range start="10.77.0.100" end="10.77.0.200"/>
      <host mac="52:54:00:AA:00:01" name="a" ip="10.77.0.5"/>
    </dhcp>
  </ip>
  <ip family="ipv6" address="fd00:77::1" prefix="64"/>
</network>
"""

POOL = """\
<pool type="dir">
  <name>vrf-doc-pool</name>
  <target><path>/var/lib/libvirt/images/vrf-doc-pool</path></target>
</pool>
"""


def _manifest(kind: str, name: str, xml: str, **extra: Any) -> str:
    spec = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    body = textwrap.indent(xml, "    ")
    return (
        f"apiVersion: virt-reconcile/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
        f"spec:\n{spec}  xml: |\n{body}"
    )


def _write(folder: Path, docs: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "objects.yaml").write_text("---\n".join(docs))
    return folder


def _actions(run: Run, folder: Path, uri: str) -> dict[str, dict[str, Any]]:
    code, out, err = run("plan", folder, "-c", uri, "-o", "json")
    assert code == 0, out + err
    return {f"{a['kind']}/{a['name']}": a for a in json.loads(out)["hosts"][0]["actions"]}


def _define_all(c: libvirt.virConnect) -> None:
    c.defineXML(DOMAIN)
    c.networkDefineXML(NETWORK)
    c.storagePoolDefineXML(POOL, 0)


DOCS = [
    _manifest("Domain", "vrf-doc-1", DOMAIN),
    _manifest("Network", "vrf-doc-net", NETWORK),
    _manifest("StoragePool", "vrf-doc-pool", POOL),
]


def test_documents_defined_by_hand_plan_as_adopt_without_a_change(
    tmp_path: Path, host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    _define_all(conn(host_uri))
    folder = _write(tmp_path / "m", DOCS)
    code, out, err = run("validate", folder)
    assert code == 0, out + err  # no memory, type or state beside the documents
    actions = _actions(run, folder, host_uri)
    assert {ref: (a["action"], a["changes"]) for ref, a in actions.items()} == {
        "Domain/vrf-doc-1": ("adopt", []),
        # Absent state is not managed on an object that exists: no start.
        "Network/vrf-doc-net": ("adopt", []),
        "StoragePool/vrf-doc-pool": ("adopt", []),
    }
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 0, out + err
    c = conn(host_uri)
    assert not c.networkLookupByName("vrf-doc-net").isActive()
    # Adopted: the NIC keeps the MAC libvirt gave it at define.
    assert {a["action"] for a in _actions(run, folder, host_uri).values()} == {"unchanged"}


def test_one_edit_in_a_document_is_exactly_that_change(
    tmp_path: Path, host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    _define_all(conn(host_uri))
    edited = [
        _manifest(
            "Domain",
            "vrf-doc-1",
            DOMAIN.replace('unit="MiB">512</memory>', 'unit="MiB">768</memory>'),
        ),
        _manifest("Network", "vrf-doc-net", NETWORK.replace("10.77.0.200", "10.77.0.150")),
        _manifest(
            "StoragePool", "vrf-doc-pool", POOL.replace("vrf-doc-pool</path>", "other</path>")
        ),
    ]
    actions = _actions(run, _write(tmp_path / "m", edited), host_uri)
    changes = {
        ref: [(c["path"], c["old"], c["new"]) for c in a["changes"]] for ref, a in actions.items()
    }
    assert changes == {
        "Domain/vrf-doc-1": [("memory", "524288", "786432")],
        "Network/vrf-doc-net": [
            (
                "ip[address=10.77.0.1]/dhcp/range[start=10.77.0.100]/@end",
                "10.77.0.200",
                "10.77.0.150",
            )
        ],
        "StoragePool/vrf-doc-pool": [
            ("target/path", "/var/lib/libvirt/images/vrf-doc-pool", "/var/lib/libvirt/images/other")
        ],
    }


def test_a_friendly_field_beside_a_document_overrides_it(
    tmp_path: Path, host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    _define_all(conn(host_uri))
    docs = [_manifest("Domain", "vrf-doc-1", DOMAIN, memory="1GiB", vcpus=2)]
    actions = _actions(run, _write(tmp_path / "m", docs), host_uri)
    changes = actions["Domain/vrf-doc-1"]["changes"]
    assert [(c["path"], c["new"]) for c in changes] == [("memory", "1048576")]


def test_documents_applied_to_an_empty_host_converge(
    tmp_path: Path, host_uri: str, run: Run
) -> None:
    folder = _write(tmp_path / "m", DOCS)
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 0, out + err
    assert "Converged" in out
    code, out, err = run("plan", folder, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err


def test_document_name_must_match_metadata_name(tmp_path: Path, run: Run) -> None:
    folder = _write(tmp_path / "m", [_manifest("Domain", "other", DOMAIN)])
    code, _out, err = run("validate", folder)
    assert code == 1
    # The line of <name> inside the document, as a line of the file.
    assert f"{folder / 'objects.yaml'}:7: spec.xml: the document's <name> is 'vrf-doc-1'" in err


def test_an_overlay_without_memory_is_refused_with_the_field(tmp_path: Path, run: Run) -> None:
    docs = [_manifest("Domain", "vrf-x", "<domain><features><acpi/></features></domain>\n")]
    code, _out, err = run("validate", _write(tmp_path / "m", docs))
    assert code == 1
    assert "objects.yaml:4: spec.memory: a domain needs memory" in err


def test_libvirts_parser_normalises_a_private_copy() -> None:
    """``hosts.normalise`` reads a document back as libvirt stores it, without
    touching any host (test:///default included)."""
    before = [d.name() for d in libvirt.open("test:///default").listAllDomains()]
    text = hosts.normalise(Kind.DOMAIN, DOMAIN)
    assert text is not None
    assert "8f2b4ac2-0e1b-4b64-9d39-6c1f0e0a3b11" in text  # lower case
    assert "bus='0x01'" in text  # libvirt's spelling of 0x1
    assert "mode='bind'" not in text  # a bind socket without a path: dropped
    assert [d.name() for d in libvirt.open("test:///default").listAllDomains()] == before
    assert hosts.normalise(Kind.DOMAIN, "<domain type='kvm'><name>x</name></domain>") is None


def test_the_parsers_reading_is_cached_on_disk(tmp_path: Path) -> None:
    """A second process reads the normalised document from the cache folder."""
    env = {**os.environ, "VIRT_RECONCILE_CACHE_DIR": str(tmp_path)}
    script = (
        "import sys; from reconciler.hosts.normalise import normalise;"
        "from reconciler.model import Kind;"
        "print(normalise(Kind.NETWORK, sys.stdin.read()))"
    )
    doc = NETWORK.replace("vrf-doc-net", "vrf-cache-net")
    first = subprocess.run(
        [sys.executable, "-c", script], input=doc, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    (cached,) = list((tmp_path / "normalised").glob("*/*"))
    assert cached.read_text().strip() == first.stdout.strip()
    cached.write_text("<network><name>from-the-cache</name></network>")
    second = subprocess.run(
        [sys.executable, "-c", script], input=doc, env=env, capture_output=True, text=True
    )
    assert "from-the-cache" in second.stdout


def test_verbose_plan_says_when_a_document_is_compared_as_written(
    tmp_path: Path, host_uri: str, run: Run
) -> None:
    # The test driver refuses an rbd pool without a monitor host.
    pool = (
        "<pool type='rbd'>\n  <name>vrf-rbd</name>\n  <source><name>rbd</name></source>\n</pool>\n"
    )
    folder = _write(tmp_path / "m", [_manifest("StoragePool", "vrf-rbd", pool), DOCS[1]])
    code, out, err = run("plan", folder, "-c", host_uri, "-v")
    assert code == 0, err
    assert out.count("compared as written") == 1
    assert out.index("StoragePool/vrf-rbd") < out.index("compared as written")
    code, out, err = run("plan", folder, "-c", host_uri)
    assert "compared as written" not in out
