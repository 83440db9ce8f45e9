# ruff: noqa: E501  (XML templates keep their lines as the tools write them)
"""Regenerate the hand-styled part of ``tests/data/foreign/``.

Documents in the shape other tools and people write them, each tool's habits kept
(quoting, empty-element style, units, explicit or missing indexes and addresses), so
that virt-reconcile meets them the way a user brings them from git:

* ``terraform/``  the XML terraform-provider-libvirt sends to libvirt (Go's
  encoding/xml: double quotes, ``<acpi></acpi>``, ``unit="MiB"``, machine ``pc``,
  an IDE cloud-init cdrom, a serial console, spice with ``listen type="none"``);
* ``nixvirt/``    NixVirt's ``linux``/``windows`` templates (explicit controller
  indexes, root ports with chassis/port and PCI addresses, expanded machine names,
  ``unit='GiB'``, volume disks);
* ``docs/``       libvirt-documentation style examples (single quotes, ``unit='KiB'``,
  ``placement='static'``, lifecycle actions, device addresses);
* ``hand/``       minimal domains people write by hand;
* ``arch/``       aarch64, ppc64, ppc64le, s390x and riscv64 guests (test-driver host only);
* ``networks/``   nat/route/open/isolated/bridge/macvtap/hostdev networks with DHCP,
  DNS, IPv6, port groups, MTU;
* ``pools/``      dir, fs, netfs, logical, iscsi, disk, scsi, zfs pools.

These are our own files, written for this corpus. Run it and commit the output:

    .venv/bin/python tests/data/foreign/generate_styled.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
QEMU = "/usr/bin/qemu-system-x86_64"


def mac(n: int, k: int = 0) -> str:
    return f"52:54:00:7f:{n:02x}:{k + 1:02x}"


def uuid(n: int, tag: int) -> str:
    return f"5a1f{tag:04x}-0c6e-4d7b-9f3a-{n:012x}"


# --------------------------------------------------------------------------- terraform


def terraform() -> Iterator[tuple[str, str]]:
    """terraform-provider-libvirt's libvirt_domain, as libvirtxml marshals it."""
    variants = [
        # name, MiB, vcpus, network/bridge, cloudinit, graphics, cpu mode, extra disks, firmware
        ("web-0", 1024, 1, ("network", "default"), True, "spice", None, 0, None),
        ("web-1", 1024, 1, ("network", "default"), True, "spice", None, 0, None),
        ("db-0", 4096, 2, ("network", "default"), True, "spice", "host-passthrough", 1, None),
        ("k3s-master", 2048, 2, ("bridge", "br0"), True, "vnc", "host-passthrough", 0, None),
        ("k3s-worker-0", 4096, 4, ("bridge", "br0"), True, "vnc", "host-passthrough", 1, None),
        ("bastion", 512, 1, ("network", "default"), False, None, None, 0, None),
        ("lab-uefi", 2048, 2, ("network", "default"), True, "spice", "host-model", 0, "uefi"),
        ("ceph-osd-0", 8192, 4, ("network", "default"), True, None, "host-passthrough", 3, None),
        ("dev-box", 8192, 8, ("bridge", "br0"), True, "spice", "host-passthrough", 1, None),
        ("minimal", 512, 1, None, False, None, None, 0, None),
        ("gateway", 1024, 2, ("network", "default"), True, "vnc", None, 0, None),
    ]
    for i, (name, mib, vcpus, net, cloudinit, graphics, cpu, extra, fw) in enumerate(variants):
        full = f"vrf-tf-{name}"
        os_line = '    <type arch="x86_64" machine="pc">hvm</type>'
        if fw == "uefi":
            os_line += (
                '\n    <loader readonly="yes" type="pflash">/usr/share/OVMF/OVMF_CODE.fd</loader>'
                f"\n    <nvram>/var/lib/libvirt/qemu/nvram/{full}_VARS.fd</nvram>"
            )
        disks = [
            f"""    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"></driver>
      <source file="/var/lib/libvirt/images/{name}.qcow2"></source>
      <target dev="vda" bus="virtio"></target>
    </disk>"""
        ]
        for d in range(extra):
            disks.append(f"""    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"></driver>
      <source file="/var/lib/libvirt/images/{name}-data-{d}.qcow2"></source>
      <target dev="vd{chr(ord("b") + d)}" bus="virtio"></target>
    </disk>""")
        if cloudinit:
            disks.append(f"""    <disk type="file" device="cdrom">
      <driver name="qemu" type="raw"></driver>
      <source file="/var/lib/libvirt/images/{name}-commoninit.iso;5f3c{i:04d}-aa"></source>
      <target dev="hdd" bus="ide"></target>
    </disk>""")
        nics = []
        if net:
            kind, src = net
            nics.append(f"""    <interface type="{kind}">
      <mac address="{mac(i, 0x10)}"></mac>
      <source {kind}="{src}"></source>
      <model type="virtio"></model>
    </interface>""")
        gfx = ""
        if graphics:
            gfx = f"""
    <graphics type="{graphics}" autoport="yes">
      <listen type="{"none" if graphics == "spice" else "address"}"></listen>
    </graphics>
    <video>
      <model type="cirrus"></model>
    </video>"""
        cpu_xml = f'\n  <cpu mode="{cpu}"></cpu>' if cpu else ""
        devices = "\n".join([*disks, *nics])
        yield (
            full,
            f"""<domain type="kvm">
  <name>{full}</name>
  <memory unit="MiB">{mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
{os_line}
  </os>
  <features>
    <pae></pae>
    <acpi></acpi>
    <apic></apic>
  </features>{cpu_xml}
  <devices>
    <emulator>{QEMU}</emulator>
{devices}
    <console type="pty">
      <target type="serial" port="0"></target>
    </console>
    <channel type="unix">
      <target type="virtio" name="org.qemu.guest_agent.0"></target>
    </channel>{gfx}
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
  </devices>
</domain>
""",
        )


# --------------------------------------------------------------------------- nixvirt


def _root_ports(n: int) -> str:
    out = []
    for i in range(1, n + 1):
        slot, func = 2 + (i - 1) // 8, (i - 1) % 8
        multi = " multifunction='on'" if func == 0 else ""
        out.append(f"""    <controller type='pci' index='{i}' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='{i}' port='0x{0x10 + i - 1:x}'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x{slot:02x}' function='0x{func:x}'{multi}/>
    </controller>""")
    return "\n".join(out)


def nixvirt() -> Iterator[tuple[str, str]]:
    """NixVirt's ``templates.linux`` / ``templates.windows`` output."""
    variants = [
        # name, GiB, vcpus, nic (kind, source), uefi, windows, storage
        ("nixos-dev", 4, 2, ("bridge", "br0"), False, False, "volume"),
        ("nixos-builder", 8, 4, ("network", "default"), False, False, "volume"),
        ("nixos-uefi", 2, 2, ("network", "default"), True, False, "volume"),
        ("nixos-server", 2, 2, ("bridge", "br0"), False, False, "file"),
        ("homeassistant", 2, 2, ("bridge", "br0"), True, False, "file"),
        ("win11", 8, 4, ("network", "default"), True, True, "file"),
        ("win10-gaming", 16, 8, ("bridge", "br0"), True, True, "volume"),
        ("debian-test", 1, 1, ("network", "default"), False, False, "file"),
    ]
    for i, (name, gib, vcpus, (nic_kind, nic_src), uefi, windows, storage) in enumerate(variants):
        full = f"vrf-nix-{name}"
        loader = ""
        if uefi:
            code = "OVMF_CODE_4M.ms.fd" if windows else "OVMF_CODE_4M.fd"
            loader = f"""
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/{code}</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M{".ms" if windows else ""}.fd'>/var/lib/libvirt/qemu/nvram/{full}_VARS.fd</nvram>"""
        features = "    <acpi/>\n    <apic/>\n    <vmport state='off'/>"
        clock = """  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>"""
        bus = "sata" if windows else "virtio"
        dev = "sda" if windows else "vda"
        if windows:
            features = """    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='8191'/>
      <vpindex state='on'/>
      <synic state='on'/>
      <stimer state='on'/>
      <reset state='on'/>
      <frequencies state='on'/>
    </hyperv>
    <vmport state='off'/>
    <smm state='on'/>"""
            clock = """  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
    <timer name='hypervclock' present='yes'/>
  </clock>"""
        if storage == "volume":
            disk = f"""    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source pool='default' volume='{name}.qcow2'/>
      <target dev='{dev}' bus='{bus}'/>
    </disk>"""
        else:
            disk = f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/{name}.qcow2'/>
      <target dev='{dev}' bus='{bus}'/>
    </disk>"""
        tpm = ""
        if windows:
            tpm = """
    <tpm model='tpm-crb'>
      <backend type='emulator' version='2.0'/>
    </tpm>"""
        model = "e1000e" if windows else "virtio"
        yield (
            full,
            f"""<domain type='kvm'>
  <name>{full}</name>
  <uuid>{uuid(i, 0x41)}</uuid>
  <memory unit='GiB'>{gib}</memory>
  <currentMemory unit='GiB'>{gib}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>{loader}
    <boot dev='hd'/>
  </os>
  <features>
{features}
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
{clock}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <pm>
    <suspend-to-mem enabled='no'/>
    <suspend-to-disk enabled='no'/>
  </pm>
  <devices>
    <emulator>{QEMU}</emulator>
{disk}
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <controller type='pci' index='0' model='pcie-root'/>
{_root_ports(14)}
    <controller type='virtio-serial' index='0'/>
    <interface type='{nic_kind}'>
      <mac address='{mac(i, 0x20)}'/>
      <source {nic_kind}='{nic_src}'/>
      <model type='{model}'/>
    </interface>
    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <channel type='spicevmc'>
      <target type='virtio' name='com.redhat.spice.0'/>
    </channel>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <input type='tablet' bus='usb'/>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>{tpm}
    <graphics type='spice' autoport='yes'>
      <listen type='address'/>
      <image compression='off'/>
      <gl enable='no'/>
    </graphics>
    <sound model='ich9'/>
    <audio id='1' type='spice'/>
    <video>
      <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
    </video>
    <redirdev bus='usb' type='spicevmc'/>
    <redirdev bus='usb' type='spicevmc'/>
    <memballoon model='virtio'/>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
""",
        )


# --------------------------------------------------------------------------- docs style


def docs() -> Iterator[tuple[str, str]]:
    """Examples in the shape of libvirt's documentation (formatdomain.html)."""
    yield (
        "vrf-doc-i686-pc",
        f"""<domain type='kvm'>
  <name>vrf-doc-i686-pc</name>
  <uuid>{uuid(1, 0xD0)}</uuid>
  <memory unit='KiB'>219136</memory>
  <currentMemory unit='KiB'>219136</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='i686' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-i386</emulator>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/HostVG/QEMUGuest1'/>
      <target dev='hda' bus='ide'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0'/>
    <controller type='ide' index='0'/>
    <controller type='pci' index='0' model='pci-root'/>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-direct-kernel",
        f"""<domain type='kvm'>
  <name>vrf-doc-direct-kernel</name>
  <uuid>{uuid(2, 0xD0)}</uuid>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/boot/vmlinuz</kernel>
    <initrd>/var/lib/libvirt/boot/initrd.img</initrd>
    <cmdline>console=ttyS0 root=/dev/vda</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/rootfs.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-numa-tuning",
        f"""<domain type='kvm'>
  <name>vrf-doc-numa-tuning</name>
  <uuid>{uuid(3, 0xD0)}</uuid>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static' cpuset='0-1'>4</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='0'/>
    <vcpupin vcpu='1' cpuset='1'/>
    <emulatorpin cpuset='0-1'/>
    <shares>2048</shares>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='0'/>
  </numatune>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='host-model' check='partial'>
    <topology sockets='1' dies='1' cores='2' threads='2'/>
    <numa>
      <cell id='0' cpus='0-1' memory='2097152' unit='KiB'/>
      <cell id='1' cpus='2-3' memory='2097152' unit='KiB'/>
    </numa>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>restart</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/numa.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='{mac(3, 0xD0)}'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <console type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-devices-addressed",
        f"""<domain type='kvm'>
  <name>vrf-doc-devices-addressed</name>
  <uuid>{uuid(4, 0xD0)}</uuid>
  <title>Addressed devices</title>
  <description>Every device carries the PCI address libvirt would give it.</description>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/libvirt/images/addressed.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pci-root'/>
    <interface type='network'>
      <mac address='{mac(4, 0xD0)}'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface>
    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <input type='keyboard' bus='ps2'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video>
      <model type='cirrus' vram='16384' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-network-disks",
        f"""<domain type='kvm'>
  <name>vrf-doc-network-disks</name>
  <uuid>{uuid(5, 0xD0)}</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='export0'>
        <host name='nbd.example.org' port='10809'/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source protocol='http' name='/isos/netinst.iso'>
        <host name='mirror.example.org' port='80'/>
      </source>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/overlay.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
      </backingStore>
      <target dev='vdb' bus='virtio'/>
    </disk>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-hostdev-less",
        f"""<domain type='kvm'>
  <name>vrf-doc-hostdev-less</name>
  <uuid>{uuid(6, 0xD0)}</uuid>
  <memory unit='MiB'>2048</memory>
  <currentMemory unit='MiB'>1024</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
    <bootmenu enable='yes' timeout='3000'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <pae/>
  </features>
  <clock offset='variable' adjustment='0' basis='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>coredump-restart</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/guest.qcow2'/>
      <target dev='sda' bus='scsi'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sdb' bus='scsi'/>
      <readonly/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <interface type='user'>
      <mac address='{mac(6, 0xD0)}'/>
      <model type='virtio'/>
    </interface>
    <watchdog model='i6300esb' action='pause'/>
    <memballoon model='virtio'>
      <stats period='10'/>
    </memballoon>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-vnc-websocket",
        f"""<domain type='kvm'>
  <name>vrf-doc-vnc-websocket</name>
  <uuid>{uuid(7, 0xD0)}</uuid>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>{QEMU}</emulator>
    <graphics type='vnc' port='5904' autoport='no' websocket='5704' listen='0.0.0.0' sharePolicy='allow-exclusive'>
      <listen type='address' address='0.0.0.0'/>
    </graphics>
    <video>
      <model type='vga' vram='16384' heads='1'/>
    </video>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-hyperv-windows",
        f"""<domain type='kvm'>
  <name>vrf-doc-hyperv-windows</name>
  <uuid>{uuid(8, 0xD0)}</uuid>
  <memory unit='GiB'>8</memory>
  <vcpu placement='static'>4</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='8191'/>
      <vpindex state='on'/>
      <runtime state='on'/>
      <synic state='on'/>
      <stimer state='on'>
        <direct state='on'/>
      </stimer>
      <reset state='on'/>
      <vendor_id state='on' value='KVM Hv'/>
      <frequencies state='on'/>
      <reenlightenment state='on'/>
      <tlbflush state='on'/>
      <ipi state='on'/>
    </hyperv>
    <kvm>
      <hidden state='on'/>
    </kvm>
    <ioapic driver='kvm'/>
  </features>
  <cpu mode='host-passthrough' check='none'/>
  <clock offset='localtime'>
    <timer name='hypervclock' present='yes'/>
  </clock>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/win.qcow2'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='{mac(8, 0xD0)}'/>
      <source network='default'/>
      <model type='e1000e'/>
    </interface>
    <input type='tablet' bus='usb'/>
    <graphics type='spice' autoport='yes'/>
    <video>
      <model type='qxl'/>
    </video>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-serial-tcp",
        f"""<domain type='qemu'>
  <name>vrf-doc-serial-tcp</name>
  <uuid>{uuid(9, 0xD0)}</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>{QEMU}</emulator>
    <serial type='tcp'>
      <source mode='bind' host='127.0.0.1' service='2445'/>
      <protocol type='telnet'/>
      <target port='0'/>
    </serial>
    <serial type='file'>
      <source path='/var/log/vrf-doc-serial.log'/>
      <target port='1'/>
    </serial>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/vrf-doc.agent'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-doc-memory-backing",
        f"""<domain type='kvm'>
  <name>vrf-doc-memory-backing</name>
  <uuid>{uuid(10, 0xD0)}</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <memtune>
    <hard_limit unit='KiB'>3145728</hard_limit>
    <soft_limit unit='KiB'>2097152</soft_limit>
  </memtune>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <emulator>{QEMU}</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <source dir='/srv/shared'/>
      <target dir='shared'/>
    </filesystem>
  </devices>
</domain>
""",
    )


# --------------------------------------------------------------------------- hand-written


def hand() -> Iterator[tuple[str, str]]:
    """Short domains people type themselves."""
    yield from hand_with_prolog()
    yield from hand_passthrough_and_tuning()
    yield (
        "vrf-hand-minimal",
        """<domain type='kvm'>
  <name>vrf-hand-minimal</name>
  <memory unit='MiB'>512</memory>
  <os>
    <type>hvm</type>
  </os>
</domain>
""",
    )
    yield (
        "vrf-hand-one-disk",
        """<domain type="kvm">
  <name>vrf-hand-one-disk</name>
  <memory unit="GiB">1</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64" machine="q35">hvm</type></os>
  <devices>
    <disk type="file" device="disk">
      <source file="/var/lib/libvirt/images/one.qcow2"/>
      <target dev="vda"/>
    </disk>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-nat-vm",
        f"""<domain type='kvm'>
  <name>vrf-hand-nat-vm</name>
  <memory unit='GiB'>2</memory>
  <currentMemory unit='GiB'>2</currentMemory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='host-passthrough'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/nat-vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='{mac(1, 0x40)}'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <console type='pty'/>
    <graphics type='vnc' listen='127.0.0.1'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-headless-serial",
        """<domain type='kvm'>
  <name>vrf-hand-headless-serial</name>
  <memory unit='MiB'>768</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/headless.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-bridge-two-disks",
        f"""<domain type='kvm'>
  <name>vrf-hand-bridge-two-disks</name>
  <uuid>{uuid(5, 0x4A).upper()}</uuid>
  <memory unit='MiB'>4096</memory>
  <vcpu>4</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback'/>
      <source file='/srv/vm/app.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source dev='/dev/vg0/app-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac(5, 0x40).upper()}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <graphics type='spice' autoport='yes'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-uefi-firmware-auto",
        """<domain type='kvm'>
  <name>vrf-hand-uefi-firmware-auto</name>
  <memory unit='GiB'>2</memory>
  <vcpu>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/uefi.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-cdrom-install",
        """<domain type='kvm'>
  <name>vrf-hand-cdrom-install</name>
  <memory unit='GiB'>2</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/install.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/iso/debian-12.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network='default'/>
    </interface>
    <graphics type='vnc' autoport='yes'/>
    <video><model type='virtio'/></video>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-qemu-tcg",
        """<domain type='qemu'>
  <name>vrf-hand-qemu-tcg</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/boot/tiny-vmlinuz</kernel>
    <initrd>/var/lib/libvirt/boot/tiny-initrd</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
""",
    )


def hand_with_prolog() -> Iterator[tuple[str, str]]:
    """Files as editors save them: XML declaration, comments, non-ASCII text."""
    yield (
        "vrf-hand-xml-declaration",
        """<?xml version="1.0" encoding="UTF-8"?>
<!-- Managed in git: infra/vms/vrf-hand-xml-declaration.xml -->
<domain type="kvm">
  <name>vrf-hand-xml-declaration</name>
  <title>Équipe réseau: build host</title>
  <description>Owner: José Müller. Rebuilt weekly; do not edit by hand (ça casse).</description>
  <memory unit="GiB">2</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <devices>
    <!-- system disk -->
    <disk type="file" device="disk">
      <driver name="qemu" type="qcow2"/>
      <source file="/var/lib/libvirt/images/build.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <!-- uplink; MAC registered in DHCP -->
    <interface type="network">
      <mac address="52:54:00:7f:01:61"/>
      <source network="default"/>
      <model type="virtio"/>
    </interface>
    <console type="pty"/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-xml-declaration-single",
        """<?xml version='1.0'?>
<domain type='kvm'>
  <!-- minimal guest, 1 GiB -->
  <name>vrf-hand-xml-declaration-single</name>
  <memory unit='MiB'>1024</memory>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/single.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
""",
    )


def hand_passthrough_and_tuning() -> Iterator[tuple[str, str]]:
    """What people paste from wikis: passthrough, units of every kind, NICs without MAC."""
    yield (
        "vrf-hand-gpu-passthrough",
        f"""<domain type='kvm'>
  <name>vrf-hand-gpu-passthrough</name>
  <memory unit='G'>16</memory>
  <currentMemory unit='G'>16</currentMemory>
  <memoryBacking>
    <hugepages>
      <page size='1' unit='G'/>
    </hugepages>
  </memoryBacking>
  <vcpu placement='static'>8</vcpu>
  <iothreads>1</iothreads>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/>
    <vcpupin vcpu='1' cpuset='3'/>
    <emulatorpin cpuset='0-1'/>
    <iothreadpin iothread='1' cpuset='0-1'/>
  </cputune>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <smbios mode='host'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode='passthrough'/>
    <kvm>
      <hidden state='on'/>
    </kvm>
    <vmport state='off'/>
  </features>
  <cpu mode='host-passthrough' check='none'>
    <topology sockets='1' cores='4' threads='2'/>
    <cache mode='passthrough'/>
    <feature policy='require' name='topoext'/>
  </cpu>
  <clock offset='timezone' timezone='Europe/Berlin'/>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native' discard='unmap' iothread='1'/>
      <source dev='/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T000000'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/>
      </source>
      <rom bar='on'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'/>
      </source>
    </hostdev>
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source>
        <vendor id='0x046d'/>
        <product id='0xc52b'/>
      </source>
    </hostdev>
    <interface type='bridge'>
      <mac address='{mac(9, 0x40)}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <input type='evdev'>
      <source dev='/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd' grab='all' repeat='on'/>
    </input>
    <shmem name='looking-glass'>
      <model type='ivshmem-plain'/>
      <size unit='M'>64</size>
    </shmem>
    <memballoon model='none'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-nics-without-mac",
        f"""<domain type='kvm'>
  <name>vrf-hand-nics-without-mac</name>
  <memory unit='MiB'>2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/nics.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='{mac(10, 0x40)}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='default'/>
      <model type='e1000e'/>
    </interface>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-units",
        """<domain type='kvm'>
  <name>vrf-hand-units</name>
  <memory unit='GB'>4</memory>
  <currentMemory unit='bytes'>2147483648</currentMemory>
  <memtune>
    <hard_limit unit='G'>6</hard_limit>
    <swap_hard_limit unit='M'>8192</swap_hard_limit>
  </memtune>
  <vcpu current='2'>4</vcpu>
  <vcpus>
    <vcpu id='0' enabled='yes' hotpluggable='no'/>
    <vcpu id='1' enabled='yes' hotpluggable='yes'/>
    <vcpu id='2' enabled='no' hotpluggable='yes'/>
    <vcpu id='3' enabled='no' hotpluggable='yes'/>
  </vcpus>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <bios useserial='yes' rebootTimeout='0'/>
  </os>
  <cpu mode='custom' match='exact' check='partial'>
    <model fallback='allow'>Haswell-noTSX</model>
    <vendor>Intel</vendor>
    <feature policy='require' name='vmx'/>
    <feature policy='disable' name='svm'/>
  </cpu>
  <on_crash>coredump-destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/units.qcow2'/>
      <target dev='sda'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb'/>
      <readonly/>
    </disk>
    <serial type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-hand-static-seclabel",
        """<domain type='kvm'>
  <name>vrf-hand-static-seclabel</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/seclabel.qcow2'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <interface type='ethernet'>
      <mac address='52:54:00:7f:0b:41'/>
      <target dev='vrftap0' managed='no'/>
      <model type='virtio'/>
    </interface>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
""",
    )


# --------------------------------------------------------------------------- other archs


def arch() -> Iterator[tuple[str, str]]:
    """Guests of other architectures (checked on a test-driver host only)."""
    yield (
        "vrf-arch-aarch64-virt",
        f"""<domain type='qemu'>
  <name>vrf-arch-aarch64-virt</name>
  <uuid>{uuid(1, 0xA4)}</uuid>
  <memory unit='GiB'>2</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/AAVMF/AAVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/vrf-arch-aarch64-virt_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <gic version='3'/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>cortex-a57</model>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/arm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='pci' index='0' model='pcie-root'/>
    <interface type='network'>
      <mac address='{mac(1, 0xA4)}'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target type='system-serial' port='0'>
        <model name='pl011'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-aarch64-kvm",
        f"""<domain type='kvm'>
  <name>vrf-arch-aarch64-kvm</name>
  <memory unit='GiB'>4</memory>
  <vcpu>4</vcpu>
  <os firmware='efi'>
    <type arch='aarch64' machine='virt'>hvm</type>
  </os>
  <cpu mode='host-passthrough'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/arm-kvm.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac(2, 0xA4)}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <console type='pty'/>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-aarch64-rpi",
        """<domain type='qemu'>
  <name>vrf-arch-aarch64-rpi</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>4</vcpu>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
    <kernel>/var/lib/libvirt/boot/arm64-Image</kernel>
    <cmdline>root=/dev/vda2 console=ttyAMA0</cmdline>
  </os>
  <cpu mode='custom' match='exact'>
    <model>cortex-a72</model>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/raspios.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-ppc64-pseries",
        f"""<domain type='qemu'>
  <name>vrf-arch-ppc64-pseries</name>
  <uuid>{uuid(4, 0xA4)}</uuid>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <os>
    <type arch='ppc64' machine='pseries'>hvm</type>
    <boot dev='hd'/>
  </os>
  <clock offset='utc'/>
  <devices>
    <emulator>/usr/bin/qemu-system-ppc64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/ppc.qcow2'/>
      <target dev='sda' bus='scsi'/>
    </disk>
    <controller type='scsi' index='0' model='ibmvscsi'/>
    <interface type='network'>
      <mac address='{mac(4, 0xA4)}'/>
      <source network='default'/>
      <model type='ibmveth'/>
    </interface>
    <serial type='pty'>
      <target type='spapr-vio-serial' port='0'>
        <model name='spapr-vty'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <panic model='pseries'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-ppc64le",
        f"""<domain type='kvm'>
  <name>vrf-arch-ppc64le</name>
  <memory unit='GiB'>8</memory>
  <vcpu>8</vcpu>
  <os>
    <type arch='ppc64le' machine='pseries'>hvm</type>
  </os>
  <cpu mode='host-model'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/ppcle.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac(5, 0xA4)}'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <console type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-s390x-ccw",
        f"""<domain type='kvm'>
  <name>vrf-arch-s390x-ccw</name>
  <uuid>{uuid(6, 0xA4)}</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='s390x' machine='s390-ccw-virtio'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='host-model'/>
  <devices>
    <emulator>/usr/bin/qemu-system-s390x</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/s390.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0000'/>
    </disk>
    <interface type='network'>
      <mac address='{mac(6, 0xA4)}'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0001'/>
    </interface>
    <console type='pty'>
      <target type='sclp' port='0'/>
    </console>
    <memballoon model='virtio'>
      <address type='ccw' cssid='0xfe' ssid='0x0' devno='0x0002'/>
    </memballoon>
    <panic model='s390'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-s390x-minimal",
        """<domain type='qemu'>
  <name>vrf-arch-s390x-minimal</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='s390x' machine='s390-ccw-virtio'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/s390-min.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <console type='pty'/>
  </devices>
</domain>
""",
    )
    yield (
        "vrf-arch-riscv64-virt",
        f"""<domain type='qemu'>
  <name>vrf-arch-riscv64-virt</name>
  <memory unit='GiB'>2</memory>
  <vcpu>4</vcpu>
  <os>
    <type arch='riscv64' machine='virt'>hvm</type>
    <kernel>/usr/lib/u-boot/qemu-riscv64_smode/uboot.elf</kernel>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/riscv.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='{mac(8, 0xA4)}'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <console type='pty'/>
  </devices>
</domain>
""",
    )


# --------------------------------------------------------------------------- networks


def networks() -> Iterator[tuple[str, str]]:
    """Networks, numbered into 10.213.N.0/24 and bridges vrfbrN so none clashes."""

    def ip4(n: int, dhcp: str = "") -> str:
        return f"""  <ip address='10.213.{n}.1' netmask='255.255.255.0'>{dhcp}
  </ip>"""

    def rng(n: int, lo: int = 100, hi: int = 200) -> str:
        return f"""
    <dhcp>
      <range start='10.213.{n}.{lo}' end='10.213.{n}.{hi}'/>
    </dhcp>"""

    yield (
        "vrf-net-nat",
        f"""<network>
  <name>vrf-net-nat</name>
  <forward mode='nat'/>
  <bridge name='vrfbr1' stp='on' delay='0'/>
{ip4(1, rng(1, 2, 254))}
</network>
""",
    )
    yield (
        "vrf-net-nat-dhcp-hosts",
        f"""<network>
  <name>vrf-net-nat-dhcp-hosts</name>
  <uuid>{uuid(2, 0x4E)}</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='vrfbr2' stp='on' delay='0'/>
  <mac address='52:54:00:7e:02:01'/>
  <domain name='lab.internal' localOnly='yes'/>
  <ip address='10.213.2.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.213.2.100' end='10.213.2.199'/>
      <host mac='52:54:00:7e:02:10' name='web-1' ip='10.213.2.11'/>
      <host mac='52:54:00:7e:02:11' name='web-2' ip='10.213.2.12'/>
      <host mac='52:54:00:7e:02:12' name='db-1' ip='10.213.2.21'/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-nat-dns",
        """<network>
  <name>vrf-net-nat-dns</name>
  <forward mode='nat'/>
  <bridge name='vrfbr3'/>
  <domain name='svc.lab'/>
  <dns>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.example' addr='192.0.2.54'/>
    <txt name='build' value='ci-runner'/>
    <host ip='10.213.3.10'>
      <hostname>registry</hostname>
      <hostname>registry.svc.lab</hostname>
    </host>
    <srv service='ldap' protocol='tcp' domain='svc.lab' target='ldap.svc.lab' port='389' priority='10' weight='10'/>
  </dns>
  <ip address='10.213.3.1' prefix='24'>
    <dhcp>
      <range start='10.213.3.50' end='10.213.3.150'/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-route",
        f"""<network>
  <name>vrf-net-route</name>
  <forward mode='route'/>
  <bridge name='vrfbr4' stp='on' delay='0'/>
{ip4(4, rng(4))}
</network>
""",
    )
    yield (
        "vrf-net-open",
        f"""<network>
  <name>vrf-net-open</name>
  <forward mode='open'/>
  <bridge name='vrfbr5'/>
{ip4(5, rng(5, 10, 20))}
</network>
""",
    )
    yield (
        "vrf-net-xml-declaration",
        """<?xml version="1.0" encoding="UTF-8"?>
<!-- lab network: keep in sync with the firewall rules -->
<network>
  <name>vrf-net-xml-declaration</name>
  <forward mode="nat"/>
  <bridge name="vrfbr15"/>
  <ip address="10.213.15.1" netmask="255.255.255.0">
    <dhcp>
      <range start="10.213.15.100" end="10.213.15.200"/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-nat-address-range",
        """<network>
  <name>vrf-net-nat-address-range</name>
  <forward mode='nat'>
    <nat>
      <address start='192.0.2.10' end='192.0.2.20'/>
      <port start='20000' end='29999'/>
    </nat>
  </forward>
  <bridge name='vrfbr16' stp='off'/>
  <port isolated='yes'/>
  <dns enable='no'/>
  <ip address='10.213.16.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.213.16.10' end='10.213.16.99'/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-ipv6-dhcp-hosts",
        """<network>
  <name>vrf-net-ipv6-dhcp-hosts</name>
  <forward mode='nat'/>
  <bridge name='vrfbr17'/>
  <dns>
    <host ip='fd00:213:17::20'>
      <hostname>api</hostname>
    </host>
  </dns>
  <ip address='10.213.17.1' prefix='24'>
    <dhcp>
      <range start='10.213.17.100' end='10.213.17.200'/>
      <host mac='52:54:00:7e:11:01' name='api' ip='10.213.17.20'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:213:17::1' prefix='64'>
    <dhcp>
      <range start='fd00:213:17::100' end='fd00:213:17::1ff'/>
      <host id='0:3:0:1:52:54:0:7e:11:1' name='api' ip='fd00:213:17::20'/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-isolated",
        """<network>
  <name>vrf-net-isolated</name>
  <bridge name='vrfbr6' stp='on' delay='0'/>
  <ip address='10.213.6.1' netmask='255.255.255.0'/>
</network>
""",
    )
    yield (
        "vrf-net-isolated-dhcp",
        f"""<network ipv6='no'>
  <name>vrf-net-isolated-dhcp</name>
  <bridge name='vrfbr7'/>
{ip4(7, rng(7, 2, 50))}
</network>
""",
    )
    yield (
        "vrf-net-dual-stack",
        """<network>
  <name>vrf-net-dual-stack</name>
  <forward mode='nat'/>
  <bridge name='vrfbr8' stp='on' delay='0'/>
  <ip address='10.213.8.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.213.8.2' end='10.213.8.254'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:213:8::1' prefix='64'>
    <dhcp>
      <range start='fd00:213:8::100' end='fd00:213:8::1ff'/>
    </dhcp>
  </ip>
</network>
""",
    )
    yield (
        "vrf-net-ipv6-only",
        """<network>
  <name>vrf-net-ipv6-only</name>
  <forward mode='route'/>
  <bridge name='vrfbr9'/>
  <ip family='ipv6' address='fd00:213:9::1' prefix='64'/>
</network>
""",
    )
    yield (
        "vrf-net-mtu",
        f"""<network>
  <name>vrf-net-mtu</name>
  <forward mode='nat'/>
  <bridge name='vrfbr10'/>
  <mtu size='9000'/>
{ip4(10, rng(10))}
</network>
""",
    )
    yield (
        "vrf-net-portgroups",
        f"""<network>
  <name>vrf-net-portgroups</name>
  <forward mode='nat'/>
  <bridge name='vrfbr11'/>
  <bandwidth>
    <inbound average='100000' peak='200000' burst='1024'/>
    <outbound average='100000'/>
  </bandwidth>
  <portgroup name='default' default='yes'/>
  <portgroup name='limited'>
    <bandwidth>
      <inbound average='1000'/>
      <outbound average='1000'/>
    </bandwidth>
  </portgroup>
{ip4(11, rng(11))}
</network>
""",
    )
    yield (
        "vrf-net-static-route",
        """<network>
  <name>vrf-net-static-route</name>
  <forward mode='route'/>
  <bridge name='vrfbr12'/>
  <ip address='10.213.12.1' prefix='24'/>
  <route address='10.213.112.0' prefix='24' gateway='10.213.12.2'/>
</network>
""",
    )
    yield (
        "vrf-net-no-bridge-name",
        f"""<network>
  <name>vrf-net-no-bridge-name</name>
  <forward mode='nat'/>
{ip4(13, rng(13))}
</network>
""",
    )
    yield (
        "vrf-net-bootp",
        """<network>
  <name>vrf-net-bootp</name>
  <forward mode='nat'/>
  <bridge name='vrfbr14'/>
  <ip address='10.213.14.1' netmask='255.255.255.0'>
    <tftp root='/var/lib/tftpboot'/>
    <dhcp>
      <range start='10.213.14.100' end='10.213.14.200'>
        <lease expiry='1' unit='hours'/>
      </range>
      <bootp file='pxelinux.0'/>
    </dhcp>
  </ip>
</network>
""",
    )
    # Test-driver host only: they need host devices or other hosts' infrastructure.
    yield (
        "vrf-net-host-bridge",
        """<network>
  <name>vrf-net-host-bridge</name>
  <forward mode='bridge'/>
  <bridge name='br0'/>
</network>
""",
    )
    yield (
        "vrf-net-macvtap",
        """<network>
  <name>vrf-net-macvtap</name>
  <forward mode='bridge'>
    <interface dev='eth1'/>
    <interface dev='eth2'/>
  </forward>
</network>
""",
    )
    yield (
        "vrf-net-passthrough",
        """<network>
  <name>vrf-net-passthrough</name>
  <forward mode='passthrough'>
    <interface dev='ens1f0'/>
  </forward>
</network>
""",
    )
    yield (
        "vrf-net-vepa",
        """<network>
  <name>vrf-net-vepa</name>
  <forward mode='vepa' dev='eth3'>
    <interface dev='eth3'/>
  </forward>
</network>
""",
    )
    yield (
        "vrf-net-ovs",
        """<network>
  <name>vrf-net-ovs</name>
  <forward mode='bridge'/>
  <bridge name='ovsbr0'/>
  <virtualport type='openvswitch'/>
  <portgroup name='vlan-10'>
    <vlan>
      <tag id='10'/>
    </vlan>
  </portgroup>
  <portgroup name='vlan-20' default='yes'>
    <vlan>
      <tag id='20'/>
    </vlan>
  </portgroup>
</network>
""",
    )
    yield (
        "vrf-net-hostdev",
        """<network>
  <name>vrf-net-hostdev</name>
  <forward mode='hostdev' managed='yes'>
    <pf dev='ens2f0'/>
  </forward>
</network>
""",
    )


# --------------------------------------------------------------------------- pools


def pools() -> Iterator[tuple[str, str]]:
    """Storage pools; only the dir pools under /var/tmp/vrf-corpus go on the real daemon."""
    base = "/var/tmp/vrf-corpus/pools"
    yield (
        "vrf-pool-dir",
        f"""<pool type='dir'>
  <name>vrf-pool-dir</name>
  <target>
    <path>{base}/dir</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-dir-perms",
        f"""<pool type='dir'>
  <name>vrf-pool-dir-perms</name>
  <uuid>{uuid(2, 0x50)}</uuid>
  <capacity unit='bytes'>0</capacity>
  <allocation unit='bytes'>0</allocation>
  <available unit='bytes'>0</available>
  <source>
  </source>
  <target>
    <path>{base}/perms</path>
    <permissions>
      <mode>0711</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-dir-images",
        f"""<pool type="dir">
  <name>vrf-pool-dir-images</name>
  <target>
    <path>{base}/images/</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-dir-iso",
        f"""<pool type='dir'>
  <name>vrf-pool-dir-iso</name>
  <source/>
  <target>
    <path>{base}/iso</path>
    <permissions>
      <mode>0755</mode>
    </permissions>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-xml-declaration",
        f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- images for the lab guests -->
<pool type="dir">
  <name>vrf-pool-xml-declaration</name>
  <target>
    <path>{base}/declared</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-rbd",
        """<pool type='rbd'>
  <name>vrf-pool-rbd</name>
  <source>
    <name>libvirt-pool</name>
    <host name='ceph-mon1.example.org' port='6789'/>
    <host name='ceph-mon2.example.org' port='6789'/>
    <auth type='ceph' username='libvirt'>
      <secret uuid='2ec115d7-3a88-3ceb-bc12-0ac909a6fd87'/>
    </auth>
  </source>
</pool>
""",
    )
    yield (
        "vrf-pool-gluster",
        """<pool type='gluster'>
  <name>vrf-pool-gluster</name>
  <source>
    <host name='gluster1.example.org'/>
    <dir path='/'/>
    <name>vmvol</name>
  </source>
</pool>
""",
    )
    yield (
        "vrf-pool-mpath",
        """<pool type='mpath'>
  <name>vrf-pool-mpath</name>
  <target>
    <path>/dev/mapper</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-fs",
        """<pool type='fs'>
  <name>vrf-pool-fs</name>
  <source>
    <device path='/dev/vdb1'/>
    <format type='ext4'/>
  </source>
  <target>
    <path>/srv/vm-fs</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-netfs",
        """<pool type='netfs'>
  <name>vrf-pool-netfs</name>
  <source>
    <host name='nfs.example.org'/>
    <dir path='/exports/vms'/>
    <format type='nfs'/>
  </source>
  <target>
    <path>/var/lib/libvirt/images/nfs</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-netfs-cifs",
        """<pool type='netfs'>
  <name>vrf-pool-netfs-cifs</name>
  <source>
    <host name='smb.example.org'/>
    <dir path='images'/>
    <format type='cifs'/>
  </source>
  <target>
    <path>/mnt/cifs-images</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-logical",
        """<pool type='logical'>
  <name>vrf-pool-logical</name>
  <source>
    <device path='/dev/sdb'/>
    <name>vmvg</name>
    <format type='lvm2'/>
  </source>
  <target>
    <path>/dev/vmvg</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-logical-existing",
        """<pool type='logical'>
  <name>vrf-pool-logical-existing</name>
  <source>
    <name>vg_guests</name>
  </source>
  <target>
    <path>/dev/vg_guests</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-iscsi",
        """<pool type='iscsi'>
  <name>vrf-pool-iscsi</name>
  <source>
    <host name='san.example.org' port='3260'/>
    <device path='iqn.2023-01.org.example:storage.vm'/>
  </source>
  <target>
    <path>/dev/disk/by-path</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-iscsi-initiator",
        """<pool type='iscsi'>
  <name>vrf-pool-iscsi-initiator</name>
  <source>
    <host name='192.0.2.20'/>
    <device path='iqn.2023-01.org.example:lun1'/>
    <initiator>
      <iqn name='iqn.2023-01.org.example:kvm-a'/>
    </initiator>
  </source>
  <target>
    <path>/dev/disk/by-id</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-disk",
        """<pool type='disk'>
  <name>vrf-pool-disk</name>
  <source>
    <device path='/dev/sdc'/>
    <format type='gpt'/>
  </source>
  <target>
    <path>/dev</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-scsi",
        """<pool type='scsi'>
  <name>vrf-pool-scsi</name>
  <source>
    <adapter type='scsi_host' name='host0'/>
  </source>
  <target>
    <path>/dev/disk/by-path</path>
  </target>
</pool>
""",
    )
    yield (
        "vrf-pool-zfs",
        """<pool type='zfs'>
  <name>vrf-pool-zfs</name>
  <source>
    <name>tank/vms</name>
  </source>
  <target>
    <path>/dev/zvol/tank/vms</path>
  </target>
</pool>
""",
    )


STYLES = {
    "terraform": terraform,
    "nixvirt": nixvirt,
    "docs": docs,
    "hand": hand,
    "arch": arch,
    "networks": networks,
    "pools": pools,
}


def main() -> int:
    for folder, make in STYLES.items():
        out = HERE / folder
        out.mkdir(exist_ok=True)
        for old in out.glob("*.xml"):
            old.unlink()
        for name, xml in make():
            (out / f"{name}.xml").write_text(xml)
        print(f"{folder}: {len(list(out.glob('*.xml')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
