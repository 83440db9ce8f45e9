"""A tiny TCG-bootable guest for the e2e tier: Debian cloud kernel + busybox initramfs.

The guest boots in a few seconds under TCG (no KVM), loads the virtio modules
(PCI, balloon, blk, net, scsi, console, rng) and the ACPI power button, prints
``VR-GUEST-READY`` on its serial console and then idles forever.  Block/net hot-plug
shows up on the console as ``VR-GUEST-DEVICE add block vdb`` / ``... remove net eth1``.
The ACPI power button is wired to ``poweroff -f`` so ``virDomainShutdown`` works.
With ``vr.seed`` on the kernel command line it mounts the cloud-init seed on a SCSI
cdrom (``/dev/sr0``; sr_mod, cdrom and isofs are loaded) and prints
``VR-GUEST-SEED VR-MARK-...`` for each ``VR-MARK-*`` word of its ``user-data``.

Build once and cache outside the repo (default ``/var/cache/virt-reconcile-testbed``,
override with ``VR_GUEST_CACHE``).  Safe to call concurrently (file lock, atomic
rename).  ``python -m tests.testbed.guest`` builds it and prints the paths.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

READY_LINE = "VR-GUEST-READY"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
DEFAULT_CACHE_DIR = Path(os.environ.get("VR_GUEST_CACHE", "/var/cache/virt-reconcile-testbed"))
SCRATCH_BASE = Path("/var/tmp/virt-reconcile-e2e")
# Bump when the initramfs layout / init script changes: invalidates cached builds.
BUILD_REVISION = 4

# Loaded in this order (dependencies are resolved from each module's .modinfo and
# loaded first).  Required ones must exist in the kernel package.
REQUIRED_MODULES = ("virtio_pci", "virtio_balloon", "virtio_blk", "virtio_net")
# sr_mod (with cdrom) and isofs read a cloud-init seed on a SCSI cdrom (the cloud
# kernel has no AHCI driver: the seed goes on the virtio-scsi bus).
OPTIONAL_MODULES = (
    "virtio_scsi",
    "sd_mod",
    "sr_mod",
    "isofs",
    "virtio_console",
    "virtio_rng",
    "button",
    "evdev",
)
SEED_LINE = "VR-GUEST-SEED"

_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
# apt-get download into a root-only dir otherwise warns about the _apt sandbox user.
_APT_NOSANDBOX = ("-o", "APT::Sandbox::User=root")

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in $(cat /etc/vr-modules); do
    insmod "/lib/modules/$m.ko" || echo "vr-guest: insmod $m failed"
done
hostname vr-guest
ip link set lo up 2>/dev/null
# Report block/net hot-plug on the serial console: "VR-GUEST-DEVICE add block vdb"
# (the cloud kernel has no uevent helper, so poll sysfs).
/bin/vr-devwatch &
# With vr.seed on the command line: mount the cloud-init seed (the cdrom /dev/sr0,
# label cidata) and print each line of its user-data that holds VR-MARK.
if grep -q vr.seed /proc/cmdline; then
    for i in $(seq 50); do [ -b /dev/sr0 ] && break; sleep 0.1; done
    mkdir -p /mnt/seed
    if mount -t iso9660 -o ro /dev/sr0 /mnt/seed; then
        grep -o 'VR-MARK-[A-Za-z0-9]*' /mnt/seed/user-data | while read -r m; do
            echo "{SEED_LINE} $m" > /dev/ttyS0
        done
        umount /mnt/seed
    else
        echo "{SEED_LINE} none" > /dev/ttyS0
    fi
fi
# ACPI power button (virDomainShutdown) -> immediate power off.
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /dev/null
echo "{READY_LINE} $(uname -r)" > /dev/ttyS0
while :; do sleep 3600; done
"""

DEVWATCH_SCRIPT = r"""#!/bin/sh
snap() {
    for p in /sys/class/block/* /sys/class/net/*; do [ -e "$p" ] && echo "${p#/sys/class/}"; done
}
diff_print() {  # $1 action, $2 list, $3 reference list
    for x in $2; do
        case "
$3
" in *"
$x
"*) ;; *) echo "VR-GUEST-DEVICE $1 ${x%%/*} ${x#*/}" > /dev/ttyS0 ;; esac
    done
}
old=$(snap)
while :; do
    sleep 0.2
    new=$(snap)
    [ "$new" = "$old" ] && continue
    diff_print add "$new" "$old"
    diff_print remove "$old" "$new"
    old=$new
done
"""

POWER_SCRIPT = "#!/bin/sh\necho vr-guest: power button, powering off > /dev/ttyS0\npoweroff -f\n"


@dataclass(frozen=True)
class Guest:
    """Paths of a built guest (both world-readable, so qemu as libvirt-qemu can open them)."""

    kernel: Path
    initrd: Path
    kernel_version: str = ""


# --------------------------------------------------------------------------- apt helpers


def _run(cmd: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, check=True, text=True, capture_output=True, env=_APT_ENV, cwd=cwd
        )
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(cmd)} failed ({e.returncode}):\n{e.stderr}") from e


def _dpkg_installed(pkg: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def _apt_update() -> None:
    _run(["apt-get", "update", "-qq"])


def _apt_install(*pkgs: str) -> None:
    missing = [p for p in pkgs if not _dpkg_installed(p)]
    if not missing:
        return
    try:
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing])
    except RuntimeError:
        _apt_update()
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing])


def _resolve_kernel_package() -> tuple[str, str]:
    """(versioned package, version) that the cloud kernel metapackage depends on."""

    def resolve() -> tuple[str, str] | None:
        r = subprocess.run(
            ["apt-cache", "depends", KERNEL_METAPACKAGE],
            capture_output=True,
            text=True,
            check=False,
            env=_APT_ENV,
        )
        m = re.search(r"^\s*Depends:\s*(linux-image-\S+)", r.stdout, re.M)
        if r.returncode != 0 or not m:
            return None
        pkg = m.group(1)
        pol = subprocess.run(
            ["apt-cache", "policy", pkg],
            capture_output=True,
            text=True,
            check=False,
            env=_APT_ENV,
        )
        v = re.search(r"^\s*Candidate:\s*(\S+)", pol.stdout, re.M)
        return pkg, (v.group(1) if v and v.group(1) != "(none)" else "")

    found = resolve()
    if found is None or not found[1]:
        _apt_update()
        found = resolve()
    if found is None or not found[1]:
        raise RuntimeError(f"cannot resolve the package behind {KERNEL_METAPACKAGE} via apt-cache")
    return found


def _apt_download(pkg: str, dest: Path) -> Path:
    def download() -> None:
        _run(["apt-get", *_APT_NOSANDBOX, "download", "-qq", pkg], cwd=str(dest))

    try:
        download()
    except RuntimeError:
        _apt_update()  # stale lists: the versioned file may be gone from the mirror
        download()
    debs = sorted(dest.glob(f"{pkg}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {pkg} produced no .deb in {dest}")
    return debs[-1]


# --------------------------------------------------------------------------- modules


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    return data


def _module_name(path: Path) -> str:
    return path.name.split(".ko", 1)[0].replace("-", "_")


def _module_depends(data: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def _module_closure(moddir: Path) -> list[tuple[str, bytes]]:
    """Wanted modules plus their dependencies, in load order, decompressed."""
    index = {_module_name(p): p for p in moddir.rglob("*.ko*") if ".ko" in p.name}
    missing = [m for m in REQUIRED_MODULES if m not in index]
    if missing:
        raise RuntimeError(f"kernel package lacks modules {missing} under {moddir}")
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:  # built in
            return
        data = _read_module(index[name])
        for dep in _module_depends(data):
            visit(dep)
        order.append((name, data))

    for name in (*REQUIRED_MODULES, *(m for m in OPTIONAL_MODULES if m in index)):
        visit(name)
    return order


# --------------------------------------------------------------------------- cpio (newc)


class _Cpio:
    """Minimal newc writer: lets us create /dev/console without root or cpio(1)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        namez = name.encode() + b"\x00"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(hdr + namez)
        self.buf.write(b"\x00" * (-(len(hdr) + len(namez)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _busybox_path() -> Path:
    _apt_install("busybox-static")
    for cand in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if cand.exists():
            return cand
    raise RuntimeError("busybox-static installed but no busybox binary found")


def _build_initrd(busybox: Path, modules: Iterable[tuple[str, bytes]]) -> bytes:
    c = _Cpio()
    for d in (
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "usr",
        "usr/bin",
        "usr/sbin",
    ):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/ttyS0", 4, 64)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    names = []
    for name, data in modules:
        c.file(f"lib/modules/{name}.ko", data)
        names.append(name)
    c.file("etc/vr-modules", ("\n".join(names) + "\n").encode())
    c.file("etc/acpi/PWRF/00000080", POWER_SCRIPT.encode(), 0o755)
    c.file("bin/vr-devwatch", DEVWATCH_SCRIPT.encode(), 0o755)
    c.file("init", INIT_SCRIPT.encode(), 0o755)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------- build + cache


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_world_readable_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)


def _cached(build_dir: Path) -> Guest | None:
    meta = build_dir / "guest.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    g = Guest(build_dir / "vmlinuz", build_dir / "initrd.img", info.get("kernel_version", ""))
    return g if g.kernel.is_file() and g.initrd.is_file() else None


def _latest_cached(cache_dir: Path) -> Guest | None:
    builds = sorted(cache_dir.glob(f"*-r{BUILD_REVISION}"), key=lambda p: p.stat().st_mtime)
    for b in reversed(builds):
        g = _cached(b)
        if g:
            return g
    return None


def build_guest(cache_dir: Path = DEFAULT_CACHE_DIR) -> Guest:
    """Build (once) and return the tiny guest's kernel + initrd."""
    cache_dir = Path(cache_dir)
    _make_world_readable_dir(cache_dir)
    with _locked(cache_dir / ".lock"):
        try:
            pkg, version = _resolve_kernel_package()
        except (RuntimeError, OSError, subprocess.CalledProcessError):
            fallback = _latest_cached(cache_dir)  # offline but already built: fine
            if fallback:
                return fallback
            raise
        build_dir = cache_dir / f"{pkg}_{version}-r{BUILD_REVISION}"
        cached = _cached(build_dir)
        if cached:
            return cached
        busybox = _busybox_path()
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
            t = Path(tmp)
            deb = _apt_download(pkg, t)
            root = t / "root"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
            moddirs = sorted((root / "lib" / "modules").glob("*")) or sorted(
                (root / "usr" / "lib" / "modules").glob("*")
            )
            if not vmlinuz or not moddirs:
                raise RuntimeError(f"{deb.name}: no /boot/vmlinuz-* or lib/modules/*")
            kver = moddirs[0].name
            out = t / "out"
            out.mkdir()
            shutil.copyfile(vmlinuz[0], out / "vmlinuz")
            (out / "initrd.img").write_bytes(_build_initrd(busybox, _module_closure(moddirs[0])))
            (out / "guest.json").write_text(
                json.dumps(
                    {
                        "package": pkg,
                        "version": version,
                        "kernel_version": kver,
                        "built": time.time(),
                    },
                    indent=1,
                )
            )
            for f in out.iterdir():
                f.chmod(0o644)
            out.chmod(0o755)
            if build_dir.exists():  # half-written leftovers (no guest.json)
                shutil.rmtree(build_dir)
            out.rename(build_dir)
        result = _cached(build_dir)
        assert result is not None
        return result


# --------------------------------------------------------------------------- domains


def guest_domain_xml(
    name: str,
    guest: Guest,
    *,
    serial_log: Path | str,
    root_ports: int = 4,
    memory_kib: int = 128 * 1024,
    vcpus: int = 1,
    extra_devices: str = "",
    cmdline_extra: str = "",
    uuid: str | None = None,
) -> str:
    """Domain XML for the tiny guest (TCG, q35, ACPI, serial console to a file).

    ``root_ports`` free ``pcie-root-port`` controllers are left for hot-plug: the
    balloon sits on pcie.0 and no USB controller is added, so nothing auto-placed
    consumes them.  ``extra_devices`` is raw XML inserted into ``<devices>``.
    """
    ports = "\n".join(
        "    <controller type='pci' model='pcie-root-port'/>" for _ in range(root_ports)
    )
    cmdline = f"console=ttyS0 quiet loglevel=3 panic=-1 {cmdline_extra}".strip()
    uuid_xml = f"\n  <uuid>{escape(uuid)}</uuid>" if uuid else ""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>{uuid_xml}
  <memory unit='KiB'>{memory_kib}</memory>
  <currentMemory unit='KiB'>{memory_kib}</currentMemory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(guest.kernel))}</kernel>
    <initrd>{escape(str(guest.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <controller type='pci' index='0' model='pcie-root'/>
{ports}
    <serial type='file'>
      <source path={quoteattr(str(serial_log))}/>
      <target port='0'/>
    </serial>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
    </memballoon>
{extra_devices}
  </devices>
</domain>
"""


def wait_for_ready(
    serial_log: Path | str,
    timeout: float = 60.0,
    line: str = READY_LINE,
    *,
    domain: Any = None,
) -> float:
    """Wait until ``line`` shows up in the serial log; return the seconds waited.

    Any other console text works too, e.g. ``line="VR-GUEST-DEVICE add block vdb"``.
    Pass the ``libvirt.virDomain`` as ``domain`` to fail at once if the guest stops.
    """
    path = Path(serial_log)
    start = time.monotonic()
    while True:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if line in text:
            return time.monotonic() - start
        problem = None
        if time.monotonic() - start > timeout:
            problem = f"not seen after {timeout:.0f}s"
        elif domain is not None:
            try:
                if not domain.isActive():
                    problem = "the domain is no longer running"
            except Exception as e:  # libvirtError: e.g. a transient domain that is gone
                problem = f"the domain is gone ({e})"
        if problem:
            raise TimeoutError(f"{line!r} in {path}: {problem}; last output:\n{text[-3000:]}")
        time.sleep(0.1)


def make_scratch_dir(prefix: str = "vrt-", base: Path = SCRATCH_BASE) -> Path:
    """A fresh directory qemu (user libvirt-qemu) can reach: for disk images, serial logs.

    pytest's ``tmp_path`` lives under a 0700 directory, which qemu cannot traverse.
    """
    _make_world_readable_dir(base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cache = Path(argv[0]) if argv else DEFAULT_CACHE_DIR
    g = build_guest(cache)
    print(f"kernel={g.kernel}\ninitrd={g.initrd}\nkernel_version={g.kernel_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
