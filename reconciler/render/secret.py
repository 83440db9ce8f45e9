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
    root = etree.Element("secret")
    root.set("ephemeral", "yes" if spec.get("ephemeral", False) else "no")
    root.set("private", "yes" if spec.get("private", True) else "no")
    sub(root, "uuid", secret_uuid(name))
    sub(root, "description", name)
    [(kind, usage_id)] = dict(spec["usage"]).items()
    usage = sub(root, "usage", type=kind)
    sub(usage, USAGE_ELEMENTS[kind], usage_id)
    return root


def encryption(parent: etree._Element, spec: Mapping[str, Any]) -> etree._Element:
    """``<encryption format='luks'><secret type='passphrase' uuid=.../></encryption>``
    for ``spec`` (``{format, secret}``: the Secret's name) under ``parent``."""
    el = sub(parent, "encryption", format=spec["format"])
    sub(el, "secret", type="passphrase", uuid=secret_uuid(spec["secret"]))
    return el
