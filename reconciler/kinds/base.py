"""The handler every kind provides, and what its planner may know (pure)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from lxml import etree

from reconciler import ownership, render
from reconciler.actions import Action, Normalise, Options
from reconciler.model import Host, Kind, Manifest
from reconciler.observed import Observed
from reconciler.placement import Placement
from reconciler.render import bind
from reconciler.steps import Step

Spec = dict[str, Any]


class RecordHome(enum.StrEnum):
    """Where the ownership record of an object lives (see ``ownership``)."""

    # In the object's own XML, <metadata><vr:owner/></metadata>.
    METADATA = "metadata"
    # In the host's registry (libvirt drops <metadata> of pools and volumes).
    REGISTRY = "registry"


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a kind's planner may know of the host besides its own object."""

    host: Host
    options: Options
    registry: ownership.Registry
    # Running domains attached to each network (a network restart's blast radius).
    network_users: Mapping[str, tuple[str, ...]]
    # Domains using each volume (``POOL/NAME``), running or not, and the
    # volumes it is the backing file of (as ``volume POOL/NAME``).
    volume_users: Mapping[str, tuple[str, ...]]
    running_domains: frozenset[str]
    # A domain with several candidate hosts: where it goes.
    placement: Placement | None = None
    # The file of each volume on the host (``POOL/NAME`` -> path, format).
    volume_files: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    # ``hosts.normalise``, passed in so that planning stays free of libvirt.
    normalise: Normalise | None = None


@dataclass(frozen=True, kw_only=True)
class Reference:
    """Another object that a manifest needs on its host."""

    field: str  # the manifest field naming it, dotted: "spec.disks.0.source.volume"
    kind: Kind
    name: str
    pool: str | None = None


class Power(NamedTuple):
    """An object's power state for ``status``: the state, its reason, healthy or not."""

    state: str | None
    reason: str = ""
    healthy: bool = True


def no_references(_m: Manifest) -> list[Reference]:
    return []


def active_power(obs: Observed) -> Power:
    """A network's or a pool's power: active or inactive, always healthy."""
    return Power(obs.state)


class Planner(Protocol):
    def __call__(
        self, m: Manifest, desired: etree._Element, obs: Observed | None, ctx: Context
    ) -> Action: ...


@dataclass(frozen=True, kw_only=True)
class Handler:
    """Everything kind-specific that the kind-agnostic stages need."""

    kind: Kind
    # What messages call it ("storage pool").
    label: str
    # The root element of the libvirt XML.
    root: str
    record_home: RecordHome
    # Desired XML and what the host has -> one action.
    plan: Planner
    # A managed object to delete: its record (None: not ours) and the steps.
    delete: Callable[[Observed, ownership.Registry], tuple[ownership.Record | None, list[Step]]]
    # The step that writes a managed object's changed record where it lives
    # (``record_home``): only its labels changed, nothing else.
    write_record: Callable[[Observed, ownership.Record], Step]
    # The exported fields that are not XML: power state, autostart, the pool.
    export_state: Callable[[Observed], Spec]
    # Friendly fields a document-only export keeps beside spec.xml.
    export_required: tuple[str, ...] = ()
    # The objects a manifest of this kind needs on its host (checked at plan time).
    references: Callable[[Manifest], list[Reference]] = no_references
    # Its power state, for ``status`` (``Power(None)``: it has none).
    power: Callable[[Observed], Power] = active_power
    # Whether a manifest takes ``spec.xml`` (export tries an overlay, then the
    # whole document); without, export writes the friendly fields only.
    overlay: bool = True
    # Exported fields besides the XML's friendly fields (a secret's value file).
    export_more: Callable[[etree._Element], Spec] | None = None

    @property
    def fields(self) -> bind.Table:
        """The kind's friendly fields, declared once (``render.<kind>.FIELDS``)."""
        return render.RENDERERS[self.kind][1]

    def render(self, name: str, spec: Mapping[str, Any]) -> etree._Element:
        """Friendly fields -> libvirt XML (``render``)."""
        return render.RENDERERS[self.kind][0](name, spec)

    def export(self, root: etree._Element, shared_macs: Collection[str] = ()) -> Spec:
        """Libvirt XML (cleaned) -> friendly fields, walking the same table as
        render; ``shared_macs``: MACs several domains share (they stay in the overlay)."""
        ctx = bind.Context(name=root.findtext("name") or "", shared_macs=shared_macs)
        spec = bind.export(self.fields, root, ctx)
        if self.export_more is not None:
            spec.update(self.export_more(root))
        return spec

    @property
    def order(self) -> int:
        """Creation order; deletion runs in reverse."""
        return self.kind.order
