"""Stage 3 of the pipeline (render): a Network manifest -> ``<network>`` XML.

``FIELDS`` declares every friendly Network field once (``render.bind``); render
(here) and export (``kinds.network``) both walk it. ``Live.UPDATE`` marks what an
active network takes with ``virNetworkUpdate`` (``kinds.network`` sections,
checked against these declarations in ``tests/unit/test_fields.py``). Element order is libvirt's
(name, forward, bridge, mtu, domain, dns, ip). ``host``, ``state`` and
``autostart`` are not XML and are not rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lxml import etree

from reconciler.model import Kind
from reconciler.render import bind
from reconciler.render.bind import (
    INT,
    MAC,
    TEXT,
    YES_NO,
    Context,
    Conv,
    Custom,
    Items,
    Live,
    Prop,
    Rule,
    Spec,
    Table,
)
from reconciler.render.rules import Rules, attr_key, filled
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


def _range(
    at: str,
) -> tuple[
    Callable[[etree._Element, Sequence[str] | None, Context], None],
    Callable[[etree._Element, Context], list[str] | None],
]:
    """A DHCP range ``[START, END]`` of the ``<ip>`` at ``at`` (IPv4 or IPv6)."""

    def render(root: etree._Element, pair: Sequence[str] | None, _ctx: Context) -> None:
        ip = bind.find(root, at)
        if not pair or ip is None:
            return
        dhcp = ip.find("dhcp")
        if dhcp is None:
            dhcp = sub(ip, "dhcp")
        sub(dhcp, "range", start=pair[0], end=pair[1])

    def export(root: etree._Element, _ctx: Context) -> list[str] | None:
        ip = bind.find(root, at)
        ranges = ip.findall("dhcp/range") if ip is not None else []
        if len(ranges) != 1:
            return None
        start, end = ranges[0].get("start"), ranges[0].get("end")
        return [start, end] if start and end else None

    return render, export


_V4_AT = "ip[@family!=ipv6]"
_V6_AT = "ip[@family=ipv6]"
_V4_RENDER, _V4_EXPORT = _range(_V4_AT)
_V6_RENDER, _V6_EXPORT = _range(_V6_AT)
# The flattened paths of the IPv4 and the IPv6 <ip> (keyed by address).
_V4 = r"ip(\[address=[^:\]]*\])?"
_V6 = r"ip\[address=[^\]]*:[^\]]*\]"
_RANGE = r"/dhcp/range(\[[^/]*\])?(/@(start|end))?"


def _portgroup(_network: str, spec: Mapping[str, Any], name: str) -> str | None:
    return name if any(p.get("name") == name for p in spec.get("portgroups", ())) else None


def _agree(spec: Spec, root: etree._Element) -> None:
    """What export leaves out so that the exported fields stand together."""
    for key in ("ip", "ipv6"):  # a DHCP range needs its address
        if key in spec and "address" not in spec[key]:
            del spec[key]
    # The overlay matches <ip> elements by position: a friendly IPv6 <ip> needs
    # the IPv4 one (if any) friendly too, rendered before it.
    if "ipv6" in spec and "ip" not in spec and bind.find(root, _V4_AT) is not None:
        del spec["ipv6"]


FIELDS = Table(
    kind="Network",
    root="network",
    fields=(
        Prop(key="forward", at="forward/@mode", conv=_FORWARD),
        Prop(key="bridge", at="bridge/@name"),
        Prop(key="mtu", at="mtu/@size", conv=INT),
        Prop(key="domain", at="domain/@name"),
        # libvirt drops an empty <dns/> or <dhcp/>: none is rendered.
        Prop(key="dns.forwarders", at="dns/forwarder/@addr", repeated=True),
        Items(
            key="dns.hosts",
            at="dns/host",
            flat=r"dns/host\[(?P<key>[^\]]*)\]",
            item_name=None,
            rule=Rule.ALL,
            whole=True,
            live=Live.UPDATE,
            fields=(
                Prop(key="ip", at="@ip"),
                Prop(key="names", at="hostname", repeated=True),
            ),
        ),
        Prop(key="ip.address", at=f"{_V4_AT}/@address", flat=_V4 + "(/@address)?"),
        Prop(key="ip.prefix", at=f"{_V4_AT}/@prefix", conv=INT, flat=_V4 + "/@prefix"),
        Custom(
            key="ip.dhcp.range",
            render=_V4_RENDER,
            export=_V4_EXPORT,
            live=Live.UPDATE,
            words=(("ip.dhcp.range", _V4 + _RANGE, ()),),
        ),
        Items(
            key="ip.dhcp.hosts",
            at=f"{_V4_AT}/dhcp/host",
            flat=_V4 + r"/dhcp/host\[(?P<key>[^\]]*)\]",
            item_name=None,
            rule=Rule.ALL,
            whole=True,
            live=Live.UPDATE,
            fields=(
                Prop(key="mac", at="@mac", conv=MAC),
                Prop(key="name", at="@name"),
                Prop(key="ip", at="@ip"),
            ),
        ),
        Prop(key="ipv6.address", at=f"{_V6_AT}/@address", flat=_V6 + "(/@(address|family))?"),
        Prop(key="ipv6.prefix", at=f"{_V6_AT}/@prefix", conv=INT, flat=_V6 + "/@prefix"),
        Custom(
            key="ipv6.dhcp.range",
            render=_V6_RENDER,
            export=_V6_EXPORT,
            live=Live.UPDATE,
            words=(("ipv6.dhcp.range", _V6 + _RANGE, ()),),
        ),
        Items(
            key="portgroups",
            at="portgroup",
            flat=r"portgroup\[name=(?P<key>[^\]]*)\]",
            item_name=_portgroup,
            unique="name",
            live=Live.UPDATE,
            fields=(
                Prop(key="name", at="@name", live=Live.UPDATE),
                Prop(key="default", at="@default", conv=YES_NO, live=Live.UPDATE),
                Prop(key="vlan", at="vlan/tag/@id", conv=INT, live=Live.UPDATE),
            ),
        ),
    ),
    agree=_agree,
)


# --- comparison rules (``canonical``, described there) ---------------------------


def _srv_key(el: etree._Element) -> str | None:
    return f"service={el.get('service')},protocol={el.get('protocol')},target={el.get('target')}"


COMPARE = Rules(
    identity={
        "ip": attr_key("address"),
        "host": attr_key("mac", "id", "ip", "name"),
        "range": attr_key("start"),
        "portgroup": attr_key("name"),
        "txt": attr_key("name"),
        "srv": _srv_key,
        "route": attr_key("address"),
    },
    filled=(
        filled(Kind.NETWORK, r"^uuid$", "generated at define"),
        filled(Kind.NETWORK, r"^@connections$", "the number of attached interfaces (live state)"),
    ),
)
