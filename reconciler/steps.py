"""The libvirt operations a plan asks ``hosts`` to carry out: one typed value each (pure).

``plan`` builds them, ``execute`` hands them to ``hosts.Session.run``, which
dispatches on the type with ``match`` (and ``typing.assert_never``, so a new
step that ``hosts`` does not carry out fails the type check). The operations
libvirt offers for domains, networks and pools alike (define, start, stop,
undefine, autostart) take the kind; the others are one type per operation.

``label`` names a step in messages (``Domain/web on host a: dom_define: ...``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from reconciler import ownership
from reconciler.model import Kind
from reconciler.values import ValueRef

# The kinds that libvirt defines, starts, stops and undefines the same way.
Defined = Literal[Kind.DOMAIN, Kind.NETWORK, Kind.STORAGE_POOL]
# The kinds whose ownership record lives in the host's registry.
Registered = Literal[Kind.STORAGE_POOL, Kind.VOLUME, Kind.SECRET]

_PREFIX = {Kind.DOMAIN: "dom", Kind.NETWORK: "net", Kind.STORAGE_POOL: "pool"}


class NetSection(enum.StrEnum):
    """The part of a running network that ``networkUpdate`` changes."""

    IP_DHCP_HOST = "ip-dhcp-host"
    IP_DHCP_RANGE = "ip-dhcp-range"
    DNS_HOST = "dns-host"
    DNS_TXT = "dns-txt"
    DNS_SRV = "dns-srv"
    PORTGROUP = "portgroup"


class NetCommand(enum.StrEnum):
    MODIFY = "modify"
    DELETE = "delete"
    ADD_LAST = "add-last"


# --- the same for domains, networks and pools -------------------------------------


@dataclass(frozen=True, kw_only=True)
class Define:
    """Define (or redefine) the object from ``xml``."""

    kind: Defined
    xml: str

    @property
    def label(self) -> str:
        return f"{_PREFIX[self.kind]}_define"


@dataclass(frozen=True, kw_only=True)
class Start:
    """Start the object; ``paused``: a domain starts with its vCPUs paused."""

    kind: Defined
    paused: bool = False

    @property
    def label(self) -> str:
        return f"{_PREFIX[self.kind]}_start"


@dataclass(frozen=True, kw_only=True)
class Stop:
    """Stop the object at once (a domain is destroyed, not shut down)."""

    kind: Defined

    @property
    def label(self) -> str:
        return "dom_destroy" if self.kind is Kind.DOMAIN else f"{_PREFIX[self.kind]}_stop"


@dataclass(frozen=True, kw_only=True)
class Undefine:
    """Undefine the object; a domain keeps its NVRAM and vTPM state on the host
    unless ``keep_state`` is False (the domain's ``keepState: false``)."""

    kind: Defined
    keep_state: bool = True

    @property
    def label(self) -> str:
        return f"{_PREFIX[self.kind]}_undefine"


@dataclass(frozen=True, kw_only=True)
class SetAutostart:
    kind: Defined
    on: bool

    @property
    def label(self) -> str:
        return f"{_PREFIX[self.kind]}_autostart"


# --- domains ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SetDomainRecord:
    """Write the ownership record (``xml``: the ``<vr:owner>`` element) into the
    domain's metadata, without redefining it."""

    xml: str
    label = "dom_set_record"


@dataclass(frozen=True, kw_only=True)
class SuspendDomain:
    label = "dom_suspend"


@dataclass(frozen=True, kw_only=True)
class ResumeDomain:
    label = "dom_resume"


@dataclass(frozen=True, kw_only=True)
class ShutdownDomain:
    """Ask the guest to shut down; destroy it after ``timeout`` seconds."""

    timeout: float
    label = "dom_shutdown"


@dataclass(frozen=True, kw_only=True)
class RestartDomain:
    """Shut down (as ``ShutdownDomain``), then start again."""

    timeout: float
    label = "dom_restart"


@dataclass(frozen=True, kw_only=True)
class AttachDevice:
    xml: str
    live: bool
    config: bool
    label = "dom_attach"


@dataclass(frozen=True, kw_only=True)
class UpdateDevice:
    xml: str
    live: bool
    config: bool
    label = "dom_update_device"


@dataclass(frozen=True, kw_only=True)
class DetachDevice:
    """Detach a device; with ``live`` and an ``alias``, wait until the guest released it."""

    xml: str
    alias: str | None
    live: bool
    config: bool
    label = "dom_detach"


@dataclass(frozen=True, kw_only=True)
class SetMemory:
    kib: int
    live: bool
    config: bool
    label = "dom_set_memory"


@dataclass(frozen=True, kw_only=True)
class SetVcpus:
    count: int
    live: bool
    config: bool
    label = "dom_set_vcpus"


@dataclass(frozen=True, kw_only=True)
class SetDomainText:
    """Set the domain's ``<title>`` or ``<description>`` (``text`` None: remove it)
    with ``setMetadata``, running or not: no restart."""

    which: Literal["title", "description"]
    text: str | None
    live: bool
    config: bool
    label = "dom_set_metadata"


# --- networks, pools, volumes -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NetUpdate:
    """Change one entry of a network in place (``parent_index``: its ``<ip>``, -1: none)."""

    command: NetCommand
    section: NetSection
    parent_index: int
    xml: str
    live: bool
    config: bool
    label = "net_update"


@dataclass(frozen=True, kw_only=True)
class BuildPool:
    """Build the pool's storage (mkdir for a dir pool; never formats a device)."""

    label = "pool_build"


@dataclass(frozen=True, kw_only=True)
class CreateVolume:
    """Create an empty volume; ``backing`` (``POOL``, ``NAME``): a qcow2 overlay on
    that volume, whose file ``hosts`` looks up when it creates this one."""

    pool: str
    xml: str
    backing: tuple[str, str] | None = None
    label = "vol_create"


@dataclass(frozen=True, kw_only=True)
class UploadVolume:
    """Create the volume from ``xml`` and fill it from a local image: ``file`` (an
    absolute path) or ``url`` (downloaded into the cache first). ``sha256`` is
    checked before anything is sent; the image's format must be the volume's;
    without a ``<capacity>`` in ``xml`` the volume gets the image's virtual size.
    A failed upload deletes the volume again. ``data``: the image's bytes, made
    in memory (a cloud-init seed), instead of a file or URL."""

    pool: str
    xml: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    data: bytes | None = field(default=None, repr=False)
    label = "vol_upload"


@dataclass(frozen=True, kw_only=True)
class CloneVolume:
    """Create the volume from ``xml`` as a copy of ``POOL/NAME`` (any pool of the
    host); without a ``<capacity>`` in ``xml`` it gets the original's."""

    pool: str
    xml: str
    from_pool: str
    from_name: str
    label = "vol_clone"


@dataclass(frozen=True, kw_only=True)
class ResizeVolume:
    """Grow a volume to ``capacity`` bytes; through ``domain`` when one runs on it."""

    pool: str
    capacity: int
    domain: str | None
    label = "vol_resize"


@dataclass(frozen=True, kw_only=True)
class DeleteVolume:
    pool: str
    label = "vol_delete"


@dataclass(frozen=True, kw_only=True)
class DefineSecret:
    """Define (or redefine) a secret from ``xml`` (its value is set apart)."""

    xml: str
    label = "secret_define"


@dataclass(frozen=True, kw_only=True)
class SetSecretValue:
    """Set a secret's value, read from ``value`` (a file or an environment
    variable) only now, and keep ``record`` with the value's keyed digest in the
    host's registry (the key is made there when missing). The value itself is in
    no step, plan or record."""

    uuid: str
    value: ValueRef
    record: ownership.Record
    label = "secret_set_value"


@dataclass(frozen=True, kw_only=True)
class UndefineSecret:
    uuid: str
    label = "secret_undefine"


@dataclass(frozen=True, kw_only=True)
class RegistrySet:
    """Write (``record``) or drop (None) the record of a pool, volume or secret in
    the host's registry; ``key`` is the pool's or secret's name or ``POOL/VOLUME``."""

    kind: Registered
    key: str
    record: ownership.Record | None
    label = "registry_set"


Step = (
    Define
    | Start
    | Stop
    | Undefine
    | SetAutostart
    | SetDomainRecord
    | SuspendDomain
    | ResumeDomain
    | ShutdownDomain
    | RestartDomain
    | AttachDevice
    | UpdateDevice
    | DetachDevice
    | SetMemory
    | SetVcpus
    | SetDomainText
    | NetUpdate
    | BuildPool
    | CreateVolume
    | UploadVolume
    | CloneVolume
    | ResizeVolume
    | DeleteVolume
    | DefineSecret
    | SetSecretValue
    | UndefineSecret
    | RegistrySet
)
