"""The foreign corpus: XML that other tools (and people) wrote, planned as users would.

``tests/data/foreign/<source>/*.xml`` holds domains, networks and pools nobody tuned for
virt-reconcile (see the two ``generate_*.py`` scripts there).  For every document this
module measures, on one host:

(a) *false diffs*: the document is defined with libvirt directly, then its manifest (a
    complete document in ``spec.xml``, nothing beside it) is planned read-only; only
    ``adopt``/``unchanged`` with no field change is right;
(b) *edits*: one value of the document is changed (memory, a NIC's MAC, a disk's target,
    a DHCP range, a bridge name, a pool's target path); the plan must show exactly one change;
(c) *convergence*: the manifest is applied to a host without the object (exit 0, the
    object's result ``ok``), and a second plan shows it ``unchanged``;
(d) *overrides*: a friendly field beside the document (``memory`` for a domain,
    ``bridge`` for a network, ``target`` for a pool) is exactly one change.

Everything is batched: one manifest folder per check, one ``plan``/``apply`` per folder.
Two tiers: ``test`` (every document on a private file-backed test-driver host, CLI run
in-process, seconds) and ``real`` (x86_64 domains, networks that start and dir pools on
``qemu:///system``, CLI run as ``python -m reconciler`` in a subprocess; objects are
named ``vrf-*`` and removed afterwards).

    .venv/bin/python -m tests.foreign report [--tier test|real|all] [-k TEXT] [--compat-friendly]

prints the README table (corpus size per source; false diffs, missed edits, edits that are
not exactly one change, wrong overrides, non-converging applies) and, per failing document,
the paths that differ, then the causes grouped by path pattern.  ``--compat-friendly`` adds
the friendly fields an older schema requires (``memory`` read from the document, a pool's
``type``) so results are visible before complete documents are accepted on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "foreign"
EMPTY_HOST = REPO / "tests" / "data" / "testdriver" / "empty.xml"
SYSTEM_URI = "qemu:///system"
PREFIX = "vrf-"
POOL_ROOT = Path("/var/tmp/vrf-corpus/pools")

# folder -> row label of the README table, in table order
SOURCES = {
    "virt-install": "virt-install --print-xml",
    "dumpxml": "virsh dumpxml (inactive; live)",
    "terraform": "terraform-provider-libvirt style",
    "nixvirt": "NixVirt template style",
    "docs": "libvirt docs style",
    "hand": "hand-written",
    "arch": "other architectures",
    "networks": "networks",
    "pools": "storage pools",
}
KINDS = {"domain": "Domain", "network": "Network", "pool": "StoragePool"}
# forward modes a network can start with on a plain host (no host NICs, no other bridge)
_STARTABLE_FORWARD = {None, "nat", "route", "open"}

Cli = Callable[..., tuple[int, str, str]]


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Document:
    path: Path
    source: str  # folder under tests/data/foreign
    kind: str  # Domain | Network | StoragePool
    name: str
    xml: str

    @property
    def id(self) -> str:
        return f"{self.source}/{self.name}"

    @property
    def root(self) -> etree._Element:
        return etree.fromstring(self.xml.encode())

    @property
    def real(self) -> bool:
        """Checked on the real qemu:///system (else only on a test-driver host)."""
        root = self.root
        if self.kind == "Domain":
            os_type = root.find("os/type")
            arch_name = os_type.get("arch") if os_type is not None else None
            emulator = root.findtext("devices/emulator")
            return (
                root.get("type") in ("kvm", "qemu")
                and arch_name in (None, "x86_64")
                and (emulator is None or Path(emulator).exists())
            )
        if self.kind == "Network":
            fwd = root.find("forward")
            mode = None if fwd is None else fwd.get("mode", "nat")
            bridge = root.find("bridge")
            own_bridge = bridge is None or (bridge.get("name") or "").startswith(("vrfbr", "virbr"))
            # host NICs, a TFTP root and traffic shaping (the sfq qdisc) need host setup
            needs_host = any(
                root.find(p) is not None for p in ("forward/interface", ".//tftp", ".//bandwidth")
            )
            return mode in _STARTABLE_FORWARD and own_bridge and not needs_host
        return root.get("type") == "dir"


def load(corpus: Path = CORPUS) -> list[Document]:
    docs = []
    for source in SOURCES:
        for path in sorted((corpus / source).glob("*.xml")):
            xml = path.read_text()
            root = etree.fromstring(xml.encode())
            docs.append(
                Document(
                    path=path,
                    source=source,
                    kind=KINDS[str(root.tag)],
                    name=root.findtext("name") or "",
                    xml=xml,
                )
            )
    return docs


# --------------------------------------------------------------------------- edits
# Textual edits, so the rest of the document stays byte for byte what the tool wrote.


@dataclass(frozen=True)
class Edit:
    label: str
    xml: str
    what: str  # human description: old -> new


_UNITS = {
    "b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
    "m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2,
    "gb": 1000**3 / 1024, "t": 1024**3, "tib": 1024**3,
}  # fmt: skip
_MEMORY = re.compile(r"<memory(?P<attrs>[^>]*)>\s*(?P<value>\d+)\s*</memory>")
_MAC = re.compile(
    r"(<interface\b(?:(?!</interface>).)*?<mac address=)(['\"])([0-9a-fA-F:]{17})\2", re.S
)
_DISK_TARGET = re.compile(r"(<disk\b(?:(?!</disk>).)*?<target dev=)(['\"])([a-z]+)\2", re.S)
_RANGE_END = re.compile(r"(<range start=(['\"])[0-9.]+\2 end=)(['\"])(\d+\.\d+\.\d+\.)(\d+)\3")
_BRIDGE = re.compile(r"(<bridge name=)(['\"])([\w.-]+)\2")
_FORWARD_DEV = re.compile(r"(<(?:interface|pf) dev=)(['\"])([\w.-]+)\2")
_SOURCE_DEVICE = re.compile(r"(<source>\s*<device path=['\"])([^'\"]+)")
_SOURCE_NAME = re.compile(r"(<source>(?:(?!</source>).)*?<name>)([^<]+)", re.S)
# pool types whose target path libvirt derives from the source (/dev/VG, /dev/zvol/POOL)
_DERIVED_TARGET = {"logical", "zfs"}
_POOL_PATH = re.compile(r"(<target>\s*<path>)([^<]+?)(/?)(</path>)")


def memory_kib(xml: str) -> int:
    m = _MEMORY.search(xml)
    if not m:
        return 0
    unit = re.search(r"unit=['\"](\w+)['\"]", m.group("attrs"))
    return int(int(m.group("value")) * _UNITS[(unit.group(1) if unit else "KiB").lower()])


def _bump(name: str) -> str:
    """Another name of the same shape: vrfbr3 -> vrfbx3 (ours), br0 -> br1, eth -> eth1."""
    if name.startswith("vrfbr"):
        return "vrfbx" + name[5:]
    if name[-1:].isdigit():
        return name[:-1] + str((int(name[-1]) + 1) % 10)
    return name + "1"


def _size(kib: int) -> str:
    return f"{kib // 1024}MiB" if kib % 1024 == 0 else f"{kib}KiB"


def edits(doc: Document) -> list[Edit]:
    """The one-value edits that apply to this document."""
    out: list[Edit] = []
    xml = doc.xml
    if doc.kind == "Domain":
        m = _MEMORY.search(xml)
        if m:
            value = int(m.group("value"))
            new = m.group(0).replace(m.group("value"), str(value * 2))
            out.append(
                Edit(
                    "memory",
                    xml[: m.start()] + new + xml[m.end() :],
                    f"memory x2 ({value}→{value * 2})",
                )
            )
        m = _MAC.search(xml)
        if m:
            old = m.group(3)
            last = (int(old[-2:], 16) + 0x55) % 256
            new_mac = f"{old[:-2]}{last:02x}"
            out.append(
                Edit("mac", xml[: m.start(3)] + new_mac + xml[m.end(3) :], f"mac {old}→{new_mac}")
            )
        m = _DISK_TARGET.search(xml)
        if m:
            old = m.group(3)
            used = set(re.findall(r"<target dev=['\"]([a-z]+)['\"]", xml))
            prefix = old[:-1]
            letters = "bcd" if prefix == "hd" else "bcdefghijklmnop"
            free = [f"{prefix}{c}" for c in letters if f"{prefix}{c}" not in used]
            if free:
                out.append(
                    Edit(
                        "disk-target",
                        xml[: m.start(3)] + free[0] + xml[m.end(3) :],
                        f"disk {old}→{free[0]}",
                    )
                )
    elif doc.kind == "Network":
        m = _RANGE_END.search(xml)
        if m:
            last = int(m.group(5))
            new_last = last - 1 if last > 10 else last + 1
            out.append(
                Edit(
                    "dhcp-range",
                    xml[: m.start(5)] + str(new_last) + xml[m.end(5) :],
                    f"dhcp range end .{last}→.{new_last}",
                )
            )
        m = _BRIDGE.search(xml)
        if m:
            new = _bump(m.group(3))
            out.append(
                Edit(
                    "bridge",
                    xml[: m.start(3)] + new + xml[m.end(3) :],
                    f"bridge {m.group(3)}→{new}",
                )
            )
        m = _FORWARD_DEV.search(xml)
        if m:
            new = _bump(m.group(3))
            out.append(
                Edit(
                    "forward-dev",
                    xml[: m.start(3)] + new + xml[m.end(3) :],
                    f"forward device {m.group(3)}→{new}",
                )
            )
    elif doc.root.get("type") in _DERIVED_TARGET or not _POOL_PATH.search(xml):
        # libvirt derives the target path of these pools from the source (or they have
        # none: rbd, gluster): edit the source
        m = _SOURCE_DEVICE.search(xml) or _SOURCE_NAME.search(xml)
        if m:
            new = _bump(m.group(2))
            out.append(
                Edit(
                    "pool-source",
                    xml[: m.start(2)] + new + xml[m.end(2) :],
                    f"source {m.group(2)}→{new}",
                )
            )
    else:
        m = _POOL_PATH.search(xml)
        if m:
            new = m.group(2) + "-moved"
            out.append(
                Edit(
                    "pool-target",
                    xml[: m.start(2)] + new + xml[m.end(3) :],
                    f"target {m.group(2)}→{new}",
                )
            )
    return out


def override(doc: Document) -> tuple[dict[str, Any], str] | None:
    """A friendly field beside the document that changes exactly one value."""
    if doc.kind == "Domain":
        kib = memory_kib(doc.xml) + 1024 * 1024
        return {"memory": _size(kib)}, f"memory: {_size(kib)}"
    if doc.kind == "Network":
        m = _BRIDGE.search(doc.xml)
        if m and m.group(3).startswith("vrfbr"):
            new = m.group(3).replace("vrfbr", "vrfby")
            return {"bridge": new}, f"bridge: {new}"
        return None
    m = _POOL_PATH.search(doc.xml)
    if not m or doc.root.get("type") in _DERIVED_TARGET:
        return None
    return {"target": m.group(2) + "-override"}, f"target: {m.group(2)}-override"


# --------------------------------------------------------------------------- manifests


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifest(
    doc: Document,
    xml: str | None = None,
    extra: dict[str, Any] | None = None,
    *,
    compat: bool = False,
) -> dict[str, Any]:
    """``kind``/``metadata.name``/``spec.xml``: the complete document, nothing beside it."""
    xml = doc.xml if xml is None else xml
    spec: dict[str, Any] = {}
    if compat:  # what an older schema requires beside a complete document
        if doc.kind == "Domain":
            spec["memory"] = _size(memory_kib(xml))
        elif doc.kind == "StoragePool":
            spec["type"] = doc.root.get("type")
    spec |= extra or {}
    spec["xml"] = xml
    return {
        "apiVersion": "virt-reconcile/v1",
        "kind": doc.kind,
        "metadata": {"name": doc.name},
        "spec": spec,
    }


def write_manifests(
    folder: Path, items: Iterable[tuple[Document, dict[str, Any]]]
) -> dict[str, str]:
    """One file per document; returns file name -> document id."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for doc, m in items:
        fname = f"{doc.source}--{doc.name}.yaml"
        (folder / fname).write_text(
            yaml.dump(m, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        )
        files[fname] = doc.id
    return files


# --------------------------------------------------------------------------- hosts


class Host:
    """Where a tier runs: the CLI, direct definitions and cleanup."""

    uri: str

    def cli(self, *argv: str) -> tuple[int, str, str]:
        raise NotImplementedError

    def define(self, doc: Document) -> None:
        raise NotImplementedError

    def fresh(self) -> None:
        """Make the host hold none of the corpus objects."""
        raise NotImplementedError

    def snapshot(self, names: set[str]) -> dict[str, str]:
        raise NotImplementedError


class TestDriverHost(Host):
    """A private file-backed test-driver host; the CLI runs in this process (it must:
    a ``test:///FILE`` host lives in the process that opened it)."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._n = 0
        self.fresh()

    def fresh(self) -> None:
        self._n += 1
        path = self.workdir / f"host-{self._n}.xml"
        shutil.copy(EMPTY_HOST, path)
        self.uri = f"test://{path}"

    def _conn(self) -> Any:
        from reconciler import hosts

        return hosts.open_uri(self.uri)

    def define(self, doc: Document) -> None:
        _define(self._conn(), doc)

    def snapshot(self, names: set[str]) -> dict[str, str]:
        return _snapshot(self._conn(), names)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        from reconciler import cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*argv, "-c", self.uri])
        return code, out.getvalue(), err.getvalue()


class SystemHost(Host):
    """The real ``qemu:///system``; the CLI is ``python -m reconciler`` in a subprocess."""

    def __init__(self, names: Iterable[str], uri: str = SYSTEM_URI) -> None:
        import libvirt

        self.uri = uri
        self.names = set(names)
        if not all(n.startswith(PREFIX) for n in self.names):
            raise ValueError(f"corpus objects on a shared daemon must be named {PREFIX}*")
        self.conn = libvirt.open(uri)

    def define(self, doc: Document) -> None:
        _define(self.conn, doc)

    def snapshot(self, names: set[str]) -> dict[str, str]:
        return _snapshot(self.conn, names)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        from tests.testbed.cli import vr

        r = vr(*argv, "-c", self.uri, timeout=600)
        return r.returncode, r.stdout, r.stderr

    def fresh(self) -> None:
        """Remove the corpus objects (and only those) from the daemon."""
        import libvirt

        for dom in self.conn.listAllDomains():
            if dom.name() in self.names:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                )
        for net in self.conn.listAllNetworks():
            if net.name() in self.names:
                if net.isActive():
                    net.destroy()
                net.undefine()
        for pool in self.conn.listAllStoragePools():
            if pool.name() in self.names:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        shutil.rmtree(POOL_ROOT, ignore_errors=True)
        self._forget_pool_records()

    def _forget_pool_records(self) -> None:
        """Drop our pools' ownership records from the host's registry (see ownership.py),
        so every run starts from the same host: a stale record would turn ``adopt`` into
        a managed object with an old last-applied set."""
        import libvirt

        from reconciler import ownership

        try:
            net = self.conn.networkLookupByName(ownership.REGISTRY_NETWORK)
        except libvirt.libvirtError:
            return
        registry = ownership.Registry.from_xml(net.XMLDesc(0))
        stale = [name for name in registry.pools if name in self.names]
        if not stale:
            return
        for name in stale:
            registry = registry.with_pool(name, None)
        self.conn.networkDefineXMLFlags(registry.to_xml(), libvirt.VIR_NETWORK_DEFINE_VALIDATE)

    def close(self) -> None:
        self.conn.close()


def _snapshot(conn: Any, names: set[str]) -> dict[str, str]:
    """The XML of the corpus objects on a host, to prove that ``plan`` wrote nothing."""
    snap = {f"Domain/{d.name()}": d.XMLDesc(0) for d in conn.listAllDomains() if d.name() in names}
    snap |= {
        f"Network/{n.name()}": n.XMLDesc(0) for n in conn.listAllNetworks() if n.name() in names
    }
    for p in conn.listAllStoragePools():
        if p.name() in names:
            snap[f"StoragePool/{p.name()}"] = p.XMLDesc(0) + f" active={p.isActive()}"
    return snap


def _define(conn: Any, doc: Document) -> None:
    if doc.kind == "Domain":
        conn.defineXML(doc.xml)
    elif doc.kind == "Network":
        conn.networkDefineXML(doc.xml)
    else:
        conn.storagePoolDefineXML(doc.xml, 0)


# --------------------------------------------------------------------------- checks


@dataclass
class Change:
    path: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        return f"{self.path}: {_short(self.old)} → {_short(self.new)}"


def _short(value: str | None, limit: int = 90) -> str:
    if value is None:
        return "∅"
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass
class Outcome:
    """One plan/apply of one document."""

    action: str | None = None
    changes: list[Change] = field(default_factory=list)
    error: str | None = None  # the manifest was refused, or the action failed
    result: str | None = None  # apply only


@dataclass
class DocResult:
    doc: Document
    define_error: str | None = None
    plan_wrote: bool = False  # a read-only plan changed the object on the host
    adopt: Outcome | None = None
    edits: dict[str, tuple[Edit, Outcome]] = field(default_factory=dict)
    override: tuple[str, Outcome] | None = None
    apply: Outcome | None = None
    replan: Outcome | None = None

    # -- verdicts ------------------------------------------------------------------------

    @property
    def false_diff(self) -> bool:
        a = self.adopt
        return self.plan_wrote or (
            a is None
            or a.error is not None
            or a.action not in ("adopt", "unchanged")
            or bool(a.changes)
        )

    def _baseline(self) -> set[str]:
        return {str(c) for c in self.adopt.changes} if self.adopt else set()

    def delta(self, o: Outcome) -> list[Change]:
        """The changes of a plan that the unedited document did not show already."""
        base = self._baseline()
        return [c for c in o.changes if str(c) not in base]

    def edit_missed(self, label: str) -> bool:
        _, o = self.edits[label]
        return o.error is None and not self.delta(o)

    def edit_exact(self, label: str) -> bool:
        """The edit shows as one change (a changed identity: the old device out, the new in)."""
        _, o = self.edits[label]
        d = self.delta(o)
        if o.error is not None or o.action != "update":
            return False
        if label in _IDENTITY_EDITS and len(d) == 2:
            return {c.old is None for c in d} == {True, False} and {c.new is None for c in d} == {
                True,
                False,
            }
        if (
            label == "pool-source"
            and len(d) == 2
            and {c.path for c in d}
            == {
                "source/name",
                "target/path",
            }
        ):
            # logical and zfs pools: libvirt derives the target (/dev/VG, /dev/zvol/POOL)
            # from the source name, so renaming the source moves the target with it.
            return True
        return len(d) == 1

    def edit_ok(self, label: str) -> bool:
        """Exactly the edit and nothing else."""
        _, o = self.edits[label]
        return self.edit_exact(label) and len(o.changes) == len(self.delta(o))

    @property
    def override_exact(self) -> bool:
        if self.override is None:
            return True
        o = self.override[1]
        return o.error is None and o.action in ("update", "adopt") and len(self.delta(o)) == 1

    @property
    def override_ok(self) -> bool:
        o = None if self.override is None else self.override[1]
        return self.override_exact and (o is None or len(o.changes) == 1)

    @property
    def converged(self) -> bool:
        a, r = self.apply, self.replan
        return (
            a is not None
            and a.error is None
            and a.result == "ok"
            and r is not None
            and r.error is None
            and r.action == "unchanged"
            and not r.changes
        )


def _parse(out: str) -> dict[str, Any]:
    try:
        return dict(json.loads(out))
    except (json.JSONDecodeError, TypeError, ValueError):
        return {}


def _run_batch(host: Host, folder: Path, files: dict[str, str], command: str) -> dict[str, Outcome]:
    """``plan``/``apply`` FOLDER -o json; refused manifests are attributed and left out."""
    outcomes: dict[str, Outcome] = {}
    remaining = dict(files)
    for _ in range(3):
        if not remaining:
            break
        code, out, err = host.cli(command, str(folder), "-o", "json")
        doc = _parse(out)
        if "hosts" not in doc:
            refused = _refusals(doc, err, remaining)
            if not refused:  # an error we cannot attribute: every document gets it
                for doc_id in remaining.values():
                    outcomes.setdefault(
                        doc_id, Outcome(error=f"exit {code}: {_short(err or out, 400)}")
                    )
                return outcomes
            for fname, msg in refused.items():
                outcomes[remaining.pop(fname)] = Outcome(error=msg)
                (folder / fname).unlink()
            continue
        by_name = {}
        for h in doc["hosts"]:
            for a in h.get("actions", []):
                by_name[(a["kind"], a["name"])] = a
        for doc_id in remaining.values():
            kind, name = _KEY[doc_id]
            a = by_name.get((kind, name))
            if a is None:
                outcomes[doc_id] = Outcome(error=f"no action in the {command} output (exit {code})")
                continue
            outcomes[doc_id] = Outcome(
                action=a.get("action"),
                changes=[
                    Change(c.get("path", ""), c.get("old"), c.get("new"))
                    for c in a.get("changes") or []
                ],
                error=a.get("error"),
                result=a.get("result"),
            )
        return outcomes
    return outcomes


_KEY: dict[str, tuple[str, str]] = {}
# edits that change a device's identity: the plan removes the old device and adds the new
_IDENTITY_EDITS = {"mac", "disk-target"}


def _refusals(doc: dict[str, Any], err: str, files: dict[str, str]) -> dict[str, str]:
    """File name -> message for the manifests the CLI refused (JSON errors or stderr lines)."""
    found: dict[str, list[str]] = defaultdict(list)
    for e in doc.get("errors", []):
        fname = Path(str(e.get("file", ""))).name
        if fname in files:
            found[fname].append(f"{e.get('path', '')}: {e.get('message', '')}")
    for line in err.splitlines():
        m = re.match(r"^(?P<file>\S+?\.yaml):\d+: (?P<msg>.*)$", line.strip())
        if m and Path(m.group("file")).name in files:
            found[Path(m.group("file")).name].append(m.group("msg"))
    return {f: "; ".join(dict.fromkeys(msgs)) for f, msgs in found.items()}


def check(
    docs: Sequence[Document], host: Host, workdir: Path, *, compat: bool = False
) -> dict[str, DocResult]:
    """Run the four checks over ``docs`` on ``host`` (which must hold none of them)."""
    results = {d.id: DocResult(d) for d in docs}
    for d in docs:
        _KEY[d.id] = (d.kind, d.name)
    host.fresh()

    # (a) defined directly, then planned
    defined = []
    for d in docs:
        try:
            host.define(d)
            defined.append(d)
        except Exception as e:  # libvirt refused the document itself
            results[d.id].define_error = str(e).strip()
    names = {d.name for d in defined}
    before = host.snapshot(names)
    folder = workdir / "adopt"
    files = write_manifests(folder, ((d, manifest(d, compat=compat)) for d in defined))
    for doc_id, o in _run_batch(host, folder, files, "plan").items():
        results[doc_id].adopt = o

    # (b) edits and (d) a friendly override beside the document: each is its own manifest
    # of the object; round k plans the k-th variant of every document (the objects are
    # independent), so there are as many plan runs as the most variants of one document.
    variants: dict[str, list[tuple[str, Edit | None, dict[str, Any]]]] = {}
    for d in defined:
        vs: list[tuple[str, Edit | None, dict[str, Any]]] = [
            (e.label, e, manifest(d, e.xml, compat=compat)) for e in edits(d)
        ]
        if (o := override(d)) is not None:
            vs.append((o[1], None, manifest(d, extra=o[0], compat=compat)))
        variants[d.id] = vs
    by_id = {d.id: d for d in defined}
    for k in range(max((len(v) for v in variants.values()), default=0)):
        batch = {i: v[k] for i, v in variants.items() if k < len(v)}
        folder = workdir / f"variant-{k}"
        files = write_manifests(folder, ((by_id[i], m) for i, (_, _, m) in batch.items()))
        outcomes = _run_batch(host, folder, files, "plan")
        for i, (label, edit, _) in batch.items():
            outcome = outcomes.get(i, Outcome(error="not planned"))
            if edit is None:
                results[i].override = (label, outcome)
            else:
                results[i].edits[label] = (edit, outcome)

    after = host.snapshot(names)
    for d in defined:
        key = f"{d.kind}/{d.name}"
        results[d.id].plan_wrote = before.get(key) != after.get(key)

    # (c) apply to a host without the objects, then plan again
    host.fresh()
    folder = workdir / "apply"
    files = write_manifests(folder, ((d, manifest(d, compat=compat)) for d in docs))
    applied = _run_batch(host, folder, files, "apply")
    replanned = _run_batch(
        host, folder, {f: i for f, i in files.items() if (folder / f).exists()}, "plan"
    )
    for d in docs:
        results[d.id].apply = applied.get(d.id)
        results[d.id].replan = replanned.get(d.id)
    return results


def run_test_tier(docs: Sequence[Document], *, compat: bool = False) -> dict[str, DocResult]:
    with tempfile.TemporaryDirectory(prefix="vrf-foreign-") as tmp:
        return check(docs, TestDriverHost(Path(tmp)), Path(tmp), compat=compat)


def run_real_tier(
    docs: Sequence[Document], *, uri: str = SYSTEM_URI, compat: bool = False
) -> dict[str, DocResult]:
    docs = [d for d in docs if d.real]
    host = SystemHost((d.name for d in docs), uri)
    try:
        with tempfile.TemporaryDirectory(prefix="vrf-foreign-") as tmp:
            return check(docs, host, Path(tmp), compat=compat)
    finally:
        host.fresh()
        host.close()


# --------------------------------------------------------------------------- report

_COLUMNS = (
    "docs", "refused", "false diffs", "missed edits", "edits ≠ 1 change", "wrong overrides",
    "not converged",
)  # fmt: skip


def tally(results: Iterable[DocResult]) -> dict[str, Counter[str]]:
    rows: dict[str, Counter[str]] = {s: Counter() for s in SOURCES}
    for r in results:
        c = rows[r.doc.source]
        c["docs"] += 1
        c["refused"] += bool(
            r.define_error
            or (r.adopt and r.adopt.error)
            or (r.apply and r.apply.error and not r.apply.result)
        )
        c["false diffs"] += r.false_diff
        c["missed edits"] += any(r.edit_missed(label) for label in r.edits)
        # beyond the document's own false diffs, which are counted once, as false diffs
        c["edits ≠ 1 change"] += any(
            not r.edit_missed(label) and not r.edit_exact(label) for label in r.edits
        )
        c["wrong overrides"] += not r.override_exact
        c["not converged"] += not r.converged
    return rows


def table(results: Iterable[DocResult]) -> str:
    rows = tally(results)
    lines = ["| source | " + " | ".join(_COLUMNS) + " |", "|---" * (len(_COLUMNS) + 1) + "|"]
    total: Counter[str] = Counter()
    for source, c in rows.items():
        if not c["docs"]:
            continue
        total += c
        lines.append(f"| {SOURCES[source]} | " + " | ".join(str(c[k]) for k in _COLUMNS) + " |")
    lines.append("| **total** | " + " | ".join(f"**{total[k]}**" for k in _COLUMNS) + " |")
    return "\n".join(lines)


def failures(r: DocResult) -> Iterator[tuple[str, str]]:
    """(check, detail) for each failed check of one document."""
    if r.define_error:
        yield "define", r.define_error
    if r.plan_wrote:
        yield "adopt", "a read-only plan changed the object on the host"
    if r.adopt is not None and r.false_diff:
        if r.adopt.error:
            yield "adopt", f"refused: {r.adopt.error}"
        else:
            yield "adopt", f"action {r.adopt.action}"
        for c in r.adopt.changes:
            yield "adopt", str(c)
    for label, (e, o) in r.edits.items():
        if o.error:
            yield f"edit {label}", f"{e.what}: refused: {o.error}"
        elif r.edit_missed(label):
            yield f"edit {label}", f"{e.what}: MISSED (no new change)"
        elif not r.edit_exact(label):
            d = r.delta(o)
            yield f"edit {label}", f"{e.what}: {len(d)} new changes: " + "; ".join(map(str, d))
    if r.override is not None and not r.override_exact:
        what, o = r.override
        d = r.delta(o)
        detail = (
            f"refused: {o.error}" if o.error else f"{len(d)} new changes: " + "; ".join(map(str, d))
        )
        yield "override", f"{what}: {detail}"
    if not r.converged:
        a, p = r.apply, r.replan
        if a is None or a.error or a.result != "ok":
            yield "apply", f"result {a.result if a else None}: {a.error if a else 'not applied'}"
        if p is not None and (p.error or p.action != "unchanged" or p.changes):
            yield "apply", f"second plan: {p.action} {p.error or ''}".strip()
            for c in p.changes:
                yield "apply", f"  {c}"


def _pattern(path: str) -> str:
    path = re.sub(r"\[#\d+\]", "[#N]", path)
    path = re.sub(r"index=\d+", "index=N", path)
    return path


def causes(results: Iterable[DocResult]) -> list[tuple[str, int, str]]:
    """Path pattern of false diffs (adopt and replan) -> documents, with one example."""
    docs: dict[str, set[str]] = defaultdict(set)
    example: dict[str, str] = {}
    for r in results:
        changes = []
        if r.adopt and r.adopt.changes:
            changes += r.adopt.changes
        if r.replan and r.replan.changes:
            changes += r.replan.changes
        for c in changes:
            key = _pattern(c.path)
            docs[key].add(r.doc.id)
            example.setdefault(key, f"{r.doc.id}: {c}")
        for what in ("adopt", "replan", "apply"):
            o = getattr(r, what)
            if o is not None and o.error:
                key = f"({what} error) {_short(o.error, 70)}"
                docs[key].add(r.doc.id)
                example.setdefault(key, r.doc.id)
    return sorted(((k, len(v), example[k]) for k, v in docs.items()), key=lambda t: (-t[1], t[0]))


def report(results: dict[str, DocResult], title: str, out: Any = sys.stdout) -> None:
    print(f"## {title}\n", file=out)
    print(table(results.values()), file=out)
    print("\n### false-diff causes (path pattern → documents → example)\n", file=out)
    for key, n, ex in causes(results.values()):
        print(f"- `{key}` → {n} → {ex}", file=out)
    print("\n### failing documents\n", file=out)
    for r in results.values():
        lines = list(failures(r))
        if lines:
            print(f"{r.doc.id} ({r.doc.path.relative_to(REPO)})", file=out)
            for what, detail in lines:
                print(f"    {what}: {detail}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.foreign", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="run the checks and print the table and the failures")
    rep.add_argument("--tier", choices=("test", "real", "all"), default="test")
    rep.add_argument("-k", dest="match", help="only documents whose id contains TEXT")
    rep.add_argument(
        "--compat-friendly",
        action="store_true",
        help="add friendly fields an older schema requires",
    )
    sub.add_parser("list", help="list the corpus: id, kind, tier")
    args = ap.parse_args(argv)
    docs = load()
    if args.command == "list":
        for d in docs:
            print(f"{d.id}\t{d.kind}\t{'real+test' if d.real else 'test'}")
        print(f"{len(docs)} documents", file=sys.stderr)
        return 0
    if args.match:
        docs = [d for d in docs if args.match in d.id]
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    failed = False
    if args.tier in ("test", "all"):
        res = run_test_tier(docs, compat=args.compat_friendly)
        report(res, f"test-driver host ({len(res)} documents)")
        failed |= any(list(failures(r)) for r in res.values())
    if args.tier in ("real", "all"):
        from tests.testbed import daemon

        with daemon.exclusive_session():
            uri = daemon.ensure_system_libvirtd()
            try:
                res = run_real_tier(docs, uri=uri, compat=args.compat_friendly)
            finally:
                daemon.stop_all()
        report(res, f"real {uri} ({len(res)} documents)")
        failed |= any(list(failures(r)) for r in res.values())
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.pop("LIBVIRT_DEFAULT_URI", None)
    sys.exit(main())
