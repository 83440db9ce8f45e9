"""Stage 3 of the pipeline (render): a Volume manifest -> ``<volume>`` XML.

As documented in ``docs/manifests.md``: capacity and allocation in bytes,
``<target><format>``, ``<backingStore>``. ``host``, ``pool``, ``prune`` and
``source`` are not XML and are not rendered (the pool is where the volume is
created; the source is what ``hosts`` fills it from).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler import units
from reconciler.render.secret import encryption
from reconciler.render.xmlutil import combine, require, sub


def render_volume(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The volume XML for ``spec`` (a validated Volume spec), including ``spec.xml``."""
    root = combine(name, spec.get("xml"), "volume", lambda defaults: _friendly(name, spec))
    require(
        # With a source, the volume gets the size of what it is made from.
        root.find("capacity") is not None or "source" in spec,
        "spec.capacity",
        "a volume needs a capacity",
        "<volume> (with <name> and <capacity>)",
    )
    return root


def _friendly(name: str, spec: Mapping[str, Any]) -> etree._Element:
    root = etree.Element("volume")
    sub(root, "name", name)
    if "capacity" in spec:
        sub(root, "capacity", units.parse_size(spec["capacity"]), unit="bytes")
    if "allocation" in spec:
        sub(root, "allocation", units.parse_size(spec["allocation"]), unit="bytes")
    # libvirt's schema requires <target> even when it is empty (no format).
    target_el = sub(root, "target")
    if "format" in spec:
        sub(target_el, "format", type=spec["format"])
    if "encryption" in spec:
        encryption(target_el, spec["encryption"])
    backing = spec.get("backingStore")
    # ``backingStore.volume``: the file is the volume's on the host (the planner
    # and ``hosts`` fill it in).
    if backing is not None and "path" in backing:
        backing_el = sub(root, "backingStore")
        sub(backing_el, "path", backing["path"])
        if "format" in backing:
            sub(backing_el, "format", type=backing["format"])
    return root
