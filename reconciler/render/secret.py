"""Stage 3 of the pipeline (render): a Secret manifest -> ``<secret>`` XML.

The UUID is derived from the name (``secret_uuid``), so a volume's or a disk's
``<encryption>`` can name the secret before it exists; the description is the
name, so the secret is recognisable in ``virsh secret-list``. The value is not
XML: ``hosts`` sets it from where ``spec.value`` says.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler.render import bind
from reconciler.render.bind import YES_NO, Context, Custom, Prop, Table
from reconciler.render.rules import Rules
from reconciler.render.xmlutil import sub

_NAMESPACE = uuid.UUID("6b1e4c1e-8f0a-4b5e-9a57-0b7f3a6c2d10")
# usage type -> the element holding its id
USAGE_ELEMENTS = {
    "volume": "volume", "ceph": "name", "iscsi": "target", "tls": "name", "vtpm": "name",
}  # fmt: skip


def secret_uuid(name: str) -> str:
    """The UUID of the secret named ``name`` (the same on every host)."""
    return str(uuid.uuid5(_NAMESPACE, f"secret/{name}"))


def render_secret(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The secret XML for ``spec`` (a validated Secret spec; secrets take no ``spec.xml``)."""
    return bind.render(FIELDS, spec, Context(name=name))


def _render_name(root: etree._Element, _spec: object, ctx: Context) -> None:
    sub(root, "uuid", secret_uuid(ctx.name))
    sub(root, "description", ctx.name)


def _no_name(_root: etree._Element, _ctx: Context) -> None:
    return None


def _render_usage(root: etree._Element, usage: Mapping[str, str], _ctx: Context) -> None:
    [(kind, usage_id)] = dict(usage).items()
    sub(sub(root, "usage", type=kind), USAGE_ELEMENTS[kind], usage_id)


def _export_usage(root: etree._Element, _ctx: Context) -> dict[str, str] | None:
    usage = root.find("usage")
    kind = usage.get("type") if usage is not None else None
    if kind is None or kind not in USAGE_ELEMENTS:
        return None
    usage_id = (root.findtext(f"usage/{USAGE_ELEMENTS[kind]}") or "").strip()
    return {kind: usage_id} if usage_id else None


def encryption(parent: etree._Element, spec: Mapping[str, Any]) -> etree._Element:
    """``<encryption format='luks'><secret type='passphrase' uuid=.../></encryption>``
    for ``spec`` (``{format, secret}``: the Secret's name) under ``parent``."""
    el = sub(parent, "encryption", format=spec["format"])
    sub(el, "secret", type="passphrase", uuid=secret_uuid(spec["secret"]))
    return el


FIELDS = Table(
    kind="Secret",
    root="secret",
    name_first=False,
    fields=(
        Prop(key="ephemeral", at="@ephemeral", conv=YES_NO, default=False, implied=True),
        Prop(key="private", at="@private", conv=YES_NO, default=True),
        # The UUID and the description come from the name (not manifest fields).
        Custom(key=None, render=_render_name, export=_no_name),
        Custom(
            key="usage",
            render=_render_usage,
            export=_export_usage,
            words=(("usage", r"usage(/.*)?", ("usage",)),),
        ),
    ),
)


# Comparison rules (``canonical``): libvirt rewrites nothing of a secret's XML.
COMPARE = Rules()
