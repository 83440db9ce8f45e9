"""Ownership records: which objects virt-reconcile manages, and what it applied last.

Pure data and (de)serialisation; ``hosts`` reads and writes them.

* Domains and networks carry the record in their own XML, as
  ``<metadata><vr:owner xmlns:vr="..."/></metadata>``, written in the same
  define call that creates or updates the object.
* Storage pools and volumes have no ``<metadata>`` (libvirt drops it), so their
  records live in a per-host *registry*: the metadata of one inactive,
  never-started network named ``virt-reconcile-registry`` on that host. It is
  durable (libvirt persists it like any network definition), it lives on the
  host itself, and every machine that can reach the host can read it.

A record holds: managed, the last-applied field paths (for the three-way
diff), the prune permission, the placement (candidate hosts), the manifest's
``metadata.labels`` (so that a prune under ``--selector`` knows an orphan's
labels) and, for a domain between the shutdown and the start of a restart,
``restarting``.

Placement: a domain placed on one of several candidate hosts carries
``placement`` (the candidates) and ``host`` (where it was placed) in its own
record; every *other* reachable candidate keeps a copy of that record in its
registry, under ``domains`` (``managed: false``: that host does not hold the
domain). A later run that cannot see the chosen host still knows where the
domain lives, so it never creates it a second time elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from reconciler.model import Kind

NAMESPACE = "https://virt-reconcile.dev/xmlns/owner/v1"
PREFIX = "vr"
REGISTRY_NETWORK = "virt-reconcile-registry"
_OWNER = f"{{{NAMESPACE}}}owner"
_REGISTRY = f"{{{NAMESPACE}}}registry"


@dataclass(frozen=True, kw_only=True)
class Record:
    """The ownership record of one object."""

    managed: bool = True
    applied: frozenset[str] = frozenset()
    prune: bool = True
    placement: tuple[str, ...] = ()
    host: str = ""
    # A domain between the shutdown and the start of a restart (see plan).
    restarting: bool = False
    # A volume made from ``spec.source``: the source it was made from (its
    # manifest fields as compact JSON), and whether the upload is still running
    # (a record that says so after a run means a half volume: it is re-created).
    source: str = ""
    uploading: bool = False
    # A secret: the keyed digest (``values.digest``) of the value last set.
    digest: str = ""
    # The manifest's metadata.labels, sorted (written only when there are any).
    labels: tuple[tuple[str, str], ...] = ()
    # A volume made for another object (a domain's cloud-init seed): its
    # ``KIND/NAME``; the volume goes when that object no longer uses it.
    owner: str = ""
    # A domain: whether deleting it keeps its NVRAM and vTPM state (keepState).
    keep_state: bool = True

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "managed": self.managed,
            "applied": sorted(self.applied),
            "prune": self.prune,
            "placement": list(self.placement),
            "host": self.host,
        }
        if self.restarting:
            data["restarting"] = True
        if self.source:
            data["source"] = self.source
        if self.uploading:
            data["uploading"] = True
        if self.digest:
            data["digest"] = self.digest
        if self.labels:
            data["labels"] = dict(self.labels)
        if self.owner:
            data["owner"] = self.owner
        if not self.keep_state:
            data["keepState"] = False
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(
            managed=bool(data.get("managed", True)),
            # Interned: thousands of domains' records name mostly the same paths.
            applied=frozenset(map(sys.intern, map(str, data.get("applied", ())))),
            prune=bool(data.get("prune", True)),
            placement=tuple(map(str, data.get("placement", ()))),
            host=str(data.get("host", "")),
            restarting=bool(data.get("restarting", False)),
            source=str(data.get("source", "")),
            uploading=bool(data.get("uploading", False)),
            digest=str(data.get("digest", "")),
            labels=tuple(sorted((str(k), str(v)) for k, v in dict(data.get("labels", {})).items())),
            owner=str(data.get("owner", "")),
            keep_state=bool(data.get("keepState", True)),
        )


def record_element(record: Record) -> etree._Element:
    """The ``<vr:owner>`` element that goes inside ``<metadata>``."""
    el = etree.Element(_OWNER, nsmap={PREFIX: NAMESPACE})
    el.text = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
    return el


def read_record(root: etree._Element) -> Record | None:
    """The record stored in a domain or network document, if any."""
    el = root.find(f"metadata/{_OWNER}")
    if el is None or not (el.text or "").strip():
        return None
    try:
        return Record.from_json(json.loads(el.text or "{}"))
    except (ValueError, TypeError, AttributeError):
        return None


# How libvirt gives back a record that is the first child of <metadata> (it
# writes what we defined: ``record_element`` under ``write_record``).
_FIRST_RECORD = re.compile(
    r"<metadata>\s*<"
    + PREFIX
    + r":owner xmlns:"
    + PREFIX
    + '="'
    + re.escape(NAMESPACE)
    + r'">([^<&]*)</'
    + PREFIX
    + ":owner>"
)


def record_in(xml: str) -> Record | None:
    """``read_record`` of a document as text (``None`` when it does not parse).

    A host read gives one document per object, and parsing each only for its
    record is most of the cost of reading a host: the usual form (one
    ``<metadata>``, the record its first child, no entity in it) is read off
    the text; any other form (another namespace prefix, the record after
    other metadata, an escaped character) is parsed."""
    if xml.count("<metadata>") == 1 and (found := _FIRST_RECORD.search(xml)) is not None:
        text = found.group(1)
        if not text.strip():
            return None
        try:
            return Record.from_json(json.loads(text))
        except (ValueError, TypeError, AttributeError):
            return None
    try:
        return read_record(etree.fromstring(xml.encode()))
    except etree.XMLSyntaxError:
        return None


def write_record(root: etree._Element, record: Record | None) -> None:
    """Put (or with None, remove) the record into a document's ``<metadata>``."""
    metadata = root.find("metadata")
    if metadata is not None:
        for old in metadata.findall(_OWNER):
            metadata.remove(old)
    if record is None:
        if metadata is not None and len(metadata) == 0:
            root.remove(metadata)
        return
    if metadata is None:
        metadata = etree.Element("metadata")
        # libvirt's order: name, uuid, (title, description,) metadata, ...
        anchor = 0
        for i, child in enumerate(root):
            if child.tag in ("name", "uuid", "title", "description"):
                anchor = i + 1
        root.insert(anchor, metadata)
    metadata.append(record_element(record))


@dataclass(frozen=True, kw_only=True)
class Registry:
    """Records of pools (by name), volumes (by ``pool/name``) and secrets (by
    name) on one host, and the host's key for the digests of secret values."""

    pools: Mapping[str, Record] = field(default_factory=dict)
    volumes: Mapping[str, Record] = field(default_factory=dict)
    secrets: Mapping[str, Record] = field(default_factory=dict)
    # Random, made when the first secret value is set; never leaves the host's registry.
    secret_key: str = ""
    # Placement records of domains that live on another candidate host.
    domains: Mapping[str, Record] = field(default_factory=dict)
    exists: bool = False
    uuid: str = ""
    # What ``watch`` last applied to the host: {"revision": git sha, "source": URL}.
    applied: Mapping[str, str] = field(default_factory=dict)

    def record_for(self, kind: Kind, name: str, pool: str | None = None) -> Record | None:
        """The record kept here for a pool, a volume (of ``pool``) or a secret;
        None for other kinds (a domain or network carries its own)."""
        if kind is Kind.STORAGE_POOL:
            return self.pools.get(name)
        if kind is Kind.VOLUME:
            return self.volumes.get(f"{pool}/{name}")
        if kind is Kind.SECRET:
            return self.secrets.get(name)
        return None

    def to_xml(self) -> str:
        root = etree.Element("network")
        etree.SubElement(root, "name").text = REGISTRY_NETWORK
        if self.uuid:
            # A redefine must carry the existing UUID.
            etree.SubElement(root, "uuid").text = self.uuid
        metadata = etree.SubElement(root, "metadata")
        reg = etree.SubElement(metadata, _REGISTRY, nsmap={PREFIX: NAMESPACE})
        data: dict[str, Any] = {
            "pools": {k: v.to_json() for k, v in sorted(self.pools.items())},
            "volumes": {k: v.to_json() for k, v in sorted(self.volumes.items())},
        }
        if self.domains:
            data["domains"] = {k: v.to_json() for k, v in sorted(self.domains.items())}
        if self.secrets:
            data["secrets"] = {k: v.to_json() for k, v in sorted(self.secrets.items())}
        if self.secret_key:
            data["secretKey"] = self.secret_key
        if self.applied:
            data["applied"] = dict(self.applied)
        reg.text = json.dumps(
            data,
            sort_keys=True,
            separators=(",", ":"),
        )
        return etree.tostring(root, encoding="unicode")

    @classmethod
    def from_xml(cls, xml: str | None) -> Registry:
        if not xml:
            return cls()
        root = etree.fromstring(xml.encode())
        uuid = root.findtext("uuid") or ""
        el = root.find(f"metadata/{_REGISTRY}")
        if el is None:
            return cls(exists=True, uuid=uuid)
        data = json.loads(el.text or "{}")
        return cls(
            pools={k: Record.from_json(v) for k, v in data.get("pools", {}).items()},
            volumes={k: Record.from_json(v) for k, v in data.get("volumes", {}).items()},
            domains={k: Record.from_json(v) for k, v in data.get("domains", {}).items()},
            secrets={k: Record.from_json(v) for k, v in data.get("secrets", {}).items()},
            secret_key=str(data.get("secretKey", "")),
            exists=True,
            uuid=uuid,
            applied={str(k): str(v) for k, v in data.get("applied", {}).items()},
        )

    def with_pool(self, name: str, record: Record | None) -> Registry:
        return dataclasses.replace(self, pools=_with(self.pools, name, record))

    def with_domain(self, name: str, record: Record | None) -> Registry:
        return dataclasses.replace(self, domains=_with(self.domains, name, record))

    def with_volume(self, key: str, record: Record | None) -> Registry:
        return dataclasses.replace(self, volumes=_with(self.volumes, key, record))

    def with_secret(self, name: str, record: Record | None) -> Registry:
        return dataclasses.replace(self, secrets=_with(self.secrets, name, record))


def _with(records: Mapping[str, Record], key: str, record: Record | None) -> dict[str, Record]:
    """A copy of ``records`` with ``key`` set to ``record`` (None: removed)."""
    out = dict(records)
    if record is None:
        out.pop(key, None)
    else:
        out[key] = record
    return out
