"""Property-based tests: random valid manifests render to XML libvirt accepts and converge.

Hypothesis builds random *worlds* — storage pools, volumes, networks and
domains that refer to each other — from the friendly fields of ``reconciler/schemas/``
(``docs/manifests.md``). For each world:

* every rendered document is valid for libvirt's own schema
  (``virt-xml-validate``, the RNG files of the installed libvirt);
* ``apply`` on a fresh file-backed test-driver host succeeds (libvirt defines
  it with its ``*_VALIDATE`` flags) and a ``plan`` right after finds nothing
  to do (no false differences);
* a mutated world (new field values for the same objects) applies too, and
  again the next plan is empty. Mutations stay within what can change in
  place (volumes never shrink or change format) and what the test driver can
  do: it cannot resize volumes or hot-plug devices, so a mutation keeps the
  sizes of volumes and the devices of running domains.

Every false difference or render bug this found is fixed in the code, with
a regression test of its own in ``tests/unit`` ("Found by
tests/integration/test_properties.py").

The runs are reproducible: ``derandomize=True`` and no example database, so
CI sees the same examples every time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reconciler import manifests, render
from tests.integration.conftest import EMPTY_HOST, Run

pytestmark = pytest.mark.integration

# Shrinking a failure of this test can take minutes, so CI reports the
# (reproducible) failing example as found; VRT_HYPOTHESIS_SHRINK=1 shrinks it.
SHRINK = [Phase.shrink] if os.environ.get("VRT_HYPOTHESIS_SHRINK") == "1" else []
SETTINGS = settings(
    max_examples=75,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, *SHRINK],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Spec = dict[str, Any]
SCHEMA_OF = {
    "Domain": "domain",
    "Network": "network",
    "StoragePool": "storagepool",
    "Volume": "storagevol",
}

# --- strategies --------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True)
# What the schema allows in a metadata.name beyond the usual: spaces, XML's
# special characters, quotes, non-ASCII (never '/' or control characters).
odd_names = st.text(
    alphabet=st.sampled_from("abz09 _.-&<>'\"éß€+:@"), min_size=1, max_size=12
).filter(lambda x: x.strip() == x and x not in (".", ".."))


def size(low_mib: int, high_mib: int) -> st.SearchStrategy[tuple[int, str]]:
    """A size in bytes and one of its spellings with a binary unit."""

    def spell(mib: int) -> st.SearchStrategy[tuple[int, str]]:
        b = mib << 20
        return st.sampled_from(
            [(b, f"{mib}MiB"), (b, f"{mib << 10}KiB"), (b, f"{mib} MiB"), (b, f"{b}B")]
            + ([(b, f"{mib >> 10}GiB")] if mib % 1024 == 0 else [])
        )

    return st.integers(low_mib, high_mib).flatmap(spell)


@st.composite
def macs(draw: st.DrawFn) -> str:
    tail = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))
    text = "52:54:00:" + ":".join(f"{b:02x}" for b in tail)
    return text.upper() if draw(st.booleans()) else text


@dataclass(frozen=True)
class Names:
    """The objects of one world; both the world and its mutation use them."""

    pool: str
    pool_dir: str
    other_pool: str | None
    volumes: tuple[str, ...]
    networks: tuple[str, ...]
    domains: tuple[str, ...]
    subnets: tuple[int, ...]


@st.composite
def world_names(draw: st.DrawFn) -> Names:
    any_name = st.one_of(names, odd_names)
    pool = "vrt-p-" + draw(names)
    vols = draw(st.lists(any_name.map(lambda n: n + ".img"), max_size=3, unique=True))
    nets = draw(st.lists(any_name.map(lambda n: "vrt-n-" + n), max_size=2, unique=True))
    doms = draw(st.lists(any_name.map(lambda n: "vrt-d-" + n), min_size=1, max_size=2, unique=True))
    subnets = draw(
        st.lists(st.integers(1, 250), min_size=len(nets), max_size=len(nets), unique=True)
    )
    return Names(
        pool=pool,
        pool_dir="/var/lib/libvirt/images/" + pool,
        other_pool=draw(st.sampled_from([None, "vrt-other"])),
        volumes=tuple(vols),
        networks=tuple(nets),
        domains=tuple(doms),
        subnets=tuple(subnets),
    )


def optional(d: st.DrawFn, spec: Spec, key: str, values: st.SearchStrategy[Any]) -> None:
    """Set ``spec[key]`` to a drawn value, or leave it out."""
    if d(st.booleans()):
        spec[key] = d(values)


@st.composite
def pool_spec(draw: st.DrawFn, n: Names) -> Spec:
    spec: Spec = {"type": "dir", "target": n.pool_dir, "state": "active"}
    optional(draw, spec, "autostart", st.booleans())
    return spec


@st.composite
def other_pool_spec(draw: st.DrawFn, before: Spec | None) -> Spec:
    """A pool of another type (no volumes in it): its definition only."""
    kind = before["type"] if before else draw(st.sampled_from(["fs", "netfs", "logical"]))
    source: Spec = {
        "fs": {"device": "/dev/vdz1", "format": "ext4"},
        "netfs": {"host": "nfs.example", "dir": "/export/images", "format": "nfs"},
        "logical": {"name": "vg-vrt", "format": "lvm2"},
    }[kind]
    target = "/dev/vg-vrt" if kind == "logical" else "/var/lib/libvirt/images/vrt-other"
    spec: Spec = {"type": kind, "source": source, "target": target}
    optional(draw, spec, "state", st.sampled_from(["active", "inactive"]))
    optional(draw, spec, "autostart", st.booleans())
    return spec


@st.composite
def volume_spec(draw: st.DrawFn, n: Names, before: Spec | None) -> Spec:
    """A volume; a mutation only grows it and keeps its format (no --replace)."""
    # The test driver cannot resize: a mutation keeps the size (spelled anew).
    low, high = (1, 64) if before is None else (before["_mib"], before["_mib"])
    mib, capacity = draw(size(low, high).map(lambda t: (t[0] >> 20, t[1])))
    spec: Spec = {"pool": n.pool, "capacity": capacity, "_mib": mib}
    fmt = before.get("format") if before else draw(st.sampled_from([None, "raw", "qcow2"]))
    if fmt:
        spec["format"] = fmt
    if draw(st.booleans()):
        spec["allocation"] = f"{draw(st.integers(0, mib))}MiB"
    backing = before.get("backingStore") if before else None
    if before is None and fmt == "qcow2" and draw(st.booleans()):
        backing = {"path": "/var/lib/libvirt/images/base.qcow2", "format": "qcow2"}
    if backing:
        spec["backingStore"] = backing
    optional(draw, spec, "prune", st.booleans())
    return spec


DISK_BUSES = {"vd": ["virtio"], "sd": ["sata", "scsi", "usb"], "hd": ["ide"]}


@st.composite
def disks(draw: st.DrawFn, n: Names) -> list[Spec]:
    out = []
    targets = draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(DISK_BUSES)), st.sampled_from("abcdefgh")),
            max_size=3,
            unique=True,
        )
    )
    for prefix, letter in targets:
        disk: Spec = {"target": prefix + letter}
        optional(draw, disk, "bus", st.sampled_from(DISK_BUSES[prefix]))
        cdrom = prefix != "vd" and draw(st.booleans())
        if cdrom:
            disk.update(device="cdrom", bus="ide" if prefix == "hd" else "sata", readonly=True)
        sources: list[st.SearchStrategy[Spec]] = [
            names.map(lambda x: {"file": f"/var/lib/libvirt/images/{x}.iso"}),
            st.sampled_from(["/dev/sdz", "/dev/vg0/lv0"]).map(lambda p: {"block": p}),
        ]
        if n.volumes:
            sources.append(
                st.sampled_from(n.volumes).map(lambda v: {"volume": {"pool": n.pool, "name": v}})
            )
        if not (cdrom and draw(st.booleans())):  # else an empty drive
            disk["source"] = draw(st.one_of(sources))
        optional(draw, disk, "format", st.sampled_from(["raw", "qcow2"]))
        optional(draw, disk, "serial", st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True))
        out.append(disk)
    return out


@st.composite
def interfaces(draw: st.DrawFn, n: Names, used_macs: set[str]) -> list[Spec]:
    out = []
    labels = draw(
        st.lists(st.from_regex(r"[a-z]{1,6}[0-9]?", fullmatch=True), max_size=3, unique=True)
    )
    for label in labels:
        nic: Spec = {}
        if n.networks and draw(st.booleans()):
            nic["network"] = draw(st.sampled_from(n.networks))
        else:
            nic["bridge"] = draw(st.sampled_from(["br0", "virbr9", "br-lan"]))
        if draw(st.booleans()):
            nic["name"] = label
        mac = draw(macs())
        if draw(st.booleans()) and mac.lower() not in used_macs:
            used_macs.add(mac.lower())
            nic["mac"] = mac
        optional(draw, nic, "model", st.sampled_from(["virtio", "e1000", "rtl8139"]))
        optional(draw, nic, "link", st.sampled_from(["up", "down"]))
        out.append(nic)
    if any("name" not in nic for nic in out):
        # Unnamed NICs are nic0, nic1, ... by position: keep names unique.
        for i, nic in enumerate(out):
            nic.setdefault("name", f"nic{i}")
    return out


# Overlay snippets (spec.xml) for what the friendly fields do not cover:
# children of <domain>, and of <devices>.
DOMAIN_OVERLAYS = [
    "<features><acpi/><apic/></features>",
    "<clock offset='utc'/>",
    "<on_poweroff>destroy</on_poweroff>",
]
DEVICE_OVERLAYS = [
    "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
    "<input type='tablet' bus='usb'/>",
    "<controller type='usb' index='0' model='qemu-xhci'/>",
    "<memballoon model='virtio'/>",
]


@st.composite
def domain_overlay(draw: st.DrawFn) -> str | None:
    top = draw(st.lists(st.sampled_from(DOMAIN_OVERLAYS), max_size=2, unique=True))
    devices = draw(st.lists(st.sampled_from(DEVICE_OVERLAYS), max_size=2, unique=True))
    if devices:
        top.append("<devices>" + "".join(devices) + "</devices>")
    return "<domain>" + "".join(top) + "</domain>" if top else None


@st.composite
def domain_spec(draw: st.DrawFn, n: Names, used_macs: set[str], before: Spec | None) -> Spec:
    mem_bytes, memory = draw(size(16, 4096))
    spec: Spec = {"type": draw(st.sampled_from(["test", "qemu", "kvm"])), "memory": memory}
    optional(draw, spec, "machine", st.sampled_from(["pc", "q35"]))
    optional(
        draw,
        spec,
        "cpu",
        st.one_of(
            st.sampled_from(["host-passthrough", "host-model", "maximum"]).map(
                lambda m: {"mode": m}
            ),
            st.sampled_from(["qemu64", "Nehalem"]).map(lambda m: {"mode": "custom", "model": m}),
        ),
    )
    if draw(st.booleans()):
        spec["firmware"] = draw(st.sampled_from(["bios", "efi"]))
        if spec["firmware"] == "efi":
            optional(draw, spec, "secureBoot", st.booleans())
    if draw(st.booleans()):
        cur = draw(st.integers(8, mem_bytes >> 20))
        spec["currentMemory"] = f"{cur}MiB"
    vcpus = draw(st.integers(1, 4))
    optional(draw, spec, "vcpus", st.just(vcpus))
    optional(draw, spec, "maxVcpus", st.integers(vcpus, 8))
    if "maxVcpus" in spec and "vcpus" not in spec:
        spec["vcpus"] = 1
    optional(draw, spec, "arch", st.sampled_from(["x86_64", "i686"]))
    if draw(st.booleans()):
        spec["boot"] = draw(
            st.lists(st.sampled_from(["hd", "cdrom", "network", "fd"]), min_size=1, unique=True)
        )
    elif draw(st.booleans()):
        kernel: Spec = {"path": "/boot/vmlinuz"}
        optional(draw, kernel, "initrd", st.just("/boot/initrd.img"))
        optional(draw, kernel, "cmdline", st.sampled_from(["console=ttyS0", "quiet ro", ""]))
        spec["kernel"] = kernel
    if before is not None and before.get("state") in ("running", "paused"):
        # The test driver cannot attach or detach devices of a running domain.
        spec["disks"] = before.get("disks", [])
        spec["interfaces"] = before.get("interfaces", [])
    else:
        spec["disks"] = draw(disks(n))
        spec["interfaces"] = draw(interfaces(n, used_macs))
    optional(draw, spec, "consoles", st.lists(st.just({"type": "pty"}), max_size=1))
    optional(
        draw,
        spec,
        "graphics",
        st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["vnc", "spice"])},
                optional={"listen": st.sampled_from(["127.0.0.1", "0.0.0.0"])},
            ),
            max_size=1,
        ),
    )
    if before is not None and before.get("state") in ("running", "paused"):
        if "xml" in before:  # (overlay devices would be hot-plugged)
            spec["xml"] = before["xml"]
    else:
        optional(draw, spec, "xml", domain_overlay().filter(bool))
    optional(draw, spec, "state", st.sampled_from(["running", "shutoff", "paused"]))
    optional(draw, spec, "autostart", st.booleans())
    for key in ("disks", "interfaces"):
        if not spec[key]:
            del spec[key]
    return spec


@st.composite
def network_spec(draw: st.DrawFn, n: Names, index: int) -> Spec:
    net = ipaddress.ip_network(f"10.{n.subnets[index]}.0.0/24")
    hosts = list(net.hosts())
    spec: Spec = {}
    forward = draw(st.sampled_from(["nat", "route", "open", "none", None]))
    if forward:
        spec["forward"] = forward
    optional(draw, spec, "bridge", st.just(f"vrtbr{n.subnets[index]}"))
    optional(draw, spec, "domain", st.from_regex(r"[a-z]{1,8}\.test", fullmatch=True))
    optional(draw, spec, "mtu", st.sampled_from([1280, 1500, 9000]))
    if forward in ("nat", "route", "open") or draw(st.booleans()):  # libvirt needs an IP
        spec["ip"] = {"address": str(hosts[0]), "prefix": 24}
        optional(draw, spec["ip"], "dhcp", dhcp(hosts, n.subnets[index]))
    optional(draw, spec, "dns", dns(hosts))
    optional(draw, spec, "state", st.sampled_from(["active", "inactive"]))
    optional(draw, spec, "autostart", st.booleans())
    return spec


@st.composite
def dns(draw: st.DrawFn, hosts: list[ipaddress.IPv4Address]) -> Spec:
    records = draw(st.lists(st.integers(10, 90), min_size=1, max_size=2, unique=True))
    return {
        "hosts": [
            {"ip": str(hosts[r]), "names": [f"h{r}", f"h{r}.lab"][: draw(st.integers(1, 2))]}
            for r in records
        ]
    }


@st.composite
def dhcp(draw: st.DrawFn, hosts: list[ipaddress.IPv4Address], subnet: int) -> Spec:
    out: Spec = {}
    if draw(st.booleans()):
        lo = draw(st.integers(100, 150))
        out["range"] = [str(hosts[lo]), str(hosts[draw(st.integers(lo, 200))])]
    entries = []
    for i, last in enumerate(draw(st.lists(st.integers(10, 90), max_size=3, unique=True))):
        entry: Spec = {"ip": str(hosts[last])}
        if draw(st.booleans()) or i == 0:
            entry["mac"] = f"52:54:00:{subnet:02x}:00:{last:02x}"
        else:
            entry["name"] = f"host{last}"
        entries.append(entry)
    if entries:
        out["hosts"] = entries
    return out


@dataclass(frozen=True)
class World:
    names: Names
    docs: tuple[tuple[str, str, Spec], ...]  # kind, name, spec


@st.composite
def world(draw: st.DrawFn, n: Names, before: World | None = None) -> World:
    docs: list[tuple[str, str, Spec]] = [("StoragePool", n.pool, draw(pool_spec(n)))]
    old = {(k, name): spec for k, name, spec in before.docs} if before else {}
    if n.other_pool:
        other = old.get(("StoragePool", n.other_pool))
        docs.append(("StoragePool", n.other_pool, draw(other_pool_spec(other))))
    for v in n.volumes:
        docs.append(("Volume", v, draw(volume_spec(n, old.get(("Volume", v))))))
    for i, net in enumerate(n.networks):
        docs.append(("Network", net, draw(network_spec(n, i))))
    # MACs are unique across domains, including those a mutation carries over.
    used = {
        nic["mac"].lower()
        for (kind, _), spec in old.items()
        if kind == "Domain" and spec.get("state") in ("running", "paused")
        for nic in spec.get("interfaces", ())
        if "mac" in nic
    }
    for d in n.domains:
        docs.append(("Domain", d, draw(domain_spec(n, used, old.get(("Domain", d))))))
    return World(names=n, docs=tuple(docs))


worlds = world_names().flatmap(
    lambda n: world(n).flatmap(lambda w: st.tuples(st.just(w), world(n, w)))
)

# --- checks ------------------------------------------------------------------------


def write(world: World, folder: Path) -> None:
    for f in folder.glob("*.yaml"):
        f.unlink()
    for i, (kind, name, spec) in enumerate(world.docs):
        clean = {k: v for k, v in spec.items() if not k.startswith("_")}
        doc = {"apiVersion": "virt-reconcile/v1", "kind": kind, "metadata": {"name": name}}
        # JSON is YAML; one file per object.
        (folder / f"{i:02d}.yaml").write_text(json.dumps({**doc, "spec": clean}) + "\n")


def assert_valid_for_libvirt(folder: Path) -> None:
    """Every rendered document passes ``virt-xml-validate`` against its schema."""
    loaded = manifests.load([str(folder)], default_uri="test:///unused")
    for m in loaded.objects:
        xml = render.to_string(render.render(m))
        path = folder / "rendered.xml"
        path.write_text(xml)
        result = subprocess.run(
            ["virt-xml-validate", str(path), SCHEMA_OF[m.kind.value]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{m.kind.value}/{m.name}:\n{xml}\n{result.stderr}"
    (folder / "rendered.xml").unlink(missing_ok=True)


def assert_applies_and_converges(run: Run, folder: Path, uri: str) -> None:
    code, out, err = run("apply", folder, "-c", uri)
    assert code == 0, out + err
    code, out, err = run("plan", folder, "-c", uri, "--detailed-exitcode", "-v")
    assert code == 0, f"false diff right after apply:\n{out}{err}"


@SETTINGS
@given(pair=worlds)
def test_random_manifests_render_valid_apply_and_converge(
    run: Run, pair: tuple[World, World]
) -> None:
    first, mutated = pair
    with tempfile.TemporaryDirectory(prefix="vrt-prop-") as tmp:
        folder = Path(tmp) / "manifests"
        folder.mkdir()
        host = Path(tmp) / "host.xml"
        shutil.copy(EMPTY_HOST, host)
        uri = f"test://{host}"
        write(first, folder)
        assert_valid_for_libvirt(folder)
        assert_applies_and_converges(run, folder, uri)
        write(mutated, folder)
        assert_valid_for_libvirt(folder)
        assert_applies_and_converges(run, folder, uri)
