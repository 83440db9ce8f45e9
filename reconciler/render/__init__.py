"""Stage 3 of the pipeline: model -> libvirt XML.

One module per kind (``domain``, ``network``, ``pool``, ``volume``, ``secret``),
each with its table of friendly fields (``FIELDS``, declared with ``bind``, which
export reads too), the device identity table (``identity``) and safe XML
handling plus the overlay merge (``xmlutil``). ``RENDERERS`` is the one map from
a kind to its renderer and field table (``kinds.Handler`` reads it); ``RULES``
maps a kind to its comparison rules (``COMPARE`` beside its ``FIELDS``, declared
with ``rules``; ``canonical`` reads them). Rendering
is pure and deterministic: the same manifest always gives the same bytes
through ``xmlutil.to_string``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from reconciler import model
from reconciler.render import domain, network, pool, secret, volume
from reconciler.render.bind import Table
from reconciler.render.domain import render_domain
from reconciler.render.network import render_network
from reconciler.render.pool import render_pool
from reconciler.render.rules import Rules
from reconciler.render.secret import render_secret
from reconciler.render.volume import render_volume
from reconciler.render.xmlutil import XMLInputError, merge_overlay, parse_xml, to_string

__all__ = [
    "RENDERERS",
    "RULES",
    "Renderer",
    "XMLInputError",
    "merge_overlay",
    "parse_xml",
    "render",
    "render_domain",
    "render_network",
    "render_pool",
    "render_volume",
    "to_string",
]

Renderer = Callable[[str, Mapping[str, Any]], etree._Element]

RENDERERS: Mapping[model.Kind, tuple[Renderer, Table]] = {
    model.Kind.DOMAIN: (render_domain, domain.FIELDS),
    model.Kind.NETWORK: (render_network, network.FIELDS),
    model.Kind.STORAGE_POOL: (render_pool, pool.FIELDS),
    model.Kind.VOLUME: (render_volume, volume.FIELDS),
    model.Kind.SECRET: (render_secret, secret.FIELDS),
}

RULES: Mapping[model.Kind, Rules] = {
    model.Kind.DOMAIN: domain.COMPARE,
    model.Kind.NETWORK: network.COMPARE,
    model.Kind.STORAGE_POOL: pool.COMPARE,
    model.Kind.VOLUME: volume.COMPARE,
    model.Kind.SECRET: secret.COMPARE,
}


def render(manifest: model.Manifest) -> etree._Element:
    """The libvirt XML for one manifest. Raises ``XMLInputError`` for a bad ``spec.xml``."""
    found = RENDERERS.get(manifest.kind)
    if found is None:
        raise ValueError(f"{manifest.kind.value} objects have no libvirt XML")
    return found[0](manifest.name, manifest.spec)
