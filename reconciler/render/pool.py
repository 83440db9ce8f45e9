"""Stage 3 of the pipeline (render): a StoragePool manifest -> ``<pool>`` XML.

``FIELDS`` declares every friendly StoragePool field once (``render.bind``):
``<pool type>``, name, source, target. ``host``, ``state`` and ``autostart``
are not XML and are not rendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler.model import Kind
from reconciler.render import bind
from reconciler.render.bind import INT, Context, Prop, Table
from reconciler.render.rules import Rules, attr_key, filled
from reconciler.render.xmlutil import combine, require


def render_pool(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The pool XML for ``spec`` (a validated StoragePool spec), including ``spec.xml``."""
    root = combine(
        name,
        spec.get("xml"),
        "pool",
        lambda defaults: bind.render(FIELDS, spec, Context(name=name, defaults=defaults)),
    )
    require(root.get("type") is not None, "spec.type", "a pool needs a type", "<pool type=...>")
    return root


FIELDS = Table(
    kind="StoragePool",
    root="pool",
    fields=(
        Prop(key="type", at="@type"),
        Prop(key="source.device", at="source/device/@path"),
        Prop(key="source.dir", at="source/dir/@path"),
        Prop(key="source.host", at="source/host/@name"),
        Prop(key="source.port", at="source/host/@port", conv=INT),
        Prop(key="source.name", at="source/name"),
        Prop(key="source.initiator", at="source/initiator/iqn/@name"),
        Prop(key="source.format", at="source/format/@type"),
        Prop(key="target", at="target/path"),
    ),
)


# --- comparison rules (``canonical``, described there) ---------------------------

COMPARE = Rules(
    identity={"host": attr_key("name"), "device": attr_key("path")},
    generated=(
        (
            re.compile(r"^(capacity|allocation|available)(/@unit)?$"),
            lambda _values, _path: True,
            "a pool's sizes are measured by libvirt (a dumped pool states them)",
        ),
    ),
    filled=(
        filled(Kind.STORAGE_POOL, r"^uuid$", "generated at define"),
        filled(Kind.STORAGE_POOL, r"^(capacity|allocation|available)$", "measured by libvirt"),
    ),
)
