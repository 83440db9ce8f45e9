"""Stage 3 of the pipeline (render): a Volume manifest -> ``<volume>`` XML.

``FIELDS`` declares every friendly Volume field once (``render.bind``):
capacity and allocation in bytes, ``<target><format>``, ``<backingStore>``.
``host``, ``pool``, ``prune`` and ``source`` are not XML and are not rendered
(the pool is where the volume is created; the source is what ``hosts`` fills it
from).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler.model import Kind
from reconciler.render import bind
from reconciler.render.bind import BYTES, Context, Custom, Prop, Spec, Table
from reconciler.render.rules import Rules, filled
from reconciler.render.secret import encryption
from reconciler.render.xmlutil import combine, require, sub


def render_volume(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The volume XML for ``spec`` (a validated Volume spec), including ``spec.xml``."""
    root = combine(
        name,
        spec.get("xml"),
        "volume",
        lambda defaults: bind.render(FIELDS, spec, Context(name=name, defaults=defaults)),
    )
    require(
        # With a source, the volume gets the size of what it is made from.
        root.find("capacity") is not None or "source" in spec,
        "spec.capacity",
        "a volume needs a capacity",
        "<volume> (with <name> and <capacity>)",
    )
    return root


def _render_target(root: etree._Element, _spec: object, _ctx: Context) -> None:
    # libvirt's schema requires <target> even when it is empty (no format).
    if root.find("target") is None:
        sub(root, "target")


def _none(_root: etree._Element, _ctx: Context) -> None:
    return None


def _render_encryption(root: etree._Element, spec: Mapping[str, Any] | None, _ctx: Context) -> None:
    if spec is not None:
        encryption(root.find("target"), spec)  # type: ignore[arg-type]


def _render_backing(root: etree._Element, backing: Mapping[str, Any] | None, _ctx: Context) -> None:
    # ``backingStore.volume``: the file is the volume's on the host (the planner
    # and ``hosts`` fill it in).
    if backing is None or "path" not in backing:
        return
    el = sub(root, "backingStore")
    sub(el, "path", backing["path"])
    if "format" in backing:
        sub(el, "format", type=backing["format"])


def _export_backing(root: etree._Element, _ctx: Context) -> Spec | None:
    path = root.findtext("backingStore/path")
    if not path:
        return None
    out: Spec = {"path": path}
    fmt = root.find("backingStore/format")
    if fmt is not None and fmt.get("type"):
        out["format"] = fmt.get("type")
    return out


FIELDS = Table(
    kind="Volume",
    root="volume",
    fields=(
        Prop(key="capacity", at="capacity", conv=BYTES),
        Prop(key="allocation", at="allocation", conv=BYTES),
        Custom(key=None, render=_render_target, export=_none),
        Prop(key="format", at="target/format/@type"),
        Custom(
            key="encryption",
            render=_render_encryption,
            # The secret is named by a UUID derived from its name (not
            # reversible): <encryption> stays in the overlay.
            export=_none,
            words=(("encryption", r"target/encryption(/.*)?", ("encryption",)),),
        ),
        Custom(
            key="backingStore",
            render=_render_backing,
            export=_export_backing,
            words=(
                ("backingStore.path", r"backingStore/path", ("backingStore",)),
                ("backingStore.format", r"backingStore/format(/@type)?", ("backingStore",)),
            ),
        ),
    ),
)


# --- comparison rules (``canonical``, described there) ---------------------------


def _same_capacity(desired: str, live: str) -> bool:
    # Formats round a capacity up (qcow2 to 512 bytes); a larger live value
    # within that rounding is the same size.
    try:
        d, v = int(desired), int(live)
    except ValueError:
        return False
    return d <= v < d + 512 and v % 512 == 0


COMPARE = Rules(
    scaled={"capacity": (1, "bytes"), "allocation": (1, "bytes")},
    filled=(
        filled(Kind.VOLUME, r"^key$", "derived from the path"),
        filled(Kind.VOLUME, r"^@type$", "derived from the pool type"),
        filled(Kind.VOLUME, r"^(allocation|physical)$", "measured by libvirt"),
        filled(Kind.VOLUME, r"^source$", "extents of disk/logical volumes, measured by libvirt"),
        filled(Kind.VOLUME, r"^target/path$", "the pool's target path plus the volume name"),
        filled(Kind.VOLUME, r"^target/(permissions|timestamps)$", "read from the file"),
        filled(
            Kind.VOLUME,
            r"^backingStore/(?!path$|format$)[^/]+$",
            "details of the backing file, read from it",
        ),
    ),
    equivalent=((re.compile(r"^capacity$"), _same_capacity),),
)
