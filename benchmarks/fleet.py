"""The benchmark fleet: N domains plus networks, pools and volumes in proportion.

* :class:`Fleet` names every object (``PREFIX-…``): N domains, N/50 networks
  (isolated bridges: no IP, so no dnsmasq), N/100 directory pools, N/10 volumes
  (raw, 1 MiB); domain *i* < N/10 boots from volume *i*, the others from a file.
* :func:`write_manifests` writes them as a folder: ``infra.yaml`` plus one file per
  domain (what ``watch`` sees a GitOps repository change one file of).
* :func:`test_host_xml` writes a file-backed test-driver host that already holds
  the converged fleet, with virt-reconcile's ownership records, so a no-op plan at
  5,000 domains needs no apply first (an apply of that size on the test driver
  takes minutes). The objects are made from the XML a real ``apply`` of a
  two-domain seed fleet wrote, renamed per object.
* :func:`cleanup` removes everything named ``PREFIX…`` on a host and nothing else.

This module imports neither virt-reconcile nor rich: the floor process imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "vrbench-"
IMAGES = Path("/var/lib/libvirt/images")


@dataclass(frozen=True)
class Fleet:
    domains: int
    prefix: str = PREFIX
    host: str | None = None  # a Host document's name (spec.host), else -c URI
    infra: bool = True  # False: domains only (no NIC, disks are files), as for Ansible

    @property
    def networks(self) -> int:
        return max(1, self.domains // 50) if self.infra else 0

    @property
    def pools(self) -> int:
        return max(1, self.domains // 100) if self.infra else 0

    @property
    def volumes(self) -> int:
        return max(1, self.domains // 10) if self.infra else 0

    @property
    def objects(self) -> int:
        return self.domains + self.networks + self.pools + self.volumes

    def domain(self, i: int) -> str:
        return f"{self.prefix}d{i:05d}"

    def network(self, j: int) -> str:
        return f"{self.prefix}n{j:03d}"

    def bridge(self, j: int) -> str:
        # Linux interface names: 15 characters at most, unique on the machine (the
        # isolated daemons of the 4-host rows share its network namespace).
        tag = hashlib.sha256(self.prefix.encode()).hexdigest()[:5]
        return f"vrb{tag}{j:03d}"

    def pool(self, k: int) -> str:
        return f"{self.prefix}p{k:03d}"

    def volume(self, m: int) -> str:
        return f"{self.prefix}v{m:05d}.img"

    def pool_of_volume(self, m: int) -> int:
        return m % self.pools


def _host_line(fleet: Fleet) -> str:
    return f"host: {fleet.host}, " if fleet.host else ""


def mac(name: str) -> str:
    """A domain's MAC: explicit and locally administered (02:…) with 5 bytes of a hash
    of its name, because MACs derived from 5,000 names (3 bytes of a hash) collide,
    which virt-reconcile refuses as an error."""
    digest = hashlib.sha256(name.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def domain_doc(fleet: Fleet, i: int, memory_mib: int = 256) -> str:
    if i < fleet.volumes:
        pool = fleet.pool(fleet.pool_of_volume(i))
        source = f"{{volume: {{pool: {pool}, name: {fleet.volume(i)}}}}}"
    else:
        source = f"{{file: {IMAGES}/{fleet.domain(i)}.img}}"
    host = f"\n  host: {fleet.host}" if fleet.host else ""
    nic = (
        f"\n  interfaces:\n    - {{name: lan, network: {fleet.network(i % fleet.networks)}, "
        f"model: virtio, mac: '{mac(fleet.domain(i))}'}}"
        if fleet.infra
        else ""
    )
    return f"""apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: {fleet.domain(i)}, labels: {{tier: bench}}}}
spec:{host}
  type: qemu
  machine: q35
  memory: {memory_mib}MiB
  vcpus: 2
  disks:
    - {{target: vda, bus: virtio, format: raw, source: {source}}}{nic}
  consoles: [{{type: pty}}]
  graphics: [{{type: vnc, listen: 127.0.0.1}}]
"""


def infra_docs(fleet: Fleet) -> list[str]:
    h = _host_line(fleet)
    docs = []
    for j in range(fleet.networks):
        docs.append(
            "apiVersion: virt-reconcile/v1\nkind: Network\n"
            f"metadata: {{name: {fleet.network(j)}}}\n"
            f"spec: {{{h}forward: none, bridge: {fleet.bridge(j)}, state: active}}\n"
        )
    for k in range(fleet.pools):
        docs.append(
            "apiVersion: virt-reconcile/v1\nkind: StoragePool\n"
            f"metadata: {{name: {fleet.pool(k)}}}\n"
            f"spec: {{{h}type: dir, target: {IMAGES}/{fleet.pool(k)}, state: active}}\n"
        )
    for m in range(fleet.volumes):
        docs.append(
            "apiVersion: virt-reconcile/v1\nkind: Volume\n"
            f"metadata: {{name: {fleet.volume(m)}}}\n"
            f"spec: {{{h}pool: {fleet.pool(fleet.pool_of_volume(m))}, "
            "capacity: 1MiB, format: raw}\n"
        )
    return docs


def domain_file(folder: Path, fleet: Fleet, i: int) -> Path:
    return folder / f"{fleet.domain(i)}.yaml"


def write_manifests(folder: Path, fleet: Fleet, hosts: dict[str, str] | None = None) -> Path:
    """One folder: ``hosts.yaml`` (if ``hosts``: name → URI), infra and one file per domain."""
    folder.mkdir(parents=True, exist_ok=True)
    if hosts:
        (folder / "hosts.yaml").write_text(
            "---\n".join(
                f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: {name}}}\n"
                f"spec: {{uri: {json.dumps(uri)}}}\n"
                for name, uri in hosts.items()
            )
        )
    if fleet.infra:
        (folder / f"{fleet.prefix}infra.yaml").write_text("---\n".join(infra_docs(fleet)))
    for i in range(fleet.domains):
        domain_file(folder, fleet, i).write_text(domain_doc(fleet, i))
    return folder


# --------------------------------------------------------------------------- test host

_TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


@dataclass(frozen=True)
class Seed:
    """The XML a real apply of a two-domain fleet wrote on a test-driver host."""

    fleet: Fleet
    domain_volume: str  # domain 0: its disk is volume 0
    domain_file: str  # domain 1: its disk is a file
    network: str
    registry: dict[str, Any]
    pool: str
    volume: str


def read_seed(conn: Any, fleet: Fleet) -> Seed:
    """Read the seed fleet (2 domains, 1 network, 1 pool, 1 volume) back from ``conn``."""
    import libvirt

    registry = conn.networkLookupByName("virt-reconcile-registry").XMLDesc(0)
    found = re.search(r"<vr:registry[^>]*>(.*)</vr:registry>", registry, re.S)
    if found is None:
        raise RuntimeError("the seed host has no virt-reconcile registry")
    pool = conn.storagePoolLookupByName(fleet.pool(0))
    return Seed(
        fleet=fleet,
        domain_volume=conn.lookupByName(fleet.domain(0)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
        domain_file=conn.lookupByName(fleet.domain(1)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
        network=conn.networkLookupByName(fleet.network(0)).XMLDesc(0),
        registry=json.loads(found.group(1)),
        pool=pool.XMLDesc(0),
        volume=pool.storageVolLookupByName(fleet.volume(0)).XMLDesc(0),
    )


def _rename(xml: str, pairs: list[tuple[str, str]]) -> str:
    """The seed's XML renamed; its UUID (if any) one derived from the new XML, so
    that every load of the host file reads the same UUID, as a real host does
    (without one, the test driver makes up another on each load)."""
    had_uuid = "<uuid>" in xml
    xml = re.sub(r"\s*<uuid>[^<]*</uuid>", "", xml)
    for old, new in pairs:
        xml = xml.replace(old, new)
    if not had_uuid:
        return xml
    stable = uuid.uuid5(uuid.NAMESPACE_URL, xml)
    return re.sub(r"(<name>[^<]*</name>)", rf"\1\n  <uuid>{stable}</uuid>", xml, count=1)


def test_host_xml(path: Path, seed: Seed, fleet: Fleet) -> Path:
    """Write a test-driver host holding ``fleet`` converged (domains shut off)."""
    s = seed.fleet
    mac_seed = {
        0: re.search(r"<mac address='([^']+)'", seed.domain_volume),
        1: re.search(r"<mac address='([^']+)'", seed.domain_file),
    }
    parts = [f"<node xmlns:test='{_TEST_NS}'>"]
    for i in range(fleet.domains):
        which = 0 if i < fleet.volumes else 1
        template = seed.domain_volume if which == 0 else seed.domain_file
        mac_in_seed = mac_seed[which]
        assert mac_in_seed is not None
        pairs = [
            (mac_in_seed.group(1), mac(fleet.domain(i))),
            (s.domain(which), fleet.domain(i)),
            (f"'{s.network(0)}'", f"'{fleet.network(i % fleet.networks)}'"),
        ]
        if which == 0:
            pairs += [
                (f"'{s.volume(0)}'", f"'{fleet.volume(i)}'"),
                (f"'{s.pool(0)}'", f"'{fleet.pool(fleet.pool_of_volume(i))}'"),
            ]
        else:
            pairs.append((f"/{s.domain(1)}.img", f"/{fleet.domain(i)}.img"))
        xml = _rename(template, pairs)
        xml = re.sub(r"\s*<target dev='testnet\d+'/>", "", xml)
        xml = xml.replace(
            "<domain type='qemu'>",
            f"<domain type='qemu' xmlns:test='{_TEST_NS}'>\n  <test:runstate>5</test:runstate>",
            1,
        )
        parts.append(xml)
    for j in range(fleet.networks):
        parts.append(
            _rename(
                seed.network,
                [(f">{s.network(0)}<", f">{fleet.network(j)}<"), (s.bridge(0), fleet.bridge(j))],
            )
        )
    pools: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    pool_record = seed.registry["pools"][s.pool(0)]
    volume_record = seed.registry["volumes"][f"{s.pool(0)}/{s.volume(0)}"]
    for k in range(fleet.pools):
        pools[fleet.pool(k)] = pool_record
        members = [
            _rename(seed.volume, [(s.volume(0), fleet.volume(m)), (s.pool(0), fleet.pool(k))])
            for m in range(fleet.volumes)
            if fleet.pool_of_volume(m) == k
        ]
        for m in range(fleet.volumes):
            if fleet.pool_of_volume(m) == k:
                volumes[f"{fleet.pool(k)}/{fleet.volume(m)}"] = volume_record
        pool = _rename(seed.pool, [(s.pool(0), fleet.pool(k))])
        parts.append(pool.replace("</pool>", "".join(members) + "</pool>"))
    registry = {**seed.registry, "pools": pools, "volumes": volumes}
    parts.append(
        "<network><name>virt-reconcile-registry</name>"
        f"<uuid>{uuid.uuid5(uuid.NAMESPACE_URL, fleet.prefix + 'registry')}</uuid><metadata>"
        '<vr:registry xmlns:vr="https://virt-reconcile.dev/xmlns/owner/v1">'
        f"{_xml_text(json.dumps(registry, sort_keys=True, separators=(',', ':')))}"
        "</vr:registry></metadata><bridge stp='on' delay='0'/></network>"
    )
    parts.append("</node>\n")
    path.write_text("\n".join(parts))
    return path


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- cleanup


def cleanup(uri: str, prefix: str = PREFIX) -> int:
    """Remove every domain, network, pool and volume named ``prefix…`` on ``uri``
    (pool directories under /var/lib/libvirt/images too); returns how many."""
    import libvirt

    if not prefix:
        raise ValueError("refusing to clean up with an empty prefix")
    removed = 0
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(prefix):
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                removed += 1
        for net in conn.listAllNetworks(0):
            if net.name().startswith(prefix):
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    net.undefine()
                removed += 1
        for pool in conn.listAllStoragePools(0):
            if not pool.name().startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    for vol in pool.listAllVolumes(0):
                        if vol.name().startswith(prefix):
                            vol.delete(0)
                            removed += 1
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
            removed += 1
    finally:
        conn.close()
    if uri == "qemu:///system":
        for path in IMAGES.glob(f"{prefix}*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    return removed
