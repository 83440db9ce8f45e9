"""Stage 2 of the pipeline: the validated desired state as frozen dataclasses.

``manifests`` builds these from YAML; every later stage reads them and none
changes them. The per-kind ``spec`` stays the schema-validated mapping (the JSON
Schemas in ``reconciler/schemas/`` are the authority on its shape); the fields every stage
needs are lifted out into typed attributes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "virt-reconcile/v1"
ANNOTATION_PRUNE = "virt-reconcile/prune"
ANNOTATION_SUSPEND = "virt-reconcile/suspend"


class Kind(enum.StrEnum):
    """The object kinds, in creation order (secrets before pools before volumes ...)."""

    SECRET = "Secret"
    STORAGE_POOL = "StoragePool"
    VOLUME = "Volume"
    NETWORK = "Network"
    DOMAIN = "Domain"
    HOST = "Host"

    @property
    def order(self) -> int:
        """Creation order; deletion runs in reverse."""
        return _ORDER[self]


_ORDER = {kind: i for i, kind in enumerate(Kind)}  # sorting thousands of objects asks often


def object_ref(kind: Kind, name: str, pool: str | None = None) -> str:
    """``KIND/NAME``, volumes ``Volume/POOL/NAME``: how plans, status and messages
    name an object."""
    if kind is Kind.VOLUME:
        return f"{kind.value}/{pool}/{name}"
    return f"{kind.value}/{name}"


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where a document (or one of its fields) came from, for error messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, kw_only=True)
class Host:
    """A libvirt host, declared by a ``kind: Host`` document or by ``-c URI``."""

    name: str
    uri: str
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """One validated document of kind Domain, Network, StoragePool or Volume.

    ``host`` is ``spec.host`` (None: the single default host, or placement).
    ``lines`` maps a dotted field path ("spec.disks.0.target") to its line.
    """

    kind: Kind
    name: str
    spec: Mapping[str, Any]
    source: Source
    host: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)
    # A volume derived from another manifest (a Domain's cloud-init seed): the
    # bytes it is filled with, and ``KIND/NAME`` of the manifest it belongs to.
    content: bytes | None = field(default=None, repr=False)
    owner: str | None = None
    # The XML ``manifests.load`` rendered it to (it renders every manifest to
    # check it), so a run need not render it again; None: not rendered yet.
    rendered: str | None = field(default=None, compare=False, repr=False)
    # A digest of what it was read from (the file's name and bytes, the document's
    # line): equal origins, equal manifests (a key for cached verdicts); "": not
    # read from a file as it is (a derived manifest, a test's). A ``replace`` that
    # changes another field must reset it.
    origin: str = field(default="", compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``KIND/NAME`` as used by ``--replace`` and messages; volumes as pool/name."""
        return object_ref(self.kind, self.name, self.spec.get("pool"))

    @property
    def prune_protected(self) -> bool:
        """``virt-reconcile/prune: "false"``: never delete this object."""
        return self.annotations.get(ANNOTATION_PRUNE, "").lower() == "false"

    @property
    def suspended(self) -> bool:
        """``virt-reconcile/suspend: "true"``: leave the object alone."""
        return self.annotations.get(ANNOTATION_SUSPEND, "").lower() == "true"

    def source_of(self, path: str) -> Source:
        """The source line of a dotted field path, falling back to the document."""
        while path:
            if path in self.lines:
                return Source(file=self.source.file, line=self.lines[path])
            path = path.rpartition(".")[0]
        return self.source


@dataclass(frozen=True, kw_only=True)
class ManifestSet:
    """Everything loaded from the given paths, valid as a whole."""

    objects: tuple[Manifest, ...] = ()
    hosts: tuple[Host, ...] = ()
    files: tuple[str, ...] = ()
    # sha256 of the files' names and bytes, in reading order (a saved plan pins it).
    digest: str = ""
