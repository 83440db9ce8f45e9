"""Real libvirt daemons for the e2e tier.

* :func:`ensure_system_libvirtd` makes ``qemu:///system`` answer (starting ``virtlogd -d``
  and ``libvirtd -d`` only when they are not running already).
* :func:`start_isolated_host` starts an extra, fully private ``libvirtd`` in its own
  mount namespace: private ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt``,
  ``/var/cache/libvirt`` and a stripped copy of ``/etc/libvirt`` (no domains, networks,
  pools or secrets of the real host).  Its sockets live in a host-visible directory, so it
  is reached as ``qemu+unix:///system?socket=PATH``.  It needs no virtlogd
  (``stdio_handler = "file"``) and uses no cgroups, so it never clashes with the main
  daemon.  Several of them can run side by side.
* :func:`stop_all` stops, by pid, everything this process started (and nothing else).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_URI = "qemu:///system"
SYSTEM_SOCKET = Path("/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = Path("/run/libvirt/virtlogd-sock")

# Paths bind-mounted over (private per isolated host): key = subdir in the host workdir.
PRIVATE_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
}
# Top-level entries of /etc/libvirt that hold the real host's objects: not copied.
_ETC_STATE = {"qemu", "storage", "secrets", "lxc", "libxl", "bhyve", "ch"}
_UNIX_PATH_MAX = 107

_lock = threading.Lock()
_started_pids: list[tuple[str, int]] = []  # (comm, pid) of system daemons we started
_isolated: list[IsolatedHost] = []


class DaemonError(RuntimeError):
    pass


# --------------------------------------------------------------------------- helpers


def _answers(uri: str, timeout: float = 15.0) -> bool:
    """True if ``virsh -c URI version`` succeeds (quiet, bounded in time)."""
    try:
        r = subprocess.run(
            ["virsh", "-q", "-c", uri, "version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _socket_listening(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _pid_alive(pid: int, comm: str | None = None) -> bool:
    try:
        actual = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # zombie: exited, not yet reaped
        return False
    return comm is None or actual == comm[:15]


def _read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_pid(pid: int, comm: str | None, timeout: float = 15.0) -> None:
    """SIGTERM ``pid`` (only if it still is ``comm``), SIGKILL after ``timeout``."""
    if not _pid_alive(pid, comm):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, comm):
            return
        time.sleep(0.1)
    if _pid_alive(pid, comm):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        raise DaemonError(
            f"missing {missing}: run scripts/setup-testbed.sh (installs libvirt/qemu)"
        )


# --------------------------------------------------------------------------- session lock

SESSION_LOCK = Path(os.environ.get("VR_E2E_LOCK", "/run/virt-reconcile-e2e.lock"))


@contextlib.contextmanager
def exclusive_session(timeout: float = 1800.0, path: Path = SESSION_LOCK) -> Iterator[None]:
    """Hold a machine-wide lock for a whole e2e session.

    Sessions share the system daemon and clean up ``vrt-*`` objects on it, so two test
    sessions on one machine would destroy each other's guests: the second one waits.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    print(f"testbed: waiting for another e2e session ({path})", file=sys.stderr)
                    announced = True
                if time.monotonic() > deadline:
                    raise DaemonError(
                        f"another e2e session held {path} for {timeout:.0f}s"
                    ) from None
                time.sleep(0.5)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- system daemon


def ensure_system_libvirtd(timeout: float = 30.0) -> str:
    """Make ``qemu:///system`` answer; start virtlogd/libvirtd only if needed."""
    _require("virsh", "libvirtd", "virtlogd")
    with _lock:
        for d in ("/var/log/libvirt", "/run/libvirt"):
            os.makedirs(d, exist_ok=True)
        # The system qemu driver logs guest stdio through virtlogd (stdio_handler=logd,
        # the default); as root libvirtd does not auto-spawn it, and without systemd
        # nothing socket-activates it.
        if not _socket_listening(VIRTLOGD_SOCKET):
            subprocess.run(["virtlogd", "-d"], check=True, capture_output=True)
            deadline = time.monotonic() + 10
            while not _socket_listening(VIRTLOGD_SOCKET):
                if time.monotonic() > deadline:
                    raise DaemonError("virtlogd -d started but its socket never answered")
                time.sleep(0.1)
            pid = _read_pidfile(Path("/run/virtlogd.pid"))
            if pid:
                _started_pids.append(("virtlogd", pid))
        if _answers(SYSTEM_URI):
            return SYSTEM_URI
        r = subprocess.run(["libvirtd", "-d"], capture_output=True, text=True, check=False)
        pid = _read_pidfile(Path("/run/libvirtd.pid")) if r.returncode == 0 else None
        if pid:
            _started_pids.append(("libvirtd", pid))
        # rc != 0 is usually "Unable to obtain pidfile": another libvirtd is starting
        # (a parallel session, an init script); give it the same time to answer.
        deadline = time.monotonic() + timeout
        while not _answers(SYSTEM_URI, timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline or (pid and not _pid_alive(pid, "libvirtd")):
                raise DaemonError(
                    f"{SYSTEM_URI} did not answer within {timeout:.0f}s after `libvirtd -d` "
                    f"(rc={r.returncode}, pid={pid}): {r.stderr.strip()}\n"
                    "(daemon log: /var/log/libvirt/libvirtd.log if configured, else syslog)"
                )
            time.sleep(0.3)
        return SYSTEM_URI


def started_system_daemons() -> list[tuple[str, int]]:
    """(name, pid) of the system daemons this process started (to be stopped by stop_all)."""
    return list(_started_pids)


# --------------------------------------------------------------------------- isolated hosts


@dataclass
class IsolatedHost:
    """A private libvirtd in its own mount namespace."""

    name: str
    uri: str
    pid: int
    workdir: Path
    socket_path: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _sockdir_tmp: Path | None = field(default=None, repr=False)
    stopped: bool = False

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_alive(self.pid, "libvirtd")

    def log_tail(self, n: int = 4000) -> str:
        stderr = self.workdir / "libvirtd.stderr"
        return f"--- {self.log_path}:\n{_tail(self.log_path, n)}\n--- {stderr}:\n{_tail(stderr, n)}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise DaemonError(
                    f"isolated libvirtd {self.name!r} (pid {self.pid}) exited during start-up "
                    f"(rc={self._proc.returncode if self._proc else '?'})\n{self.log_tail()}"
                )
            if self.socket_path.exists() and _answers(self.uri, timeout=10):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(
                    f"isolated libvirtd {self.name!r} did not answer on {self.uri} within "
                    f"{timeout:.0f}s\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _destroy_running_objects(self) -> None:
        """Stop this host's guests and networks (libvirtd would leave them running)."""
        if not self.alive() or not self.socket_path.exists():
            return
        import libvirt  # local: keep this module importable for tooling without libvirt

        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    net.destroy()
        finally:
            conn.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Destroy its running guests/networks, then SIGTERM (SIGKILL) the daemon by pid."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self._destroy_running_objects()
        finally:
            if self._proc is not None:
                if self._proc.poll() is None:
                    self._proc.terminate()
                    try:
                        self._proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()
                        self._proc.wait(5)
            else:
                _kill_pid(self.pid, "libvirtd", timeout)
            if self._sockdir_tmp is not None:
                shutil.rmtree(self._sockdir_tmp, ignore_errors=True)
            with _lock:
                if self in _isolated:
                    _isolated.remove(self)


def _set_conf(path: Path, settings: dict[str, str]) -> None:
    """Replace (or append) ``key = value`` lines in a libvirt config file."""
    text = path.read_text() if path.exists() else ""
    for key in settings:
        text = re.sub(rf"(?m)^\s*{re.escape(key)}\s*=.*(\n[ \t]+.*)*$", "", text)
    text = text.rstrip("\n") + "\n\n# virt-reconcile isolated test host\n"
    text += "".join(f"{k} = {v}\n" for k, v in settings.items())
    path.write_text(text)


def _prepare_workdir(name: str, workdir: Path) -> tuple[Path, Path | None]:
    """Create the private trees; return (socket dir, temp socket dir to remove or None)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in PRIVATE_DIRS:
        if sub == "etc":
            continue
        d = workdir / sub
        d.mkdir(exist_ok=True)
        d.chmod(0o755)  # mount roots: qemu (libvirt-qemu) must traverse them
    etc = workdir / "etc"
    if not etc.exists():
        shutil.copytree(
            "/etc/libvirt",
            etc,
            symlinks=True,
            ignore=lambda d, names: [
                n for n in names if Path(d) == Path("/etc/libvirt") and n in _ETC_STATE
            ],
        )
    # Seed the qemu capabilities cache: saves a qemu probe per daemon (validated by libvirt).
    caps = Path("/var/cache/libvirt/qemu/capabilities")
    if caps.is_dir() and not (workdir / "cache" / "qemu").exists():
        shutil.copytree(caps, workdir / "cache" / "qemu" / "capabilities")

    sockdir = workdir / "sock"
    tmp: Path | None = None
    if len(str(sockdir / "libvirt-admin-sock")) > _UNIX_PATH_MAX:
        tmp = Path(tempfile.mkdtemp(prefix=f"vr-{name[:16]}-", dir="/tmp"))
        sockdir = tmp
    sockdir.mkdir(exist_ok=True)
    sockdir.chmod(0o755)

    _set_conf(
        etc / "libvirtd.conf",
        {
            "unix_sock_dir": f'"{sockdir}"',
            "unix_sock_rw_perms": '"0700"',
            "auth_unix_rw": '"none"',
            "auth_unix_ro": '"none"',
            "log_outputs": '"3:file:/var/log/libvirt/libvirtd.log"',
            "log_filters": '""',
        },
    )
    _set_conf(
        etc / "qemu.conf",
        {
            "stdio_handler": '"file"',  # no virtlogd: the main one belongs to the real host
            "cgroup_controllers": "[ ]",  # cgroup names would clash between daemons
            "lock_manager": '"nop"',  # no virtlockd
        },
    )
    return sockdir, tmp


def _launch_isolated_host(name: str, workdir: Path, hide: Sequence[str] = ()) -> IsolatedHost:
    """Start the daemon; each path in ``hide`` shows as an empty directory to it only."""
    _require("libvirtd", "virsh", "unshare", "setpriv")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"isolated host name must be [A-Za-z0-9_.-]+, got {name!r}")
    workdir = Path(workdir).resolve()
    sockdir, tmp = _prepare_workdir(name, workdir)
    socket_path = sockdir / "libvirt-sock"
    log_path = workdir / "log" / "libvirtd.log"
    mounts = []
    for sub, target in PRIVATE_DIRS.items():
        mounts.append(f'mkdir -p {target} && mount --bind "$W/{sub}" {target}')
    for i, path in enumerate(hide):
        # In the daemon's own mount namespace: e.g. no firmware descriptors for it.
        mounts.append(
            f'mkdir -p "$W/hidden/{i}" && mount --bind "$W/hidden/{i}" {shlex.quote(path)}'
        )
    script = (
        "set -e\n"
        + "\n".join(mounts)
        + '\nexec libvirtd --pid-file "$W/libvirtd.pid" --config /etc/libvirt/libvirtd.conf\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBVIRT_", "VIR"))}
    env["W"] = str(workdir)
    with open(workdir / "libvirtd.stderr", "ab") as err:
        proc = subprocess.Popen(
            # unshare(1) and setpriv(1) exec, sh execs: proc.pid is libvirtd's pid.
            # --pdeathsig: the daemon dies with the test process even if it is SIGKILLed.
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "setpriv",
                "--pdeathsig",
                "TERM",
                "--",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=env,
            cwd="/",
        )
    host = IsolatedHost(
        name=name,
        uri=f"qemu+unix:///system?socket={socket_path}",
        pid=proc.pid,
        workdir=workdir,
        socket_path=socket_path,
        log_path=log_path,
        _proc=proc,
        _sockdir_tmp=tmp,
    )
    with _lock:
        _isolated.append(host)
    return host


def start_isolated_host(name: str, workdir: Path, timeout: float = 60.0) -> IsolatedHost:
    """Start a private libvirtd and wait until its socket answers."""
    host = _launch_isolated_host(name, workdir)
    host.wait_ready(timeout)
    return host


def start_isolated_hosts(
    specs: Iterable[tuple[str, Path]],
    timeout: float = 60.0,
    hide: Mapping[str, Sequence[str]] | None = None,
) -> list[IsolatedHost]:
    """Start several isolated hosts in parallel (``(name, workdir)`` pairs).

    ``hide``: by host name, host paths that daemon sees as empty directories.
    """
    hosts: list[IsolatedHost] = []
    try:
        for name, workdir in specs:
            hosts.append(_launch_isolated_host(name, workdir, (hide or {}).get(name, ())))
        for h in hosts:
            h.wait_ready(timeout)
    except BaseException:
        for h in hosts:
            h.stop()
        raise
    return hosts


def isolated_hosts() -> list[IsolatedHost]:
    with _lock:
        return list(_isolated)


# --------------------------------------------------------------------------- events


_event_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Register libvirt's default event loop (once) and run it in a daemon thread.

    Must run BEFORE opening the connections whose events you want (DEVICE_REMOVED,
    lifecycle, ...): connections opened earlier never deliver events.
    """
    global _event_thread
    import libvirt

    with _lock:
        if _event_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _event_thread = threading.Thread(target=run, name="libvirt-event-loop", daemon=True)
        _event_thread.start()


# --------------------------------------------------------------------------- cleanup

TEST_PREFIX = "vrt-"


def cleanup_prefixed(uri: str, prefix: str = TEST_PREFIX) -> list[str]:
    """Remove domains, networks, storage pools and volumes whose name starts with
    ``prefix`` (and nothing else).  Returns what it removed, e.g. ``["domain:vrt-a"]``.

    Pools are stopped and undefined but their directories are not deleted; volumes
    named ``prefix*`` are deleted from every active pool.
    """
    import libvirt

    if not prefix:
        raise ValueError("refusing to clean up with an empty prefix")
    removed: list[str] = []
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(0):
            name = dom.name()
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isPersistent():
                    flags = (
                        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                    )
                    try:
                        dom.undefineFlags(flags)
                    except libvirt.libvirtError:
                        dom.undefine()
            removed.append(f"domain:{name}")
        for net in conn.listAllNetworks(0):
            name = net.name()
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                if net.isPersistent():
                    net.undefine()
            removed.append(f"network:{name}")
        for pool in conn.listAllStoragePools(0):
            name = pool.name()
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    pool.refresh(0)
                    for vol in pool.listAllVolumes(0):
                        if vol.name().startswith(prefix):
                            vol.delete(0)
                            removed.append(f"volume:{name}/{vol.name()}")
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isPersistent():
                    pool.undefine()
            removed.append(f"pool:{name}")
    finally:
        conn.close()
    return removed


# --------------------------------------------------------------------------- teardown


def _system_daemon_busy() -> str | None:
    """Why the system libvirtd should stay up (other clients, running guests), or None."""
    try:
        r = subprocess.run(
            ["virt-admin", "-c", "libvirtd:///system", "srv-clients-list", "libvirtd"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        clients = [ln for ln in r.stdout.splitlines()[2:] if ln.strip()]
        if r.returncode == 0 and clients:
            return f"{len(clients)} client(s) connected"
        r = subprocess.run(
            ["virsh", "-q", "-c", SYSTEM_URI, "list", "--name"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        running = [ln for ln in r.stdout.splitlines() if ln.strip()]
        if running:
            return f"guests still running: {', '.join(running[:5])}"
    except (OSError, subprocess.TimeoutExpired):
        return None
    return None


def stop_all() -> None:
    """Stop every isolated host, then the system daemons this process started (by pid).

    A system libvirtd that was already running is left alone, and so is one we started
    that is still in use (other clients connected, e.g. a parallel test session, or guests
    running): libvirtd does not kill guests on exit, so clean up test guests first.
    """
    for host in isolated_hosts():
        host.stop()
    with _lock:
        started = list(reversed(_started_pids))
        _started_pids.clear()
    if not started:
        return
    busy = _system_daemon_busy()  # also guards virtlogd: running guests log through it
    if busy:
        print(f"testbed: leaving the system libvirtd/virtlogd running ({busy})", file=sys.stderr)
        return
    for comm, pid in started:
        _kill_pid(pid, comm)


atexit.register(stop_all)
