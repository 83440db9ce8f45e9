"""Regenerate ``tests/data/foreign/virt-install/``: domain XML written by virt-install.

Every document is the output of ``virt-install --print-xml --dry-run`` against the real
``qemu:///system`` (it needs a running libvirtd: ``bash scripts/setup-testbed.sh`` and
``libvirtd -d``).  Nobody edits these files by hand: UUIDs and MACs are virt-install's
random picks, and a regeneration replaces every file.  Disk images live under a scratch
directory that never has to exist (``--dry-run`` creates nothing but a ``vrf-corpus``
storage pool for that directory, which this script removes again).

    .venv/bin/python tests/data/foreign/generate_virtinst.py [--only SLUG ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.testbed import daemon  # noqa: E402

OUT = HERE / "virt-install"
URI = "qemu:///system"
SCRATCH = "/var/tmp/vrf-corpus"
# virt-install makes pools for the directories it touches (the scratch dir; /var/lib/libvirt/boot
# for a cloud-init seed): the ones that did not exist before are removed at the end
POOLS = ("vrf-corpus", "boot")
USER_DATA = f"{SCRATCH}/user-data.yaml"


def disk(name: str, size: int = 10, **opts: str) -> str:
    extra = "".join(f",{k.replace('_', '.')}={v}" for k, v in opts.items())
    return f"path={SCRATCH}/{name}.qcow2,size={size}{extra}"


# (slug, extra arguments). Every case also gets --name/--connect/--print-xml/--dry-run.
# The first block is targeted (one feature per case), the second combines features the
# way people do for real guests.
CASES: list[tuple[str, list[str]]] = [
    # --- machine types and firmware
    ("q35-bios", ["--osinfo", "debian11", "--machine", "q35", "--memory", "2048",
                  "--disk", disk("q35-bios"), "--import", "--network", "network=default"]),
    ("pc-bios", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                 "--disk", disk("pc-bios"), "--import", "--network", "network=default"]),
    ("q35-uefi", ["--osinfo", "fedora37", "--memory", "2048", "--boot", "uefi",
                  "--disk", disk("q35-uefi"), "--import", "--network", "network=default"]),
    ("q35-secureboot", ["--osinfo", "win11", "--memory", "4096", "--vcpus", "4",
                        "--boot", "uefi,firmware.feature0.name=secure-boot,"
                        "firmware.feature0.enabled=yes,firmware.feature1.name=enrolled-keys,"
                        "firmware.feature1.enabled=yes",
                        "--disk", disk("q35-secureboot", 64), "--import",
                        "--network", "network=default"]),
    ("q35-uefi-no-sb", ["--osinfo", "ubuntu22.04", "--memory", "2048", "--boot",
                        "uefi,firmware.feature0.name=secure-boot,firmware.feature0.enabled=no",
                        "--disk", disk("q35-uefi-no-sb"), "--import",
                        "--network", "network=default"]),
    ("q35-loader-path", ["--osinfo", "debian11", "--memory", "2048", "--boot",
                         "loader=/usr/share/OVMF/OVMF_CODE_4M.fd,loader.readonly=yes,"
                         "loader.type=pflash,nvram.template=/usr/share/OVMF/OVMF_VARS_4M.fd",
                         "--disk", disk("q35-loader-path"), "--import",
                         "--network", "network=default"]),
    ("pc-kernel-boot", ["--osinfo", "generic", "--machine", "pc", "--memory", "512",
                        "--boot", "kernel=/var/tmp/vrf-corpus/vmlinuz,"
                        "initrd=/var/tmp/vrf-corpus/initrd.img,kernel_args=console=ttyS0",
                        "--disk", "none", "--network", "none", "--graphics", "none"]),
    ("boot-order", ["--osinfo", "debian11", "--memory", "1024", "--boot", "network,hd,menu=on",
                    "--disk", disk("boot-order"), "--network", "network=default"]),
    ("pxe", ["--osinfo", "rhel9.1", "--memory", "2048", "--pxe", "--disk", disk("pxe", 20),
             "--network", "network=default", "--print-xml", "1"]),
    # --- TPM
    ("tpm-emulator", ["--osinfo", "win11", "--memory", "4096", "--boot", "uefi",
                      "--tpm", "emulator", "--disk", disk("tpm-emulator", 64), "--import"]),
    ("tpm-tis-2", ["--osinfo", "rhel9.1", "--memory", "2048", "--tpm",
                   "model=tpm-tis,backend.type=emulator,backend.version=2.0",
                   "--disk", disk("tpm-tis-2"), "--import"]),
    ("tpm-none", ["--osinfo", "win10", "--memory", "4096", "--tpm", "none",
                  "--disk", disk("tpm-none", 40), "--import"]),
    # --- graphics
    ("vnc-autoport", ["--osinfo", "debian11", "--memory", "1024", "--graphics", "vnc",
                      "--disk", disk("vnc-autoport"), "--import"]),
    ("vnc-port", ["--osinfo", "debian11", "--memory", "1024",
                  "--graphics", "vnc,port=5911,listen=127.0.0.1",
                  "--disk", disk("vnc-port"), "--import"]),
    ("vnc-password", ["--osinfo", "debian11", "--memory", "1024",
                      "--graphics", "vnc,listen=0.0.0.0,password=s3cret",
                      "--disk", disk("vnc-password"), "--import"]),
    ("vnc-keymap", ["--osinfo", "opensuse15.4", "--memory", "2048",
                    "--graphics", "vnc,port=5912,keymap=de,listen=127.0.0.1",
                    "--disk", disk("vnc-keymap"), "--import"]),
    ("spice-autoport", ["--osinfo", "fedora37", "--memory", "2048", "--graphics", "spice",
                        "--disk", disk("spice-autoport"), "--import"]),
    ("spice-ports", ["--osinfo", "fedora37", "--memory", "2048",
                     "--graphics", "spice,port=5930,listen=127.0.0.1",
                     "--disk", disk("spice-ports"), "--import"]),
    ("spice-password", ["--osinfo", "win10", "--memory", "4096",
                        "--graphics", "spice,password=hunter2,listen=0.0.0.0",
                        "--disk", disk("spice-password", 40), "--import"]),
    ("spice-gl-none", ["--osinfo", "fedora37", "--memory", "2048",
                       "--graphics", "spice,listen=none", "--video", "virtio",
                       "--disk", disk("spice-gl-none"), "--import"]),
    ("headless", ["--osinfo", "debian11", "--memory", "1024", "--graphics", "none",
                  "--disk", disk("headless"), "--import", "--network", "network=default"]),
    ("vnc-and-spice", ["--osinfo", "rhel9.1", "--memory", "2048", "--graphics", "vnc",
                       "--graphics", "spice", "--disk", disk("vnc-and-spice"), "--import"]),
    # --- channels, consoles, redirection
    ("channel-qemu-ga", ["--osinfo", "debian11", "--memory", "1024", "--graphics", "none",
                         "--channel", "unix,target.type=virtio,target.name=org.qemu.guest_agent.0",
                         "--disk", disk("channel-qemu-ga"), "--import"]),
    ("channel-spice", ["--osinfo", "fedora37", "--memory", "2048", "--channel", "spicevmc",
                       "--disk", disk("channel-spice"), "--import"]),
    ("channel-pty", ["--osinfo", "debian11", "--memory", "1024",
                     "--channel", "pty,target.type=virtio,target.name=org.example.agent.0",
                     "--disk", disk("channel-pty"), "--import"]),
    ("serial-console", ["--osinfo", "debian11", "--memory", "1024", "--graphics", "none",
                        "--serial", "pty", "--console", "pty,target.type=virtio",
                        "--disk", disk("serial-console"), "--import"]),
    ("serial-file", ["--osinfo", "debian11", "--memory", "1024",
                     "--serial", "file,path=/var/tmp/vrf-corpus/serial-file.log",
                     "--disk", disk("serial-file"), "--import"]),
    ("usb-redir", ["--osinfo", "win10", "--memory", "4096", "--graphics", "spice",
                   "--redirdev", "usb,type=spicevmc", "--redirdev", "usb,type=spicevmc",
                   "--redirdev", "usb,type=spicevmc", "--disk", disk("usb-redir", 40),
                   "--import"]),
    ("smartcard", ["--osinfo", "rhel9.1", "--memory", "2048", "--graphics", "spice",
                   "--smartcard", "passthrough,type=spicevmc", "--disk", disk("smartcard"),
                   "--import"]),
    # --- sound, watchdog, rng, panic, misc devices
    ("sound-ich9", ["--osinfo", "win10", "--memory", "4096", "--sound", "ich9",
                    "--disk", disk("sound-ich9", 40), "--import"]),
    ("sound-ac97", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                    "--sound", "ac97", "--disk", disk("sound-ac97"), "--import"]),
    ("sound-none", ["--osinfo", "fedora37", "--memory", "2048", "--sound", "none",
                    "--disk", disk("sound-none"), "--import"]),
    ("watchdog-i6300", ["--osinfo", "rhel9.1", "--memory", "2048",
                        "--watchdog", "i6300esb,action=reset",
                        "--disk", disk("watchdog-i6300"), "--import"]),
    ("watchdog-ib700", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                        "--watchdog", "ib700,action=poweroff",
                        "--disk", disk("watchdog-ib700"), "--import"]),
    ("rng-urandom", ["--osinfo", "debian11", "--memory", "1024", "--rng", "/dev/urandom",
                     "--disk", disk("rng-urandom"), "--import"]),
    ("rng-random-rate", ["--osinfo", "debian11", "--memory", "1024",
                         "--rng", "type=random,device=/dev/random,rate.bytes=1024,"
                         "rate.period=1000", "--disk", disk("rng-random-rate"), "--import"]),
    ("rng-builtin", ["--osinfo", "fedora37", "--memory", "2048", "--rng", "builtin",
                     "--disk", disk("rng-builtin"), "--import"]),
    ("panic-isa", ["--osinfo", "rhel9.1", "--memory", "2048", "--panic", "isa",
                   "--disk", disk("panic-isa"), "--import"]),
    ("memballoon-none", ["--osinfo", "debian11", "--memory", "1024", "--memballoon", "none",
                         "--disk", disk("memballoon-none"), "--import"]),
    ("input-virtio", ["--osinfo", "debian11", "--memory", "1024",
                      "--input", "keyboard,bus=virtio", "--input", "mouse,bus=virtio",
                      "--disk", disk("input-virtio"), "--import"]),
    ("video-qxl", ["--osinfo", "win10", "--memory", "4096", "--video", "qxl",
                   "--disk", disk("video-qxl", 40), "--import"]),
    ("video-vga", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                   "--video", "vga", "--disk", disk("video-vga"), "--import"]),
    ("video-bochs", ["--osinfo", "fedora37", "--memory", "2048", "--boot", "uefi",
                     "--video", "bochs", "--disk", disk("video-bochs"), "--import"]),
    ("vsock", ["--osinfo", "fedora37", "--memory", "2048", "--vsock", "cid.auto=yes",
               "--disk", disk("vsock"), "--import"]),
    ("iommu-intel", ["--osinfo", "rhel9.1", "--memory", "4096",
                     "--iommu", "model=intel,driver.intremap=on",
                     "--features", "ioapic.driver=qemu",
                     "--disk", disk("iommu-intel"), "--import"]),
    ("virtiofs", ["--osinfo", "fedora37", "--memory", "2048",
                  "--memorybacking", "source.type=memfd,access.mode=shared",
                  "--filesystem", "source.dir=/srv/share,target.dir=share,driver.type=virtiofs",
                  "--disk", disk("virtiofs"), "--import"]),
    ("filesystem-9p", ["--osinfo", "debian11", "--memory", "1024",
                       "--filesystem", "/srv/data,data", "--disk", disk("filesystem-9p"),
                       "--import"]),
    # --- PCI topology
    ("root-ports-extra", ["--osinfo", "rhel9.1", "--memory", "2048",
                          *[a for i in range(20, 26)
                            for a in ("--controller", f"type=pci,model=pcie-root-port,index={i}")],
                          "--disk", disk("root-ports-extra"), "--import"]),
    ("pcie-to-pci-bridge", ["--osinfo", "debian11", "--memory", "1024",
                            "--controller", "type=pci,model=pcie-to-pci-bridge,index=20",
                            "--disk", disk("pcie-to-pci-bridge"), "--import"]),
    ("usb-ehci", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                  "--controller", "usb2", "--disk", disk("usb-ehci"), "--import"]),
    ("usb-none", ["--osinfo", "generic", "--memory", "512", "--controller", "usb,model=none",
                  "--graphics", "none", "--disk", disk("usb-none"), "--import"]),
    # --- disks
    ("disk-sata", ["--osinfo", "win10", "--memory", "4096",
                   "--disk", disk("disk-sata", 40, bus="sata"), "--import"]),
    ("disk-scsi", ["--osinfo", "rhel9.1", "--memory", "2048",
                   "--controller", "type=scsi,model=virtio-scsi",
                   "--disk", disk("disk-scsi", 20, bus="scsi", discard="unmap"), "--import"]),
    ("disk-ide", ["--osinfo", "debian11", "--machine", "pc", "--memory", "1024",
                  "--disk", disk("disk-ide", 8, bus="ide"), "--import"]),
    ("disk-raw-cache", ["--osinfo", "debian11", "--memory", "2048",
                        "--disk", f"path={SCRATCH}/disk-raw-cache.img,size=20,format=raw,"
                        "cache=none,io=native", "--import"]),
    ("disk-many", ["--osinfo", "rhel9.1", "--memory", "4096",
                   "--disk", disk("disk-many-os", 20),
                   "--disk", disk("disk-many-data1", 100, bus="virtio"),
                   "--disk", disk("disk-many-data2", 100, bus="virtio", serial="DATA2"),
                   "--disk", disk("disk-many-scratch", 10, bus="sata"), "--import"]),
    ("disk-readonly-shareable", ["--osinfo", "debian11", "--memory", "1024",
                                 "--disk", disk("disk-ro-os"),
                                 "--disk", f"path={SCRATCH}/shared.img,size=1,format=raw,"
                                 "readonly=on,shareable=on", "--import"]),
    ("disk-iotune", ["--osinfo", "debian11", "--memory", "1024",
                     "--disk", disk("disk-iotune")
                     + ",iotune.total_iops_sec=500,iotune.total_bytes_sec=52428800", "--import"]),
    ("disk-boot-order", ["--osinfo", "debian11", "--memory", "1024",
                         "--disk", disk("disk-boot-order", 10, boot_order="1"),
                         "--network", "network=default,boot.order=2"]),
    ("cdrom-empty", ["--osinfo", "debian11", "--memory", "1024",
                     "--disk", disk("cdrom-empty"), "--disk", "device=cdrom,bus=sata",
                     "--import"]),
    ("cdrom-ide", ["--osinfo", "win10", "--machine", "pc", "--memory", "4096",
                   "--disk", disk("cdrom-ide", 40, bus="ide"), "--disk", "device=cdrom,bus=ide",
                   "--import"]),
    ("cdrom-scsi", ["--osinfo", "rhel9.1", "--memory", "2048",
                    "--controller", "type=scsi,model=virtio-scsi",
                    "--disk", disk("cdrom-scsi", 20, bus="scsi"),
                    "--disk", "device=cdrom,bus=scsi", "--import"]),
    ("floppy", ["--osinfo", "win2k19", "--machine", "pc", "--memory", "4096",
                "--disk", disk("floppy", 40, bus="sata"), "--disk", "device=floppy",
                "--import"]),
    ("diskless", ["--osinfo", "generic", "--memory", "256", "--disk", "none",
                  "--network", "none", "--graphics", "none", "--install", "no_install=yes"]),
    # --- network interfaces
    ("nic-network", ["--osinfo", "debian11", "--memory", "1024",
                     "--network", "network=default,model=virtio", "--disk", disk("nic-network"),
                     "--import"]),
    ("nic-mac", ["--osinfo", "debian11", "--memory", "1024",
                 "--network", "network=default,mac=52:54:00:3a:10:01",
                 "--disk", disk("nic-mac"), "--import"]),
    ("nic-bridge", ["--osinfo", "ubuntu22.04", "--memory", "2048",
                    "--network", "bridge=br0,model=virtio", "--disk", disk("nic-bridge"),
                    "--import"]),
    ("nic-bridge-e1000e", ["--osinfo", "win10", "--memory", "4096",
                           "--network", "bridge=br0,model=e1000e",
                           "--disk", disk("nic-bridge-e1000e", 40), "--import"]),
    ("nic-direct", ["--osinfo", "debian11", "--memory", "1024",
                    "--network", "type=direct,source=eth0,source.mode=bridge,model=virtio",
                    "--disk", disk("nic-direct"), "--import"]),
    ("nic-two", ["--osinfo", "debian11", "--memory", "1024",
                 "--network", "network=default", "--network", "bridge=br0",
                 "--disk", disk("nic-two"), "--import"]),
    ("nic-user", ["--osinfo", "alpinelinux3.17", "--memory", "512", "--network", "user",
                  "--disk", disk("nic-user", 4), "--import"]),
    ("nic-link-down", ["--osinfo", "debian11", "--memory", "1024",
                       "--network", "network=default,link.state=down",
                       "--disk", disk("nic-link-down"), "--import"]),
    ("nic-vhost-queues", ["--osinfo", "rhel9.1", "--memory", "4096", "--vcpus", "4",
                          "--network", "network=default,model=virtio,driver.name=vhost,"
                          "driver.queues=4", "--disk", disk("nic-vhost-queues"), "--import"]),
    ("nic-filterref", ["--osinfo", "debian11", "--memory", "1024",
                       "--network", "network=default,filterref.filter=clean-traffic",
                       "--disk", disk("nic-filterref"), "--import"]),
    ("nic-none", ["--osinfo", "debian11", "--memory", "1024", "--network", "none",
                  "--disk", disk("nic-none"), "--import"]),
    # --- CPU
    ("cpu-host-passthrough", ["--osinfo", "rhel9.1", "--memory", "2048",
                              "--cpu", "host-passthrough", "--disk", disk("cpu-hp"), "--import"]),
    ("cpu-host-model", ["--osinfo", "rhel9.1", "--memory", "2048", "--cpu", "host-model",
                        "--disk", disk("cpu-host-model"), "--import"]),
    ("cpu-named", ["--osinfo", "rhel9.1", "--memory", "2048",
                   "--cpu", "Skylake-Client-IBRS,+vmx,-hle,-rtm",
                   "--disk", disk("cpu-named"), "--import"]),
    ("cpu-topology", ["--osinfo", "rhel9.1", "--memory", "4096",
                      "--vcpus", "8,sockets=1,cores=4,threads=2",
                      "--disk", disk("cpu-topology"), "--import"]),
    ("cpu-maxvcpus", ["--osinfo", "debian11", "--memory", "2048", "--vcpus", "2,maxvcpus=8",
                      "--disk", disk("cpu-maxvcpus"), "--import"]),
    ("cpu-cache-passthrough", ["--osinfo", "fedora37", "--memory", "4096",
                               "--cpu", "host-passthrough,cache.mode=passthrough,check=none,"
                               "migratable=on", "--disk", disk("cpu-cache"), "--import"]),
    ("cpu-qemu64", ["--osinfo", "generic", "--machine", "pc", "--memory", "512",
                    "--cpu", "qemu64", "--disk", disk("cpu-qemu64", 4), "--import"]),
    ("cputune-pin", ["--osinfo", "rhel9.1", "--memory", "4096", "--vcpus", "2",
                     "--cputune", "vcpupin0.vcpu=0,vcpupin0.cpuset=0,"
                     "vcpupin1.vcpu=1,vcpupin1.cpuset=1",
                     "--disk", disk("cputune-pin"), "--import"]),
    ("cpuset", ["--osinfo", "rhel9.1", "--memory", "2048", "--vcpus", "2,cpuset=0-1",
                "--disk", disk("cpuset"), "--import"]),
    # --- memory and NUMA
    ("mem-large", ["--osinfo", "rhel9.1", "--memory", "16384", "--vcpus", "8",
                   "--disk", disk("mem-large", 100), "--import"]),
    ("mem-current", ["--osinfo", "debian11", "--memory", "memory=1024,currentMemory=512",
                     "--disk", disk("mem-current"), "--import"]),
    ("mem-hugepages", ["--osinfo", "rhel9.1", "--memory", "4096",
                       "--memorybacking", "hugepages.page0.size=2,hugepages.page0.unit=MiB",
                       "--disk", disk("mem-hugepages"), "--import"]),
    ("memtune", ["--osinfo", "rhel9.1", "--memory", "2048",
                 "--memtune", "hard_limit=4194304,soft_limit=2097152",
                 "--disk", disk("memtune"), "--import"]),
    ("numa-cells", ["--osinfo", "rhel9.1", "--memory", "4096", "--vcpus", "4",
                    "--cpu", "host-passthrough,cell0.id=0,cell0.cpus=0-1,cell0.memory=2097152,"
                    "cell1.id=1,cell1.cpus=2-3,cell1.memory=2097152",
                    "--disk", disk("numa-cells"), "--import"]),
    ("numatune", ["--osinfo", "rhel9.1", "--memory", "2048", "--numatune", "0,mode=preferred",
                  "--disk", disk("numatune"), "--import"]),
    ("mem-hotplug", ["--osinfo", "rhel9.1", "--memory", "memory=2048,maxMemory=8192,"
                     "maxMemory.slots=16", "--vcpus", "2",
                     "--cpu", "host-model,cell0.id=0,cell0.cpus=0-1,cell0.memory=2097152",
                     "--disk", disk("mem-hotplug"), "--import"]),
    ("blkiotune", ["--osinfo", "debian11", "--memory", "1024", "--blkiotune", "weight=500",
                   "--disk", disk("blkiotune"), "--import"]),
    # --- features, clock, events, sysinfo, metadata
    ("features-hyperv", ["--osinfo", "win2k22", "--memory", "8192", "--vcpus", "4",
                         "--disk", disk("features-hyperv", 60, bus="sata"), "--import"]),
    ("features-smm-kvm-hidden", ["--osinfo", "win10", "--memory", "8192", "--boot", "uefi",
                                 "--features", "kvm_hidden=on,smm=on",
                                 "--disk", disk("features-kvm-hidden", 60), "--import"]),
    ("clock-localtime", ["--osinfo", "win10", "--memory", "4096", "--clock", "offset=localtime",
                         "--disk", disk("clock-localtime", 40), "--import"]),
    ("events", ["--osinfo", "debian11", "--memory", "1024",
                "--events", "on_poweroff=destroy,on_reboot=restart,on_crash=restart",
                "--disk", disk("events"), "--import"]),
    ("pm-suspend", ["--osinfo", "debian11", "--memory", "1024",
                    "--pm", "suspend_to_mem.enabled=on,suspend_to_disk.enabled=off",
                    "--disk", disk("pm-suspend"), "--import"]),
    ("sysinfo-smbios", ["--osinfo", "debian11", "--memory", "1024",
                        "--sysinfo", "system.manufacturer=Example,system.product=VRF,"
                        "system.serial=0001", "--disk", disk("sysinfo-smbios"), "--import"]),
    ("metadata-title", ["--osinfo", "debian11", "--memory", "1024",
                        "--metadata", "title=Build runner,description=CI build runner (staging)",
                        "--disk", disk("metadata-title"), "--import"]),
    ("uuid-fixed", ["--osinfo", "debian11", "--memory", "1024",
                    "--metadata", "uuid=8d5f1c1a-4e3b-4b7e-9a8f-2c6d0e7b1a55",
                    "--disk", disk("uuid-fixed"), "--import"]),
    ("qemu-virt-type", ["--osinfo", "debian11", "--virt-type", "qemu", "--memory", "1024",
                        "--disk", disk("qemu-virt-type"), "--import"]),
    ("seclabel-none", ["--osinfo", "debian11", "--memory", "1024", "--seclabel", "type=none",
                       "--disk", disk("seclabel-none"), "--import"]),
    ("resource-partition", ["--osinfo", "debian11", "--memory", "1024",
                            "--resource", "/machine", "--disk", disk("resource-partition"),
                            "--import"]),
    ("qemu-commandline", ["--osinfo", "debian11", "--memory", "1024",
                          "--qemu-commandline=-fw_cfg name=opt/vrf/greeting,string=hello",
                          "--disk", disk("qemu-commandline"), "--import"]),
    ("xml-edit", ["--osinfo", "debian11", "--memory", "1024",
                  "--xml", "./on_crash=destroy", "--disk", disk("xml-edit"), "--import"]),
    # --- whole guests, the way people set them up
    ("web-server", ["--osinfo", "debian11", "--memory", "2048", "--vcpus", "2",
                    "--cpu", "host-passthrough", "--graphics", "none",
                    "--channel", "unix,target.type=virtio,target.name=org.qemu.guest_agent.0",
                    "--network", "bridge=br0,model=virtio", "--disk", disk("web-server", 20),
                    "--rng", "/dev/urandom", "--import"]),
    ("db-server", ["--osinfo", "rhel9.1", "--memory", "16384", "--vcpus", "8",
                   "--cpu", "host-passthrough", "--memorybacking", "hugepages=on",
                   "--controller", "type=scsi,model=virtio-scsi",
                   "--disk", disk("db-os", 20, bus="scsi"),
                   "--disk", f"path={SCRATCH}/db-data.img,size=200,format=raw,bus=scsi,"
                   "cache=none,io=native,discard=unmap",
                   "--network", "network=default,model=virtio", "--graphics", "vnc",
                   "--import"]),
    ("win11-desktop", ["--osinfo", "win11", "--memory", "8192", "--vcpus", "4",
                       "--boot", "uefi", "--tpm", "emulator", "--graphics", "spice",
                       "--video", "qxl", "--sound", "ich9", "--channel", "spicevmc",
                       "--redirdev", "usb,type=spicevmc",
                       "--disk", disk("win11-desktop", 80, bus="sata"),
                       "--disk", "device=cdrom,bus=sata",
                       "--network", "network=default,model=e1000e", "--import"]),
    ("win2k22-server", ["--osinfo", "win2k22", "--memory", "8192", "--vcpus", "4",
                        "--boot", "uefi", "--tpm", "emulator", "--clock", "offset=localtime",
                        "--disk", disk("win2k22-server", 80, bus="sata"),
                        "--network", "bridge=br0,model=e1000e", "--graphics", "vnc",
                        "--import"]),
    ("fedora-workstation", ["--osinfo", "fedora37", "--memory", "4096", "--vcpus", "4",
                            "--boot", "uefi", "--graphics", "spice", "--video", "virtio",
                            "--sound", "ich9", "--disk", disk("fedora-ws", 40),
                            "--network", "network=default", "--import"]),
    ("k8s-node", ["--osinfo", "ubuntu22.04", "--memory", "4096", "--vcpus", "2",
                  "--cpu", "host-passthrough", "--graphics", "none", "--console", "pty",
                  "--disk", disk("k8s-node", 40), "--disk", disk("k8s-node-data", 50),
                  "--network", "network=default,model=virtio",
                  "--network", "bridge=br0,model=virtio", "--import"]),
    ("router", ["--osinfo", "freebsd13.1", "--memory", "1024", "--vcpus", "2",
                "--graphics", "none", "--serial", "pty",
                "--network", "bridge=br0,model=virtio", "--network", "bridge=br1,model=virtio",
                "--network", "network=default,model=virtio",
                "--disk", disk("router", 8), "--import"]),
    ("legacy-pc", ["--osinfo", "centos7.0", "--machine", "pc", "--memory", "2048",
                   "--disk", disk("legacy-pc", 20, bus="ide"),
                   "--network", "network=default,model=rtl8139", "--graphics", "vnc",
                   "--video", "cirrus", "--import"]),
    ("arch-uefi", ["--osinfo", "archlinux", "--memory", "2048", "--vcpus", "2",
                   "--boot", "uefi", "--disk", disk("arch-uefi", 20),
                   "--network", "network=default", "--import"]),
    ("alpine-tiny", ["--osinfo", "alpinelinux3.17", "--memory", "256", "--vcpus", "1",
                     "--graphics", "none", "--disk", disk("alpine-tiny", 2),
                     "--network", "network=default", "--import"]),
    ("opensuse", ["--osinfo", "opensuse15.4", "--memory", "2048", "--vcpus", "2",
                  "--disk", disk("opensuse", 20), "--network", "network=default",
                  "--import"]),
    ("ci-runner", ["--osinfo", "ubuntu22.04", "--memory", "8192", "--vcpus", "8",
                   "--cpu", "host-passthrough", "--memballoon", "none",
                   "--disk", disk("ci-runner", 100, cache="unsafe"),
                   "--network", "network=default", "--graphics", "none", "--import"]),
    ("gaming-vm", ["--osinfo", "win10", "--memory", "16384", "--vcpus", "8,sockets=1,cores=4,"
                   "threads=2", "--cpu", "host-passthrough,cache.mode=passthrough",
                   "--features", "kvm_hidden=on", "--boot", "uefi",
                   "--memorybacking", "hugepages=on",
                   "--disk", disk("gaming-vm", 200, bus="sata"),
                   "--network", "bridge=br0,model=e1000e", "--sound", "ich9",
                   "--graphics", "spice", "--import"]),
    ("nfv-node", ["--osinfo", "rhel9.1", "--memory", "8192", "--vcpus", "4",
                  "--cpu", "host-passthrough,cell0.id=0,cell0.cpus=0-3,"
                  "cell0.memory=8388608", "--numatune", "0,mode=strict",
                  "--memorybacking", "hugepages=on,locked=on",
                  "--network", "type=direct,source=eth0,source.mode=passthrough,"
                  "model=virtio", "--disk", disk("nfv-node", 20), "--graphics", "none",
                  "--import"]),
    ("kernel-dev", ["--osinfo", "fedora37", "--memory", "2048", "--graphics", "none",
                    "--boot", "kernel=/var/tmp/vrf-corpus/bzImage,"
                    "kernel_args=console=ttyS0 root=/dev/vda rw",
                    "--disk", disk("kernel-dev", 10, format="raw"),
                    "--network", "user", "--serial", "pty"]),
    ("q35-everything", ["--osinfo", "fedora37", "--memory", "4096", "--vcpus", "4",
                        "--boot", "uefi", "--tpm", "emulator", "--graphics", "spice",
                        "--channel", "unix,target.type=virtio,target.name=org.qemu.guest_agent.0",
                        "--channel", "spicevmc", "--redirdev", "usb,type=spicevmc",
                        "--sound", "ich9", "--watchdog", "i6300esb,action=reset",
                        "--rng", "/dev/urandom", "--panic", "isa",
                        "--controller", "type=scsi,model=virtio-scsi",
                        "--disk", disk("qe-os", 30), "--disk", disk("qe-data", 50, bus="scsi"),
                        "--disk", "device=cdrom,bus=sata", "--network", "network=default",
                        "--network", "bridge=br0", "--input", "keyboard,bus=virtio",
                        "--import"]),
    # --- cloud-init: the install phase (seed ISO attached) and the phase after it
    ("cloud-init-install", ["--osinfo", "ubuntu22.04", "--memory", "2048", "--vcpus", "2",
                            "--disk", disk("cloud-init", 20), "--import",
                            "--cloud-init", f"user-data={USER_DATA}",
                            "--network", "network=default", "--print-xml", "1"]),
    ("cloud-init-final", ["--osinfo", "ubuntu22.04", "--memory", "2048", "--vcpus", "2",
                          "--disk", disk("cloud-init-final", 20), "--import",
                          "--cloud-init", f"user-data={USER_DATA}",
                          "--network", "network=default", "--print-xml", "2"]),
    ("pc-everything", ["--osinfo", "debian11", "--machine", "pc", "--memory", "2048",
                       "--vcpus", "2", "--graphics", "vnc,port=5920,listen=127.0.0.1",
                       "--sound", "ac97", "--watchdog", "i6300esb,action=poweroff",
                       "--serial", "pty", "--disk", disk("pe-os", 20, bus="ide"),
                       "--disk", "device=cdrom,bus=ide", "--disk", "device=floppy",
                       "--network", "network=default,model=e1000", "--import"]),
]


def generate(slug: str, args: list[str]) -> str:
    name = f"vrf-vi-{slug}"
    argv = ["virt-install", "--connect", URI, "--name", name, "--noautoconsole", "--dry-run"]
    if "--print-xml" not in args:
        argv.append("--print-xml")
    r = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{slug}: virt-install failed: {r.stderr.strip()}")
    return r.stdout


def _pools() -> set[str]:
    r = subprocess.run(
        ["virsh", "-q", "-c", URI, "pool-list", "--all", "--name"],
        capture_output=True, text=True, check=True,
    )
    return {line.strip() for line in r.stdout.splitlines() if line.strip()}


def remove_new_pools(before: set[str]) -> None:
    virsh = ["virsh", "-q", "-c", URI]
    for pool in sorted((_pools() - before) & set(POOLS)):
        subprocess.run([*virsh, "pool-destroy", pool], capture_output=True)
        subprocess.run([*virsh, "pool-undefine", pool], capture_output=True, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="regenerate only these slugs")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    # One e2e session at a time shares the system daemon; start it only if it is down.
    with daemon.exclusive_session():
        daemon.ensure_system_libvirtd()
        before = _pools()
        Path(SCRATCH).mkdir(parents=True, exist_ok=True)
        Path(USER_DATA).write_text("#cloud-config\nhostname: vrf-cloud\n")
        try:
            failed = _generate_all(args.only)
        finally:
            remove_new_pools(before)
            daemon.stop_all()
    return 1 if failed else 0


def _generate_all(only: list[str] | None) -> int:
    failed = 0
    for slug, extra in CASES:
        if only and slug not in only:
            continue
        try:
            xml = generate(slug, extra)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            failed += 1
            continue
        (OUT / f"vrf-vi-{slug}.xml").write_text(xml)
        print(f"vrf-vi-{slug}.xml")
    return failed


if __name__ == "__main__":
    sys.exit(main())
