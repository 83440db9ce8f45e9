"""Stage 3 of the pipeline (render): a Network manifest -> ``<network>`` XML.

As documented in ``docs/manifests.md``; element order is libvirt's (name,
forward, bridge, mtu, domain, dns, ip). ``host``, ``state`` and ``autostart``
are not XML and are not rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from reconciler.render.xmlutil import combine, sub

_FORWARD_MODES = ("nat", "route", "open", "bridge")


def render_network(name: str, spec: Mapping[str, Any]) -> etree._Element:
    """The network XML for ``spec`` (a validated Network spec), including ``spec.xml``."""
    forward = spec.get("forward")
    return combine(
        name,
        spec.get("xml"),
        "network",
        lambda defaults: _friendly(name, spec),
        # forward: none beside a complete document means "no <forward>".
        remove=("forward",) if forward == "none" else (),
    )


def _friendly(name: str, spec: Mapping[str, Any]) -> etree._Element:
    root = etree.Element("network")
    sub(root, "name", name)
    forward = spec.get("forward")
    if forward in _FORWARD_MODES:
        sub(root, "forward", mode=forward)
    if "bridge" in spec:
        sub(root, "bridge", name=spec["bridge"])
    if "mtu" in spec:
        sub(root, "mtu", size=spec["mtu"])
    if "domain" in spec:
        sub(root, "domain", name=spec["domain"])
    # libvirt drops an empty <dns/> or <dhcp/>: render none.
    dns = spec.get("dns")
    if dns and dns.get("hosts"):
        dns_el = sub(root, "dns")
        for host in dns.get("hosts", ()):
            host_el = sub(dns_el, "host", ip=host["ip"])
            for hostname in host.get("names", ()):
                sub(host_el, "hostname", hostname)
    ip = spec.get("ip")
    if ip is not None:
        ip_el = sub(root, "ip", address=ip["address"], prefix=ip.get("prefix"))
        dhcp = ip.get("dhcp")
        if dhcp and (dhcp.get("range") or dhcp.get("hosts")):
            dhcp_el = sub(ip_el, "dhcp")
            if "range" in dhcp:
                start, end = dhcp["range"]
                sub(dhcp_el, "range", start=start, end=end)
            for host in dhcp.get("hosts", ()):
                mac = host.get("mac")
                sub(
                    dhcp_el,
                    "host",
                    mac=None if mac is None else str(mac).lower(),
                    name=host.get("name"),
                    ip=host["ip"],
                )
    return root
