"""Stage 3 of the pipeline (render): a StoragePool manifest -> ``<pool>`` XML.

As documented in ``docs/manifests.md``: ``<pool type>``, name, source, target.
``host``, ``state`` and ``autostart`` are not XML and are not rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler.render.xmlutil import combine, require, sub


def render_pool(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The pool XML for ``spec`` (a validated StoragePool spec), including ``spec.xml``."""
    root = combine(name, spec.get("xml"), "pool", lambda defaults: _friendly(name, spec))
    require(root.get("type") is not None, "spec.type", "a pool needs a type", "<pool type=...>")
    return root


def _friendly(name: str, spec: Mapping[str, Any]) -> etree._Element:
    root = etree.Element("pool")
    if "type" in spec:
        root.set("type", spec["type"])
    sub(root, "name", name)
    source = spec.get("source")
    if source is not None:
        source_el = sub(root, "source")
        if "device" in source:
            sub(source_el, "device", path=source["device"])
        if "dir" in source:
            sub(source_el, "dir", path=source["dir"])
        if "host" in source:
            sub(source_el, "host", name=source["host"])
        if "name" in source:
            sub(source_el, "name", source["name"])
        if "format" in source:
            sub(source_el, "format", type=source["format"])
    if "target" in spec:
        target_el = sub(root, "target")
        sub(target_el, "path", spec["target"])
    return root
