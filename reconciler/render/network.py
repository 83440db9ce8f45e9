"""Stage 3 of the pipeline (render): a Network manifest -> ``<network>`` XML.

``FIELDS`` declares every friendly Network field once (``render.bind``); render
(here) and export (``kinds.network``) both walk it. Element order is libvirt's
(name, forward, bridge, mtu, domain, dns, ip). ``host``, ``state`` and
``autostart`` are not XML and are not rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lxml import etree

from reconciler.render import bind
from reconciler.render.bind import INT, MAC, TEXT, Context, Conv, Custom, Items, Prop, Rule, Table
from reconciler.render.xmlutil import combine, sub


def render_network(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The network XML for ``spec`` (a validated Network spec), including ``spec.xml``."""
    forward = spec.get("forward")
    return combine(
        name,
        spec.get("xml"),
        "network",
        lambda defaults: bind.render(FIELDS, spec, Context(name=name, defaults=defaults)),
        # forward: none beside a complete document means "no <forward>".
        remove=("forward",) if forward == "none" else (),
    )


# ``forward: none`` is no <forward> element.
_FORWARD = Conv(
    name="mode (none: no element)",
    write=lambda v: None if v == "none" else str(v),
    read=TEXT.read,
)


def _render_range(root: etree._Element, pair: Sequence[str] | None, _ctx: Context) -> None:
    ip = root.find("ip")
    if not pair or ip is None:
        return
    dhcp = ip.find("dhcp")
    if dhcp is None:
        dhcp = sub(ip, "dhcp")
    sub(dhcp, "range", start=pair[0], end=pair[1])


def _export_range(root: etree._Element, _ctx: Context) -> list[str] | None:
    ip = root.find("ip")
    ranges = ip.findall("dhcp/range") if ip is not None else []
    if len(ranges) != 1:
        return None
    start, end = ranges[0].get("start"), ranges[0].get("end")
    return [start, end] if start and end else None


_IP = r"ip(\[[^/]*\])?"

FIELDS = Table(
    kind="Network",
    root="network",
    fields=(
        Prop(key="forward", at="forward/@mode", conv=_FORWARD),
        Prop(key="bridge", at="bridge/@name"),
        Prop(key="mtu", at="mtu/@size", conv=INT),
        Prop(key="domain", at="domain/@name"),
        # libvirt drops an empty <dns/> or <dhcp/>: none is rendered.
        Items(
            key="dns.hosts",
            at="dns/host",
            flat=r"dns/host\[(?P<key>[^\]]*)\]",
            item_name=None,
            rule=Rule.ALL,
            whole=True,
            fields=(
                Prop(key="ip", at="@ip"),
                Prop(key="names", at="hostname", repeated=True),
            ),
        ),
        Prop(key="ip.address", at="ip/@address"),
        Prop(key="ip.prefix", at="ip/@prefix", conv=INT),
        Custom(
            key="ip.dhcp.range",
            render=_render_range,
            export=_export_range,
            words=(("ip.dhcp.range", _IP + r"/dhcp/range(\[[^/]*\])?(/@(start|end))?", ()),),
        ),
        Items(
            key="ip.dhcp.hosts",
            at="ip/dhcp/host",
            flat=_IP + r"/dhcp/host\[(?P<key>[^\]]*)\]",
            item_name=None,
            rule=Rule.ALL,
            whole=True,
            fields=(
                Prop(key="mac", at="@mac", conv=MAC),
                Prop(key="name", at="@name"),
                Prop(key="ip", at="@ip"),
            ),
        ),
    ),
)
