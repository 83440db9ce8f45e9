"""Stage 3 (render): golden files, safe XML parsing, overlay merge, device identity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from lxml import etree

from reconciler import model, render
from reconciler.render import identity, xmlutil

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "render"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def load_manifest(case: str) -> model.Manifest:
    path = GOLDEN / f"{case}.yaml"
    doc = yaml.safe_load(path.read_text())
    return model.Manifest(
        kind=model.Kind(doc["kind"]),
        name=doc["metadata"]["name"],
        spec=doc["spec"],
        source=model.Source(file=str(path), line=1),
    )


def test_golden_cases_exist() -> None:
    for case in (
        "domain-minimal",
        "domain-full",
        "domain-overlay",
        "domain-fulldoc",
        "network-nat-dhcp",
        "network-bridge",
        "pool-dir",
        "pool-logical",
        "volume-qcow2-backing",
    ):
        assert case in CASES


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, regen_golden: bool) -> None:
    got = xmlutil.to_string(render.render(load_manifest(case)))
    expected = GOLDEN / f"{case}.xml"
    if regen_golden:
        expected.write_text(got)
    assert got == expected.read_text()


@pytest.mark.parametrize("case", CASES)
def test_render_is_deterministic(case: str) -> None:
    m = load_manifest(case)
    assert xmlutil.to_string(render.render(m)) == xmlutil.to_string(render.render(m))


def test_host_kind_has_no_xml() -> None:
    m = model.Manifest(
        kind=model.Kind.HOST, name="h", spec={}, source=model.Source(file="x", line=1)
    )
    with pytest.raises(ValueError):
        render.render(m)


# --- parse_xml -----------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<domain>&lol3;</domain>
"""

XXE = """<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<domain><name>&xxe;</name></domain>"""


def test_parse_xml_ok() -> None:
    root = xmlutil.parse_xml("<domain>\n  <name> x </name>\n</domain>")
    assert root.tag == "domain"
    assert root.findtext("name") == " x "


def test_parse_xml_with_declaration() -> None:
    root = xmlutil.parse_xml('<?xml version="1.0" encoding="UTF-8"?>\n<pool type="dir"/>')
    assert root.get("type") == "dir"


@pytest.mark.parametrize("text", [BILLION_LAUGHS, XXE, "<!DOCTYPE domain>\n<domain/>"])
def test_parse_xml_rejects_doctype(text: str) -> None:
    with pytest.raises(xmlutil.XMLInputError, match=r"line \d+: <!DOCTYPE"):
        xmlutil.parse_xml(text, what="spec.xml")


def test_parse_xml_rejects_undeclared_entity() -> None:
    with pytest.raises(xmlutil.XMLInputError, match="line 2") as e:
        xmlutil.parse_xml("<domain>\n<name>&xxe;</name></domain>")
    assert e.value.line == 2


def test_parse_xml_rejects_oversize() -> None:
    text = "<domain>" + "<a/>" * 300 + "</domain>"
    with pytest.raises(xmlutil.XMLInputError, match="limit"):
        xmlutil.parse_xml(text, max_bytes=1000)
    assert xmlutil.parse_xml(text, max_bytes=len(text)).tag == "domain"


def test_parse_xml_default_limit_is_one_mib() -> None:
    text = "<domain>" + " " * (1 << 20) + "</domain>"
    with pytest.raises(xmlutil.XMLInputError, match="limit"):
        xmlutil.parse_xml(text)


@pytest.mark.parametrize("text", ["", "<domain>", "not xml", "<a></b>"])
def test_parse_xml_rejects_malformed(text: str) -> None:
    with pytest.raises(xmlutil.XMLInputError):
        xmlutil.parse_xml(text)


def test_parse_xml_error_is_value_error() -> None:
    assert issubclass(xmlutil.XMLInputError, ValueError)


def test_overlay_root_must_match_kind() -> None:
    with pytest.raises(xmlutil.XMLInputError, match="<domain>"):
        render.render_domain("x", {"memory": "1GiB", "xml": "<network/>"})


def test_overlay_doctype_rejected_through_render() -> None:
    with pytest.raises(xmlutil.XMLInputError, match="DOCTYPE"):
        render.render_network("n", {"xml": XXE.replace("domain", "network")})


# --- merge_overlay and identity ------------------------------------------------


def merged(base: str, overlay: str) -> etree._Element:
    b = xmlutil.parse_xml(base)
    xmlutil.merge_overlay(b, xmlutil.parse_xml(overlay))
    return b


def test_merge_disk_by_target() -> None:
    d = merged(
        "<domain><devices>"
        "<disk type='file'><target dev='vda'/></disk>"
        "<disk type='file'><target dev='vdb'/></disk>"
        "</devices></domain>",
        "<domain><devices><disk><target dev='vdb'/><readonly/></disk></devices></domain>",
    )
    disks = d.findall("devices/disk")
    assert len(disks) == 2
    assert disks[0].find("readonly") is None
    assert disks[1].find("readonly") is not None


def test_merge_interface_by_mac_case_insensitive() -> None:
    d = merged(
        "<domain><devices>"
        "<interface type='network'><mac address='52:54:00:00:00:0a'/></interface>"
        "<interface type='network'><mac address='52:54:00:00:00:0b'/></interface>"
        "</devices></domain>",
        "<domain><devices>"
        "<interface><mac address='52:54:00:00:00:0B'/><model type='e1000'/></interface>"
        "<interface type='bridge'><mac address='52:54:00:00:00:0c'/></interface>"
        "</devices></domain>",
    )
    nics = d.findall("devices/interface")
    assert [n.find("mac").get("address") for n in nics] == [  # type: ignore[union-attr]
        "52:54:00:00:00:0a",
        "52:54:00:00:00:0B",
        "52:54:00:00:00:0c",
    ]
    assert nics[0].find("model") is None
    assert nics[1].find("model").get("type") == "e1000"  # type: ignore[union-attr]


def test_merge_interface_without_mac_by_position() -> None:
    d = merged(
        "<domain><devices><interface type='network'><mac address='52:54:00:00:00:0a'/>"
        "</interface></devices></domain>",
        "<domain><devices><interface><link state='down'/></interface></devices></domain>",
    )
    nics = d.findall("devices/interface")
    assert len(nics) == 1
    assert nics[0].find("link") is not None


def test_merge_controller_by_type_and_index() -> None:
    d = merged(
        "<domain><devices>"
        "<controller type='pci' index='0' model='pcie-root'/>"
        "<controller type='usb' model='qemu-xhci'/>"
        "</devices></domain>",
        "<domain><devices>"
        "<controller type='usb' index='0' ports='8'/>"
        "<controller type='pci' index='1' model='pcie-root-port'/>"
        "</devices></domain>",
    )
    ctrls = d.findall("devices/controller")
    assert [(c.get("type"), c.get("index")) for c in ctrls] == [
        ("pci", "0"),
        ("usb", "0"),
        ("pci", "1"),
    ]
    assert ctrls[1].get("ports") == "8"
    assert ctrls[0].get("model") == "pcie-root"


def test_merge_other_devices_by_position() -> None:
    d = merged(
        "<domain><devices><serial type='pty'/><serial type='pty'/><console type='pty'/>"
        "</devices></domain>",
        "<domain><devices><serial/><serial><target port='1'/></serial><serial type='tcp'/>"
        "<watchdog model='i6300esb'/></devices></domain>",
    )
    serials = d.findall("devices/serial")
    assert len(serials) == 3
    assert serials[1].find("target").get("port") == "1"  # type: ignore[union-attr]
    assert serials[2].get("type") == "tcp"
    assert [str(c.tag) for c in d.find("devices")] == [  # type: ignore[union-attr]
        "serial",
        "serial",
        "serial",
        "console",
        "watchdog",
    ]


def test_merge_attributes_and_text() -> None:
    d = merged(
        "<domain type='kvm'><memory unit='KiB'>1024</memory><vcpu>1</vcpu></domain>",
        "<domain type='qemu'><memory>  </memory><vcpu placement='static'>4</vcpu></domain>",
    )
    assert d.get("type") == "qemu"
    assert d.findtext("memory") == "1024"
    assert d.find("vcpu").get("placement") == "static"  # type: ignore[union-attr]
    assert d.findtext("vcpu") == "4"


def test_merge_inserts_in_libvirt_order() -> None:
    d = merged(
        "<domain><name>a</name><memory>1</memory><os/><devices/></domain>",
        "<domain><features><acpi/></features><uuid>u</uuid><on_reboot>restart</on_reboot></domain>",
    )
    assert [str(c.tag) for c in d] == [
        "name",
        "uuid",
        "memory",
        "os",
        "features",
        "on_reboot",
        "devices",
    ]


def test_merge_deep_copies() -> None:
    overlay = xmlutil.parse_xml("<domain><features><acpi/></features></domain>")
    base = xmlutil.parse_xml("<domain/>")
    xmlutil.merge_overlay(base, overlay)
    assert overlay.find("features") is not None
    assert base.find("features") is not overlay.find("features")


def test_merge_root_mismatch() -> None:
    with pytest.raises(xmlutil.XMLInputError):
        merged("<domain/>", "<network/>")


def test_device_keys() -> None:
    devices = xmlutil.parse_xml(
        "<devices>"
        "<disk><target dev='vda'/></disk><disk/>"
        "<interface><mac address='52:54:00:AA:00:01'/></interface><interface/>"
        "<controller type='pci' index='1'/><controller type='usb'/>"
        "<hostdev/><hostdev/><serial/>"
        "</devices>"
    )
    assert [k for k, _ in identity.device_keys(devices)] == [
        "disk[target=vda]",
        "disk[#1]",
        "interface[mac=52:54:00:aa:00:01]",
        "interface[#1]",
        "controller[type=pci,index=1]",
        "controller[type=usb,index=0]",
        "hostdev[#0]",
        "hostdev[#1]",
        "serial[#0]",
    ]


def test_key_table_is_extensible() -> None:
    assert {"disk", "interface", "controller"} <= set(identity.KEY_FUNCTIONS)


def test_derive_mac() -> None:
    mac = identity.derive_mac("web-1", "mgmt")
    assert mac == identity.derive_mac("web-1", "mgmt")
    assert mac == "52:54:00:" + ":".join(
        hashlib.sha256(b"web-1/mgmt").hexdigest()[i : i + 2] for i in (0, 2, 4)
    )
    assert mac.startswith("52:54:00:")
    assert len(mac) == 17
    assert mac == mac.lower()
    assert mac != identity.derive_mac("web-2", "mgmt")
    assert mac != identity.derive_mac("web-1", "nic0")


def test_derived_mac_used_for_nic_without_mac() -> None:
    root = render.render_domain(
        "d", {"memory": "1GiB", "interfaces": [{"network": "n"}, {"name": "x", "network": "n"}]}
    )
    macs = [m.get("address") for m in root.iterfind("devices/interface/mac")]
    assert macs == [identity.derive_mac("d", "nic0"), identity.derive_mac("d", "x")]


def test_a_complete_document_must_carry_metadata_name() -> None:
    with pytest.raises(render.XMLInputError, match=r"<name> is 'q' but metadata\.name is 'p'"):
        render.render_pool("p", {"xml": "<pool type='dir'><name>q</name></pool>"})
    root = render.render_pool("p", {"xml": "<pool type='dir'><name>p</name></pool>"})
    assert root.findtext("name") == "p"


def test_a_complete_document_needs_no_friendly_field_but_the_object_needs_its_essentials() -> None:
    doc = "<domain type='kvm'><name>d</name><memory unit='MiB'>64</memory></domain>"
    assert render.render_domain("d", {"xml": doc}).findtext("memory") == "64"
    with pytest.raises(ValueError, match=r"^spec.memory: a domain needs memory"):
        render.render_domain("d", {"xml": "<domain type='kvm'><name>d</name></domain>"})
    with pytest.raises(ValueError, match=r"^spec.type: a pool needs a type"):
        render.render_pool("p", {"xml": "<pool><name>p</name></pool>"})
    with pytest.raises(ValueError, match=r"^spec.capacity: a volume needs a capacity"):
        render.render_volume("v", {"xml": "<volume><name>v</name></volume>"})


def test_controllers_without_index_get_libvirts_indexes_and_nics_a_stable_mac() -> None:
    doc = (
        "<domain type='kvm'><name>d</name><memory>1024</memory><devices>"
        "<controller type='pci' model='pcie-root-port'/>"
        "<controller type='pci' model='pcie-root-port'/>"
        "<controller type='pci' index='1' model='pcie-root-port'/>"
        "<controller type='scsi' model='virtio-scsi'/>"
        "<interface type='network'><source network='default'/></interface>"
        "</devices></domain>"
    )
    root = render.render_domain("d", {"xml": doc})
    # libvirt reserves the stated indexes first, then fills the rest in order.
    assert [c.get("index") for c in root.iterfind("devices/controller")] == ["0", "2", "1", "0"]
    mac = root.find("devices/interface/mac")
    assert mac is not None and mac.get("address") == identity.derive_mac("d", "nic0")


def test_full_document_friendly_fields_override() -> None:
    doc = (
        "<domain type='qemu'><name>new</name><memory>1024</memory><vcpu current='1'>4</vcpu>"
        "<devices><disk type='file' device='disk'><source file='/a.img'/>"
        "<target dev='vda'/></disk></devices></domain>"
    )
    root = render.render_domain(
        "new",
        {
            "vcpus": 2,
            "disks": [{"target": "vda", "source": {"volume": {"pool": "p", "name": "v"}}}],
            "xml": doc,
        },
    )
    assert root.get("type") == "qemu"  # no default type over a complete document
    assert root.findtext("name") == "new"
    assert root.find("vcpu").attrib == {}  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    disk = root.find("devices/disk")
    assert disk is not None
    assert disk.get("type") == "volume"
    assert dict(disk.find("source").attrib) == {"pool": "p", "volume": "v"}  # type: ignore[union-attr]


def test_full_document_forward_none_removes_forward() -> None:
    doc = "<network><name>n</name><forward mode='nat'/><bridge name='virbr9'/></network>"
    root = render.render_network("n", {"forward": "none", "xml": doc})
    assert root.find("forward") is None
    assert root.find("bridge") is not None


def test_empty_kernel_cmdline_renders_no_cmdline() -> None:
    # Found by tests/integration/test_properties.py: libvirt drops an empty
    # <cmdline/>, so rendering it was a difference after every apply.
    root = render.render_domain("d", {"memory": "1GiB", "kernel": {"path": "/k", "cmdline": ""}})
    assert root.find("os/cmdline") is None
    root = render.render_domain("d", {"memory": "1GiB", "kernel": {"path": "/k", "cmdline": "ro"}})
    assert root.findtext("os/cmdline") == "ro"


def test_empty_dhcp_and_dns_render_nothing() -> None:
    # Found by tests/integration/test_properties.py: libvirt drops an empty
    # <dhcp/> (and <dns/>), so rendering them was a difference after every apply.
    spec = {"ip": {"address": "10.0.0.1", "prefix": 24, "dhcp": {}}, "dns": {"hosts": []}}
    root = render.render_network("n", spec)
    assert root.find("ip/dhcp") is None and root.find("dns") is None
    spec = {"ip": {"address": "10.0.0.1", "prefix": 24, "dhcp": {"hosts": []}}, "dns": {}}
    root = render.render_network("n", spec)
    assert root.find("ip/dhcp") is None and root.find("dns") is None


def test_spice_graphics_gets_autoport_so_listen_is_kept() -> None:
    # Found by tests/integration/test_properties.py: libvirt drops ``listen`` of
    # a SPICE display with neither port nor autoport (it gets no listener).
    spec = {"memory": "1GiB", "graphics": [{"type": "spice", "listen": "127.0.0.1"}]}
    el = render.render_domain("d", spec).find("devices/graphics")
    assert dict(el.attrib) == {"type": "spice", "autoport": "yes", "listen": "127.0.0.1"}
    vnc = render.render_domain("d", {"memory": "1GiB", "graphics": [{"type": "vnc"}]})
    assert dict(vnc.find("devices/graphics").attrib) == {"type": "vnc"}
