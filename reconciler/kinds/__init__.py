"""One module per kind, one ``Handler`` each, reached through ``KINDS``.

Everything kind-specific that the kind-agnostic stages need lives in a
kind's module: the root tag of its libvirt XML, where its ownership record
lives and the step that writes a changed one, its renderer, its planner (one
signature for all), the steps that delete it, and its exporter (its field
table and comparison rules are ``render.<kind>``'s ``FIELDS`` and
``COMPARE``). ``plan`` and ``export`` look a kind up here and never branch
on it; ``tests/unit/test_kinds.py`` checks every kind has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from reconciler.kinds import domain, network, pool, secret, volume
from reconciler.kinds.base import Context, Handler, RecordHome
from reconciler.model import Kind

__all__ = ["KINDS", "Context", "Handler", "RecordHome", "handler"]

KINDS: Mapping[Kind, Handler] = MappingProxyType(
    {
        h.kind: h
        for h in (domain.HANDLER, network.HANDLER, pool.HANDLER, secret.HANDLER, volume.HANDLER)
    }
)


def handler(kind: Kind) -> Handler:
    """The handler of ``kind``; ValueError for a kind without libvirt objects (Host)."""
    found = KINDS.get(kind)
    if found is None:
        raise ValueError(f"{kind.value} objects have no libvirt XML")
    return found
