"""Stage 3 of the pipeline: model -> libvirt XML.

One module per kind (``domain``, ``network``, ``pool``, ``volume``, ``secret``), the device
identity table (``identity``) and safe XML handling plus the overlay merge
(``xmlutil``). Rendering is pure and deterministic: the same manifest always
gives the same bytes through ``xmlutil.to_string``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from reconciler import model
from reconciler.render.domain import render_domain
from reconciler.render.network import render_network
from reconciler.render.pool import render_pool
from reconciler.render.secret import render_secret
from reconciler.render.volume import render_volume
from reconciler.render.xmlutil import XMLInputError, merge_overlay, parse_xml, to_string

__all__ = [
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

_RENDERERS: dict[model.Kind, Callable[[str, Mapping[str, Any]], etree._Element]] = {
    model.Kind.DOMAIN: render_domain,
    model.Kind.NETWORK: render_network,
    model.Kind.STORAGE_POOL: render_pool,
    model.Kind.VOLUME: render_volume,
    model.Kind.SECRET: render_secret,
}


def render(manifest: model.Manifest) -> etree._Element:
    """The libvirt XML for one manifest. Raises ``XMLInputError`` for a bad ``spec.xml``."""
    renderer = _RENDERERS.get(manifest.kind)
    if renderer is None:
        raise ValueError(f"{manifest.kind.value} objects have no libvirt XML")
    return renderer(manifest.name, manifest.spec)
