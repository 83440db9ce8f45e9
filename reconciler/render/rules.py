"""How a kind declares its comparison rules, read by ``canonical`` (pure).

Each kind's home (``render/<kind>.py``, the domain's long QEMU defaults in
``render/domain_rules.py``) declares one ``Rules`` beside its ``FIELDS``:
what libvirt rewrites, fills in or measures for that kind. ``canonical``
keeps only the kind-agnostic walk and reads every rule through
``render.RULES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from reconciler.model import Kind

Fields = dict[str, str]
Identity = Callable[[etree._Element], str | None]


def attr_key(*names: str) -> Identity:
    """The identity of a repeated element: its first attribute of ``names`` present."""

    def key(el: etree._Element) -> str | None:
        for name in names:
            value = el.get(name)
            if value is not None:
                return f"{name}={value.lower() if name == 'mac' else value}"
        return None

    return key


@dataclass(frozen=True, kw_only=True)
class Filled:
    """A value libvirt fills in: ``path`` (flattened, regex), optionally only with
    ``value``, only for an element whose ``type`` attribute matches ``of_type``, or
    only ``when`` the element (for an attribute: the element owning it) and the
    document around it say libvirt would add exactly this back."""

    kind: Kind
    path: re.Pattern[str]
    why: str
    value: re.Pattern[str] | None = None
    of_type: re.Pattern[str] | None = None
    when: Callable[[etree._Element], bool] | None = None

    def matches(
        self, kind: Kind, path: str, value: str, element: etree._Element | None = None
    ) -> bool:
        if kind is not self.kind or self.path.match(path) is None:
            return False
        if self.value is not None and self.value.fullmatch(value) is None:
            return False
        if self.when is not None and (element is None or not self.when(element)):
            return False
        if self.of_type is not None:
            return (
                element is not None and self.of_type.fullmatch(element.get("type", "")) is not None
            )
        return True


def filled(
    kind: Kind,
    path: str,
    why: str,
    value: str | None = None,
    of_type: str | None = None,
    when: Callable[[etree._Element], bool] | None = None,
) -> Filled:
    return Filled(
        kind=kind,
        path=re.compile(path),
        why=why,
        value=None if value is None else re.compile(value),
        of_type=None if of_type is None else re.compile(of_type),
        when=when,
    )


# Devices and other repeated elements: a parent path and its children, keyed.
ChildKeys = Callable[[etree._Element], Iterable[tuple[str, etree._Element]]]
# A rule stating what a document means (the same for desired, inactive and live XML).
Derive = Callable[[Fields, dict[str, etree._Element]], None]


@dataclass(frozen=True, kw_only=True)
class Rules:
    """One kind's comparison rules (``canonical`` describes each); all may be empty."""

    # Repeated, non-device elements by tag -> their identity.
    identity: Mapping[str, Identity] = field(default_factory=dict)
    # A parent path whose children a function keys (a domain's devices).
    children: Mapping[str, ChildKeys] = field(default_factory=dict)
    # Elements whose text is a scaled size: tag -> (canonical unit, default unit).
    scaled: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    # Values libvirt measures or generates: (path, test on the values at it, why).
    generated: tuple[tuple[re.Pattern[str], Callable[[Fields, str], bool], str], ...] = ()
    # What the test driver drops that a real host keeps: (path, why).
    kept_by_hosts: tuple[tuple[re.Pattern[str], str], ...] = ()
    # Attributes left out when they equal another value: path -> that value's path.
    implied: Mapping[str, str] = field(default_factory=dict)
    derived: tuple[Derive, ...] = ()
    # What libvirt fills in by itself (export leaves it out).
    filled: tuple[Filled, ...] = ()
    # Whether export also leaves out an element that held only filled values (no
    # for a volume: its empty ``<target/>`` is still required by the schema).
    drop_emptied: bool = False
    # A desired value and the value libvirt shows for it: (path, same).
    equivalent: tuple[tuple[re.Pattern[str], Callable[[str, str], bool]], ...] = ()
    # Children libvirt derives from an attribute: (attribute path, child tag).
    derived_children: tuple[tuple[re.Pattern[str], str], ...] = ()
