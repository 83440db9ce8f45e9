"""What a plan is made of, and the helpers every kind's planner shares (pure).

``Action`` (what happens to one object), its field ``Change``s with their
``Disruption`` class, ``HostPlan`` and the user's ``Options``. The per-kind
planners (``reconciler.kinds``) build actions with the underscore helpers
here, which belong to the planner (``plan``, ``kinds``) and nothing else;
``plan`` puts one host's plan together.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from reconciler import canonical, diff, ownership
from reconciler.defaults import DEFAULT_MAX_PRUNE
from reconciler.model import Host, Kind, Manifest, object_ref
from reconciler.observed import Observed
from reconciler.placement import Placement
from reconciler.render import xmlutil
from reconciler.steps import (
    Defined,
    SetAutostart,
    Step,
)

# ``hosts.normalise``: a desired document as libvirt's parser stores it (None when
# the parser refuses it). Passed in so that planning stays free of libvirt.
Normalise = Callable[[Kind, str], "str | None"]


class ActionType(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ADOPT = "adopt"
    UNCHANGED = "unchanged"
    PENDING_RESTART = "pending-restart"

    @property
    def is_change(self) -> bool:
        return self not in (ActionType.UNCHANGED, ActionType.PENDING_RESTART)


class Disruption(enum.StrEnum):
    NONE = "none"
    LIVE = "live"
    NEXT_START = "next-start"
    RESTART_REQUIRED = "restart-required"
    REPLACE = "replace"

    @property
    def rank(self) -> int:
        return list(Disruption).index(self)


@dataclass(frozen=True, kw_only=True)
class Change:
    """One field-level change, with how it reaches the running object."""

    path: str
    old: str | None
    new: str | None
    disruption: Disruption
    # In the manifest's language (``fields.describe``): the friendly field the
    # change belongs to (None: only spec.xml says it) and the values in its units.
    field: str | None = None
    shown_old: str | None = None
    shown_new: str | None = None

    @property
    def label(self) -> str:
        """How a person reads the change's name: the field, else the XML path."""
        return self.field or self.path

    @property
    def display(self) -> tuple[str | None, str | None]:
        """Old and new as a person reads them: in the manifest's units when known."""
        old = self.shown_old if self.shown_old is not None else self.old
        new = self.shown_new if self.shown_new is not None else self.new
        return old, new


@dataclass(frozen=True, kw_only=True)
class Orphan:
    """A managed object that no manifest names any more, and what ``--prune`` does to it.

    ``delete``: ``--prune`` deletes it; else ``reason`` says why it is kept (the
    prune annotation, a volume's ``prune: false``, in use, the prune guard).
    """

    delete: bool
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Action:
    """What happens to one object."""

    kind: Kind
    name: str
    type: ActionType
    pool: str | None = None
    source: str | None = None
    changes: tuple[Change, ...] = ()
    steps: tuple[Step, ...] = ()
    error: str | None = None
    note: str | None = None
    xml_before: str | None = None
    xml_after: str | None = None
    blast_radius: tuple[str, ...] = ()
    # A domain with several candidate hosts: where it goes, and why not elsewhere.
    placement: Placement | None = None
    # Managed, named by no manifest: what --prune does (without --prune nothing happens).
    orphan: Orphan | None = None

    @property
    def ref(self) -> str:
        return object_ref(self.kind, self.name, self.pool)

    @property
    def disruption(self) -> Disruption | None:
        if not self.changes:
            return Disruption.NONE if self.type is not ActionType.UNCHANGED else None
        return max((c.disruption for c in self.changes), key=lambda d: d.rank)


@dataclass(frozen=True, kw_only=True)
class HostPlan:
    host: Host
    reachable: bool = True
    error: str | None = None
    actions: tuple[Action, ...] = ()

    @property
    def problems(self) -> list[Action]:
        return [a for a in self.actions if a.error is not None]


@dataclass(frozen=True, kw_only=True)
class Options:
    """What the user allowed: ``--prune``, ``--replace``, the prune guard, and which
    objects the run is about (``-l/--selector``, ``--target``)."""

    prune: bool = False
    replace: frozenset[str] = frozenset()
    max_prune: int = DEFAULT_MAX_PRUNE  # percent of a host's managed objects
    force_prune: bool = False
    selector: tuple[tuple[str, str], ...] = ()  # every label must match
    targets: frozenset[str] = frozenset()  # KIND/NAME (volumes: Volume/POOL/NAME or Volume/NAME)

    @property
    def narrowed(self) -> bool:
        return bool(self.selector or self.targets)

    def selects(self, ref: str, labels: Mapping[str, str]) -> bool:
        """Whether an object (``KIND/NAME``, and its labels) is part of the run."""
        parts = ref.split("/")
        short = f"{parts[0]}/{parts[-1]}"
        if self.targets and ref not in self.targets and short not in self.targets:
            return False
        return all(labels.get(k) == v for k, v in self.selector)


def _parse(xml: str) -> etree._Element:
    return xmlutil.parse_xml(xml, what="libvirt XML", max_bytes=64 << 20)


def _pretty(el: etree._Element) -> str:
    return xmlutil.to_string(el)


def _desired_flat(
    kind: Kind, desired: etree._Element, normalise: Normalise | None, ignore: Sequence[str] = ()
) -> canonical.Flat:
    """The desired fields, valued as libvirt will store them (``canonical.flatten_desired``;
    cached on disk, keyed by the document and libvirt's reading of it)."""
    text = etree.tostring(desired, encoding="unicode")
    normalised = normalise(kind, text) if normalise is not None else None

    def compute() -> canonical.Flat:
        parsed = _parse(normalised) if normalised is not None else None
        return canonical.flatten_desired(desired, parsed, kind, ignore=ignore)

    return canonical.cached(
        ("desired", kind.value, text, "\0" if normalised is None else normalised, *ignore),
        compute,
        lambda: canonical.flatten(desired, kind, ignore=ignore).elements,
    )


def _ignores(m: Manifest) -> list[str]:
    return [str(x) for x in m.spec.get("ignoreDifferences", ())]


def _record(
    m: Manifest, flat: canonical.Flat, host: str, placement: Sequence[str] = ()
) -> ownership.Record:
    return ownership.Record(
        managed=True,
        applied=frozenset(flat.values),
        prune=not m.prune_protected,
        placement=tuple(placement),
        host=host,
        labels=tuple(sorted(m.labels.items())),
    )


def _with_record(el: etree._Element, record: ownership.Record | None) -> str:
    copy = etree.fromstring(etree.tostring(el))
    ownership.write_record(copy, record)
    return etree.tostring(copy, encoding="unicode")


def _to_changes(
    changes: Sequence[diff.FieldChange],
    desired: canonical.Flat,
    live: canonical.Flat | None,
    disruption: Disruption,
) -> list[Change]:
    out = []
    by_path = {c.path: c for c in changes}
    for c in changes:
        source = canonical.implied_by(Kind.DOMAIN, c.path) if c.path in desired.implied else None
        if (
            source is not None
            and source in by_path
            and (by_path[source].old, by_path[source].new) == (c.old, c.new)
        ):
            # Shown as part of the change that implies it (currentMemory follows
            # memory when the manifest does not set it); still applied.
            continue
        old, new = c.old, c.new
        if (
            c.is_element
            and c.added
            and desired.elements.get(c.path) is not None
            and len(desired.elements[c.path]) + len(desired.elements[c.path].attrib)
        ):
            new = diff.element_xml(desired.elements[c.path])
        if (
            c.is_element
            and c.removed
            and live is not None
            and live.elements.get(c.path) is not None
        ):
            el = live.elements[c.path]
            if len(el) + len(el.attrib):
                old = diff.element_xml(el)
        out.append(Change(path=c.path, old=old, new=new, disruption=disruption))
    return out


def _yn(b: bool) -> str:
    return "true" if b else "false"


def _autostart(
    changes: list[Change], steps: list[Step], kind: Defined, autostart: Any, obs: Observed
) -> None:
    """The autostart change and step, when it differs."""
    if autostart is None or bool(autostart) == obs.autostart:
        return
    changes.append(
        Change(
            path="autostart",
            old=_yn(obs.autostart),
            new=_yn(bool(autostart)),
            disruption=Disruption.NONE,
        )
    )
    steps.append(SetAutostart(kind=kind, on=bool(autostart)))


def _action_type(obs: Observed, changes: Sequence[Change], steps: Sequence[Step]) -> ActionType:
    if changes:
        return ActionType.UPDATE
    if not obs.managed:
        return ActionType.ADOPT
    return ActionType.UPDATE if steps else ActionType.UNCHANGED
