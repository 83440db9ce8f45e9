"""Stage 1b of the pipeline: a Domain's ``cloudInit`` becomes a seed Volume and a cdrom (pure).

``manifests.load`` calls ``expand`` on every valid Domain that has
``spec.cloudInit``: the NoCloud seed (an ISO 9660 image, volume label
``cidata``, files ``user-data``, ``meta-data`` and ``network-config``) is built
here, in memory, and becomes

- a derived Volume manifest ``<domain>-cidata-<hash8>.iso`` (in
  ``cloudInit.pool``; no format: libvirt probes it as ``iso``) whose
  ``content`` is the image, uploaded like a ``source: {file}`` volume, and
  whose ownership record names the domain (``owner``), so the old seed goes
  once the domain no longer uses it;
- a read-only cdrom disk in the domain's spec that points at that volume.

So render, the planners and the executor see an ordinary volume and disk.

The image is built with ``pycdlib`` (pure Python: no ``genisoimage`` or
``xorriso`` process, and it runs where virt-reconcile runs, which is what a
remote host needs: the bytes are uploaded through libvirt). Its dates are
fixed, so the same content always makes the same bytes; the name's hash is
the hash of the content (file names and bytes), not of the image, so another
pycdlib version does not make a new seed.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_SEED_BYTES = 10 << 20
VOLUME_LABEL = "cidata"
DEFAULT_BUS = "sata"
# The UUID namespace of instance ids derived from a domain's name (uuid5).
INSTANCE_NAMESPACE = uuid.UUID("9b6bd1a4-5c8e-4f4e-9a52-7a1c0e3b6d21")
# 2000-01-01T00:00:00Z: every date in the image (pycdlib would use the clock).
_EPOCH = 946684800.0
_CLOCK_LOCK = threading.Lock()
_StructTime = time.struct_time


class SeedError(ValueError):
    """A seed that cannot be made: ``field`` is the dotted manifest path."""

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.line = line  # a line inside the user data (1-based), if known


def instance_id(domain: str) -> str:
    """The default ``instance-id``: a UUID derived from the domain's name.

    libvirt picks a domain's UUID at define time, after the seed must exist,
    and picks another one if the domain is ever recreated; cloud-init runs its
    first-boot modules again whenever the instance id changes. A UUID derived
    from the name is known before the domain exists and stays the same across
    redefinitions, recreation and hosts.
    """
    return str(uuid.uuid5(INSTANCE_NAMESPACE, domain))


def _dump(data: Mapping[str, Any]) -> bytes:
    import yaml  # here: a plan whose seeds are cached loads no YAML library

    return yaml.safe_dump(dict(data), sort_keys=True, default_flow_style=False).encode()


def check_user_data(text: bytes) -> None:
    """Raise SeedError (with the line inside the text) when ``#cloud-config``
    user data is not valid YAML; other user data (a script, a MIME archive,
    ``#include``) is passed on as it is."""
    if not text.startswith(b"#cloud-config"):
        return
    import yaml

    try:
        yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = f" (line {line} of the user data)" if line is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SeedError(
            "spec.cloudInit.userData", f"not valid YAML{where}: {problem}", line
        ) from None


def seed_files(domain: str, spec: Mapping[str, Any], user_data: bytes) -> dict[str, bytes]:
    """The files of the seed: ``user-data``, ``meta-data`` and (if given) ``network-config``."""
    meta = {"instance-id": instance_id(domain), **dict(spec.get("metaData") or {})}
    files = {"user-data": user_data, "meta-data": _dump(meta)}
    if spec.get("networkConfig") is not None:
        files["network-config"] = _dump(spec["networkConfig"])
    return files


def content_hash(files: Mapping[str, bytes]) -> str:
    """The hex SHA-256 of the seed's file names and bytes."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode() + files[name])
    return digest.hexdigest()


def volume_name(domain: str, files: Mapping[str, bytes]) -> str:
    return f"{domain}-cidata-{content_hash(files)[:8]}.iso"


class _FixedClock:
    """What pycdlib sees as the ``time`` module while it builds: a clock stopped
    at ``_EPOCH`` and UTC as the local zone (its dates store a zone offset)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def time(self) -> float:
        return _EPOCH

    def localtime(self, secs: float | None = None) -> _StructTime:
        return time.gmtime(_EPOCH if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def build_iso(files: Mapping[str, bytes]) -> bytes:
    """The ISO 9660 image (label ``cidata``, Joliet and Rock Ridge names) with ``files``."""
    # pycdlib loads here, on first use: most runs build no seed.
    import pycdlib
    import pycdlib.dates
    import pycdlib.headervd
    import pycdlib.pycdlib

    clocked = (pycdlib.dates, pycdlib.headervd, pycdlib.pycdlib)
    iso = pycdlib.PyCdlib()
    with _CLOCK_LOCK:
        saved = [m.time for m in clocked]
        for m in clocked:
            m.time = _FixedClock(time)  # type: ignore[attr-defined]
        try:
            iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
            for index, (name, data) in enumerate(sorted(files.items())):
                # ISO 9660 names are 8.3 upper case; cloud-init reads the
                # Joliet or Rock Ridge name, which is the real one.
                short = f"/F{index}.;1"
                iso.add_fp(
                    io.BytesIO(data),
                    len(data),
                    iso_path=short,
                    rr_name=name,
                    joliet_path=f"/{name}",
                    file_mode=0o100444,
                )
            out = io.BytesIO()
            iso.write_fp(out)
        finally:
            for m, clock in zip(clocked, saved, strict=True):
                m.time = clock  # type: ignore[attr-defined]
            iso.close()
    return out.getvalue()


@dataclass(frozen=True, kw_only=True)
class Seed:
    """What one Domain's ``cloudInit`` expands to."""

    volume: str  # the seed volume's name
    pool: str
    image: bytes = field(repr=False)
    disk: dict[str, Any]  # the cdrom entry for the domain's spec.disks


def _pool(spec: Mapping[str, Any]) -> str:
    given = spec["cloudInit"].get("pool")
    if given is not None:
        return str(given)
    for disk in spec.get("disks", ()):
        volume = (disk.get("source") or {}).get("volume")
        if volume is not None:
            return str(volume["pool"])
    raise SeedError(
        "spec.cloudInit.pool",
        "required: no disk of this domain is on a volume, whose pool the seed would share",
    )


_LAST_ON_FIRST_CONTROLLER = {"sata": "sdf", "scsi": "sdg", "ide": "hdd"}


def _target(spec: Mapping[str, Any], bus: str) -> str:
    config = spec["cloudInit"]
    used = {str(d["target"]) for d in spec.get("disks", ())}
    if "target" in config:
        if config["target"] in used:
            raise SeedError(
                "spec.cloudInit.target", f"target {config['target']!r} is used by a disk"
            )
        return str(config["target"])
    # libvirt puts a disk on a controller by its target's letter (6 SATA ports,
    # 7 SCSI units, 4 IDE drives each): the last one of the first controller
    # needs no extra controller.
    last = _LAST_ON_FIRST_CONTROLLER[bus]
    for letter in range(ord(last[-1]), ord("a") - 1, -1):
        if last[:-1] + chr(letter) not in used:
            return last[:-1] + chr(letter)
    raise SeedError("spec.cloudInit.target", f"no free target up to {last}: give one")


def user_data(spec: Mapping[str, Any], base_dir: str) -> bytes:
    """The user data's bytes: the text, or the file (relative to ``base_dir``)."""
    given = spec["cloudInit"].get("userData", "")
    if isinstance(given, str):
        return given.encode()
    path = os.path.normpath(os.path.join(base_dir, str(given["file"])))
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SEED_BYTES + 1)
    except OSError as e:
        raise SeedError("spec.cloudInit.userData.file", f"cannot read {path}: {e.strerror}") from e
    if len(data) > MAX_SEED_BYTES:
        raise SeedError(
            "spec.cloudInit.userData.file", f"{path} is more than {MAX_SEED_BYTES >> 20} MiB"
        )
    return data


def expand(domain: str, spec: Mapping[str, Any], base_dir: str) -> Seed:
    """The seed of a Domain with ``spec.cloudInit`` (``base_dir``: the manifest's folder).

    Raises SeedError naming the field: unreadable or invalid user data, a seed
    over 10 MiB, no pool to put it in, no free target.
    """
    config = spec["cloudInit"]
    data = user_data(spec, base_dir)
    check_user_data(data)
    files = seed_files(domain, config, data)
    image = build_iso(files)
    if len(image) > MAX_SEED_BYTES:
        raise SeedError(
            "spec.cloudInit",
            f"the seed is {len(image)} bytes, more than {MAX_SEED_BYTES >> 20} MiB",
        )
    pool = _pool(spec)
    bus = str(config.get("bus", DEFAULT_BUS))
    name = volume_name(domain, files)
    disk = {
        "target": _target(spec, bus),
        "bus": bus,
        "device": "cdrom",
        "readonly": True,
        "format": "raw",
        "source": {"volume": {"pool": pool, "name": name}},
    }
    return Seed(volume=name, pool=pool, image=image, disk=disk)


def seed_target(domain: str, spec: Mapping[str, Any]) -> str | None:
    """The target of the cdrom ``expand`` added to an expanded domain spec."""
    if "cloudInit" not in spec:
        return None
    for disk in spec.get("disks", ()):
        volume = (disk.get("source") or {}).get("volume") or {}
        if disk.get("device") == "cdrom" and str(volume.get("name", "")).startswith(
            f"{domain}-cidata-"
        ):
            return str(disk["target"])
    return None
