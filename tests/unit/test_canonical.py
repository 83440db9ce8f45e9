"""Stage 4/5 (canonical, diff): what libvirt fills in or rewrites is no change; edits are."""

from __future__ import annotations

import pytest
from lxml import etree

from reconciler import canonical, diff
from reconciler.model import Kind

pytestmark = pytest.mark.unit


def xml(text: str) -> etree._Element:
    return etree.fromstring(text)


def flat(text: str, kind: Kind = Kind.DOMAIN, **kw: object) -> canonical.Flat:
    return canonical.flatten(xml(text), kind, **kw)  # type: ignore[arg-type]


def changes(
    desired: str,
    live: str,
    kind: Kind = Kind.DOMAIN,
    applied: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
) -> list[diff.FieldChange]:
    return diff.diff_fields(
        kind,
        flat(desired, kind, ignore=ignore),
        flat(live, kind, ignore=ignore),
        applied,
    )


# The disk is in desired too: disks are an owned set (see the three-way tests).
DESIRED = (
    "<domain><name>a</name><memory unit='GiB'>2</memory><devices>"
    "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/a.qcow2'/>"
    "<target dev='vda' bus='virtio'/></disk></devices></domain>"
)

LIVE = """
<domain type='kvm' id='3'>
  <name>a</name>
  <uuid>0b6f5a0e-3c2f-4b8a-9a0e-3c2f4b8a9a0e</uuid>
  <memory unit='KiB'>{memory}</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/a.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <controller type='pci' index='0' model='pcie-root'/>
    <memballoon model='virtio'><alias name='balloon0'/></memballoon>
  </devices>
  <seclabel type='dynamic' model='selinux' relabel='yes'/>
</domain>
"""


# --- flatten ------------------------------------------------------------------


def test_flatten_paths_values_and_units() -> None:
    f = flat(LIVE.format(memory=2097152))
    assert f.values["memory"] == "2097152"
    assert "memory/@unit" not in f.values  # folded into the value
    assert f.values["@type"] == "kvm"
    assert f.values["devices/disk[target=vda]/source/@file"] == "/var/lib/libvirt/images/a.qcow2"
    assert f.values["devices/controller[type=pci,index=0]/@model"] == "pcie-root"
    assert f.values["devices"] == ""  # an element with children and no text
    assert f.elements["devices/disk[target=vda]"].tag == "disk"


def test_flatten_memory_gib_folds_to_kib() -> None:
    assert flat(DESIRED).values["memory"] == "2097152"


# --- libvirt filled it in vs user changed it -------------------------------------


def test_libvirt_filled_in_values_are_no_change() -> None:
    assert changes(DESIRED, LIVE.format(memory=2097152)) == []


def test_changed_memory_is_exactly_one_change_in_kib() -> None:
    result = changes(DESIRED, LIVE.format(memory=1048576))
    assert result == [diff.FieldChange(path="memory", old="1048576", new="2097152")]


def test_machine_alias_q35_equals_versioned_q35() -> None:
    desired = "<domain><os><type machine='q35'>hvm</type></os></domain>"
    live = "<domain><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os></domain>"
    assert changes(desired, live) == []


def test_machine_alias_q35_differs_from_i440fx() -> None:
    desired = "<domain><os><type machine='q35'>hvm</type></os></domain>"
    live = "<domain><os><type machine='pc-i440fx-7.2'>hvm</type></os></domain>"
    assert changes(desired, live) == [
        diff.FieldChange(path="os/type/@machine", old="pc-i440fx-7.2", new="q35")
    ]


def test_machine_alias_only_applies_to_machine_path() -> None:
    assert not canonical.equivalent(Kind.DOMAIN, "os/type/@arch", "q35", "pc-q35-7.2")
    assert canonical.equivalent(Kind.DOMAIN, "os/type/@machine", "pc", "pc-i440fx-8.0")


def test_mac_is_case_insensitive() -> None:
    desired = (
        "<domain><devices><interface type='network'><mac address='52:54:00:AA:BB:CC'/>"
        "<source network='default'/></interface></devices></domain>"
    )
    live = (
        "<domain><devices><interface type='network'><mac address='52:54:00:aa:bb:cc'/>"
        "<source network='default'/><alias name='net0'/></interface></devices></domain>"
    )
    f = flat(desired)
    assert f.values["devices/interface[mac=52:54:00:aa:bb:cc]/mac/@address"] == "52:54:00:aa:bb:cc"
    assert changes(desired, live) == []


def test_disk_matched_by_target_regardless_of_order() -> None:
    vda = "<disk type='file'><source file='/a'/><target dev='vda'/></disk>"
    vdb = "<disk type='file'><source file='/b'/><target dev='vdb'/></disk>"
    desired = f"<domain><devices>{vda}{vdb}</devices></domain>"
    live = f"<domain><devices>{vdb}{vda}</devices></domain>"
    assert changes(desired, live) == []
    # ...and a changed source is reported on the right disk.
    live_changed = live.replace("/b'", "/other'")
    assert changes(desired, live_changed) == [
        diff.FieldChange(path="devices/disk[target=vdb]/source/@file", old="/other", new="/b")
    ]


def test_interface_matched_by_mac() -> None:
    nic = "<interface type='network'><mac address='52:54:00:00:00:0{n}'/>{src}</interface>"
    nic1 = nic.format(n=1, src="<source network='n1'/>")
    nic2 = nic.format(n=2, src="<source network='n2'/>")
    desired = f"<domain><devices>{nic1}{nic2}</devices></domain>"
    live = f"<domain><devices>{nic2}{nic1.replace('n1', 'changed')}</devices></domain>"
    assert changes(desired, live) == [
        diff.FieldChange(
            path="devices/interface[mac=52:54:00:00:00:01]/source/@network",
            old="changed",
            new="n1",
        )
    ]


def test_vnc_passwd_is_never_compared() -> None:
    desired = "<domain><devices><graphics type='vnc' passwd='secret'/></devices></domain>"
    live = "<domain><devices><graphics type='vnc' port='5900'/></devices></domain>"
    assert "devices/graphics[#0]/@passwd" not in flat(desired).values
    assert changes(desired, live) == []


def test_ignore_xpath_attribute_skipped_on_both_sides() -> None:
    desired = "<domain><os><type machine='q35' arch='x86_64'>hvm</type></os></domain>"
    live = "<domain><os><type machine='pc-i440fx-7.2' arch='aarch64'>hvm</type></os></domain>"
    result = changes(desired, live, ignore=("/domain/os/type/@arch",))
    assert [c.path for c in result] == ["os/type/@machine"]
    assert "os/type/@arch" not in flat(desired, ignore=["/domain/os/type/@arch"]).values


def test_ignore_xpath_element_skipped_on_both_sides() -> None:
    desired = "<domain><name>a</name><on_reboot>restart</on_reboot></domain>"
    live = "<domain><name>a</name><on_reboot>destroy</on_reboot></domain>"
    assert len(changes(desired, live)) == 1
    assert changes(desired, live, ignore=("/domain/on_reboot",)) == []


def test_invalid_ignore_xpath_is_ignored() -> None:
    assert flat(DESIRED, ignore=["///[["]).values == flat(DESIRED).values


# --- three-way -------------------------------------------------------------------


def test_applied_but_no_longer_desired_is_removed() -> None:
    desired = "<domain><name>a</name></domain>"
    live = "<domain><name>a</name><description>old</description></domain>"
    assert changes(desired, live, applied=("name", "description")) == [
        diff.FieldChange(path="description", old="old", new=None)
    ]


def test_neither_desired_nor_applied_is_ignored() -> None:
    desired = "<domain><name>a</name></domain>"
    live = "<domain><name>a</name><description>someone else's</description></domain>"
    assert changes(desired, live, applied=("name",)) == []


def test_applied_path_absent_from_live_is_no_change() -> None:
    desired = "<domain><name>a</name></domain>"
    live = "<domain><name>a</name></domain>"
    assert changes(desired, live, applied=("description",)) == []


def test_disk_in_live_but_not_desired_is_removed() -> None:
    desired = "<domain><devices><disk type='file'><target dev='vda'/></disk></devices></domain>"
    live = (
        "<domain><devices><disk type='file'><target dev='vda'/></disk>"
        "<disk type='file'><source file='/x'/><target dev='vdb'/></disk></devices></domain>"
    )
    result = changes(desired, live)
    assert result == [diff.FieldChange(path="devices/disk[target=vdb]", old="", new=None)]
    assert result[0].removed and result[0].is_element


def test_extra_live_controller_is_not_owned() -> None:
    desired = "<domain><devices><disk type='file'><target dev='vda'/></disk></devices></domain>"
    live = (
        "<domain><devices><disk type='file'><target dev='vda'/></disk>"
        "<controller type='usb' index='0'/></devices></domain>"
    )
    assert changes(desired, live) == []


def test_owned_sets_only_for_domains() -> None:
    desired = "<network><name>n</name></network>"
    live = "<network><name>n</name><bridge name='virbr0'/></network>"
    assert changes(desired, live, kind=Kind.NETWORK) == []


# --- collapse ----------------------------------------------------------------------


def test_added_element_collapses_its_children() -> None:
    desired = (
        "<domain><devices><disk type='file'><source file='/b'/><target dev='vdb'/></disk>"
        "</devices></domain>"
    )
    live = "<domain><devices/></domain>"
    result = changes(desired, live)
    assert result == [diff.FieldChange(path="devices/disk[target=vdb]", old=None, new="")]
    assert result[0].added


def test_collapse_directly() -> None:
    fc = diff.FieldChange
    kept = diff.collapse(
        [
            fc(path="x/y/@a", old=None, new="1"),
            fc(path="x/y", old=None, new=""),
            fc(path="x/yz", old="1", new="2"),  # a sibling sharing the prefix is kept
            fc(path="memory", old="1", new="2"),
        ]
    )
    assert [c.path for c in kept] == ["memory", "x/y", "x/yz"]


# --- volumes ------------------------------------------------------------------------


def vol(capacity: str, unit: str = "bytes") -> str:
    return f"<volume><name>v</name><capacity unit='{unit}'>{capacity}</capacity></volume>"


def test_volume_same_capacity_equal() -> None:
    assert changes(vol("1048576"), vol("1048576"), kind=Kind.VOLUME) == []
    assert changes(vol("1"), vol("1048576"), kind=Kind.VOLUME) != []
    assert changes(vol("1", "MiB"), vol("1048576"), kind=Kind.VOLUME) == []


def test_volume_qcow2_rounding_up_equal() -> None:
    # 1000000 rounded up to a multiple of 512 is 1000448 (448 bytes more).
    assert changes(vol("1000000"), vol("1000448"), kind=Kind.VOLUME) == []
    assert changes(vol("1048065"), vol("1048576"), kind=Kind.VOLUME) == []  # +511


def test_volume_capacity_outside_rounding_differs() -> None:
    assert changes(vol("1048576"), vol("1049088"), kind=Kind.VOLUME) == [
        diff.FieldChange(path="capacity", old="1049088", new="1048576")
    ]
    # smaller live, and a larger one not on a 512 boundary, are different sizes
    assert len(changes(vol("1048576"), vol("1048064"), kind=Kind.VOLUME)) == 1
    assert len(changes(vol("1048576"), vol("1048577"), kind=Kind.VOLUME)) == 1


# --- networks -------------------------------------------------------------------------


NET = """
<network><name>n</name>
  <ip address='10.0.0.1' prefix='24'><dhcp>{hosts}</dhcp></ip>
  {extra}
</network>
"""
H1 = "<host mac='52:54:00:00:00:01' ip='10.0.0.11'/>"
H2 = "<host mac='52:54:00:00:00:02' ip='10.0.0.12'/>"


def test_network_dhcp_host_keyed_by_mac_and_ip_by_address() -> None:
    f = flat(NET.format(hosts=H1 + H2, extra=""), Kind.NETWORK)
    assert f.values["ip[address=10.0.0.1]/@prefix"] == "24"
    assert f.values["ip[address=10.0.0.1]/dhcp/host[mac=52:54:00:00:00:02]/@ip"] == "10.0.0.12"
    desired = NET.format(hosts=H1 + H2, extra="")
    assert changes(desired, NET.format(hosts=H2 + H1, extra=""), kind=Kind.NETWORK) == []
    changed = NET.format(hosts=H2 + H1.replace("10.0.0.11", "10.0.0.99"), extra="")
    assert changes(desired, changed, kind=Kind.NETWORK) == [
        diff.FieldChange(
            path="ip[address=10.0.0.1]/dhcp/host[mac=52:54:00:00:00:01]/@ip",
            old="10.0.0.99",
            new="10.0.0.11",
        )
    ]


def test_network_second_ip_matched_by_address() -> None:
    v6 = "<ip family='ipv6' address='fd00::1' prefix='64'/>"
    desired = f"<network><name>n</name><ip address='10.0.0.1' prefix='24'/>{v6}</network>"
    live = f"<network><name>n</name>{v6}<ip address='10.0.0.1' prefix='24'/></network>"
    assert changes(desired, live, kind=Kind.NETWORK) == []


# --- apply_changes ----------------------------------------------------------------------


def apply(desired: str, live: str) -> etree._Element:
    dflat = flat(desired)
    target = flat(live)
    diff.apply_changes(target, dflat, diff.diff_fields(Kind.DOMAIN, dflat, target))
    return diff._root_of(target)


def test_apply_changes_keeps_live_values_and_sets_new() -> None:
    desired = DESIRED.replace("unit='GiB'>2<", "unit='KiB'>1048576<")
    live_root = xml(LIVE.format(memory=2097152))
    target = canonical.flatten(etree.fromstring(etree.tostring(live_root)), Kind.DOMAIN)
    dflat = flat(desired)
    diff.apply_changes(target, dflat, diff.diff_fields(Kind.DOMAIN, dflat, target))
    merged = diff._root_of(target)
    assert merged.findtext("uuid") == "0b6f5a0e-3c2f-4b8a-9a0e-3c2f4b8a9a0e"
    assert merged.find("devices/disk/address").get("bus") == "0x04"
    assert merged.find("devices/disk/alias").get("name") == "virtio-disk0"
    assert merged.findtext("memory") == "1048576"
    assert merged.find("memory").get("unit") == "KiB"
    # the live document itself is untouched
    assert live_root.findtext("memory") == "2097152"
    # and the result now has no differences from desired
    assert diff.diff_fields(Kind.DOMAIN, dflat, canonical.flatten(merged, Kind.DOMAIN)) == []


def test_apply_changes_adds_and_removes_elements() -> None:
    desired = (
        "<domain><name>a</name><os><type machine='q35'>hvm</type></os><devices>"
        "<disk type='file'><source file='/b'/><target dev='vdb'/></disk></devices></domain>"
    )
    live = (
        "<domain><name>a</name><uuid>u</uuid><devices>"
        "<disk type='file'><source file='/a'/><target dev='vda'/></disk></devices></domain>"
    )
    merged = apply(desired, live)
    assert merged.findtext("uuid") == "u"
    assert [t.get("dev") for t in merged.iterfind("devices/disk/target")] == ["vdb"]
    assert merged.find("devices/disk/source").get("file") == "/b"
    assert merged.find("os/type").get("machine") == "q35"  # parents created as needed
    assert (
        diff.diff_fields(Kind.DOMAIN, flat(desired), canonical.flatten(merged, Kind.DOMAIN)) == []
    )


def test_apply_changes_memory_in_another_unit() -> None:
    merged = apply(DESIRED, LIVE.format(memory=1048576))
    f = canonical.flatten(merged, Kind.DOMAIN)
    assert f.values["memory"] == "2097152"


def test_ignore_xpath_root_attribute() -> None:
    desired = "<domain type='kvm'><name>a</name></domain>"
    live = "<domain type='qemu'><name>a</name></domain>"
    assert changes(desired, live, ignore=("/domain/@type",)) == []


def test_vcpu_current_equal_to_the_count_is_what_libvirt_omits() -> None:
    # Found by tests/integration/test_properties.py: vcpus: 1 with maxVcpus: 1
    # renders current='1', which libvirt drops on define.
    assert (
        changes("<domain><vcpu current='1'>1</vcpu></domain>", "<domain><vcpu>1</vcpu></domain>")
        == []
    )
    assert [
        c.path
        for c in changes(
            "<domain><vcpu current='1'>2</vcpu></domain>", "<domain><vcpu>2</vcpu></domain>"
        )
    ] == ["vcpu/@current"]


def test_raising_the_vcpu_maximum_keeps_the_implied_current_count() -> None:
    # Found by tests/integration/test_properties.py: vcpus: 1 -> vcpus: 1,
    # maxVcpus: 8 redefined <vcpu>8</vcpu>, i.e. 8 running vCPUs.
    desired = flat("<domain><vcpu current='1'>8</vcpu></domain>")
    target = flat("<domain><vcpu>1</vcpu></domain>")
    found = diff.diff_fields(Kind.DOMAIN, desired, target)
    assert [(c.path, c.old, c.new) for c in found] == [("vcpu", "1", "8")]
    diff.apply_changes(target, desired, found)
    vcpu = target.elements["vcpu"]
    assert (vcpu.text, vcpu.get("current")) == ("8", "1")


def test_changing_graphics_listen_drops_the_listen_children_libvirt_derived() -> None:
    # Found by tests/integration/test_properties.py: a redefine kept
    # <listen address='127.0.0.1'/> beside listen='0.0.0.0' and libvirt refused it.
    desired = flat("<domain><devices><graphics type='vnc' listen='0.0.0.0'/></devices></domain>")
    target = flat(
        "<domain><devices><graphics type='vnc' port='-1' listen='127.0.0.1'>"
        "<listen type='address' address='127.0.0.1'/></graphics></devices></domain>"
    )
    found = diff.diff_fields(Kind.DOMAIN, desired, target)
    assert [(c.path, c.new) for c in found] == [("devices/graphics[#0]/@listen", "0.0.0.0")]
    diff.apply_changes(target, desired, found)
    graphics = target.elements["devices/graphics[#0]"]
    assert graphics.get("listen") == "0.0.0.0" and graphics.find("listen") is None
    assert graphics.get("port") == "-1"  # the rest is kept


def test_vcpu_current_equal_to_the_maximum_is_implied() -> None:
    # libvirt drops current='N' when it equals the maximum.
    desired = "<domain><vcpu current='2'>2</vcpu></domain>"
    assert changes(desired, "<domain><vcpu placement='static'>2</vcpu></domain>") == []
    lowered = changes(
        "<domain><vcpu current='1'>2</vcpu></domain>", "<domain><vcpu>2</vcpu></domain>"
    )
    assert [(c.path, c.old, c.new) for c in lowered] == [("vcpu/@current", "2", "1")]


@pytest.mark.parametrize(
    ("boot", "clock", "expected"),
    [
        # libvirt's own defaults: leaving them out of the manifest changes nothing.
        ("hd", "<clock offset='utc'/>", []),
        # Values of the user's: leaving them out reverts them.
        ("cdrom", "<clock offset='localtime'/>", ["clock", "os/boot"]),
    ],
)
def test_removing_a_field_libvirt_fills_in_anyway_is_no_change(
    boot: str, clock: str, expected: list[str]
) -> None:
    """A manifest that spelled out a default (``boot: [hd]``) and no longer does —
    e.g. an exported one — is not a revert: libvirt would put it back itself."""
    head = "<domain type='qemu'><name>a</name><memory unit='KiB'>1048576</memory>"
    tail = "<devices/></domain>"
    os_ = "<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>{}</os>"
    desired = head + os_.format("") + tail
    live = head + os_.format(f"<boot dev='{boot}'/>") + clock + tail
    applied = ("os/boot", "os/boot/@dev", "clock", "clock/@offset")
    assert [c.path for c in changes(desired, live, applied=applied)] == expected


def test_flatten_desired_keeps_what_the_document_says_as_libvirt_spells_it() -> None:
    doc = etree.fromstring(
        "<domain><uuid>AB-CD</uuid><devices><panic/>"
        "<graphics type='vnc' port='-1'/></devices></domain>"
    )
    # libvirt's parser: lower-cases the uuid, drops port='-1', adds an id and
    # (on the test driver) drops the panic device a real host keeps.
    normalised = etree.fromstring(
        "<domain><uuid>ab-cd</uuid><on_crash>destroy</on_crash><devices>"
        "<graphics type='vnc' autoport='yes'/></devices></domain>"
    )
    values = canonical.flatten_desired(doc, normalised, Kind.DOMAIN).values
    assert values["uuid"] == "ab-cd"
    assert "on_crash" not in values  # filled in by libvirt: not ours to compare
    assert "devices/graphics[#0]/@autoport" not in values
    assert "devices/graphics[#0]/@port" not in values  # dropped by libvirt
    assert "devices/panic[#0]" in values  # canonical.KEPT_BY_HOSTS
    # Without libvirt's reading (the parser refused the document): as written.
    assert canonical.flatten_desired(doc, None, Kind.DOMAIN).values["uuid"] == "AB-CD"


def test_current_memory_is_implied_by_memory() -> None:
    flat = canonical.flatten(
        etree.fromstring("<domain><memory unit='GiB'>2</memory></domain>"), Kind.DOMAIN
    )
    assert flat.values["currentMemory"] == flat.values["memory"] == "2097152"
    assert flat.implied == {"currentMemory"}


def test_values_libvirt_generates_are_not_a_wish() -> None:
    pool = etree.fromstring(
        "<pool type='dir'><name>p</name><capacity unit='bytes'>0</capacity>"
        "<target><path>/p</path></target></pool>"
    )
    assert set(canonical.flatten_desired(pool, None, Kind.STORAGE_POOL).values) == {
        "@type", "name", "target", "target/path"
    }  # fmt: skip
    dom = etree.fromstring(
        "<domain><os><nvram template='/t.fd'/></os><devices>"
        "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/x'/>"
        "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        "<channel type='unix'><source mode='bind' path='/run/my.sock'/></channel>"
        "</devices></domain>"
    )
    values = canonical.flatten_desired(dom, None, Kind.DOMAIN).values
    assert "os/nvram" not in values and values["os/nvram/@template"] == "/t.fd"
    assert "devices/channel[#0]/source" not in values
    assert values["devices/channel[#1]/source/@path"] == "/run/my.sock"
