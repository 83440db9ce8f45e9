"""Disk images a Volume is made from (``spec.source``): header, checksum, download cache.

Read by ``manifests`` (the format and virtual size of a local image, checked
against the manifest with FILE:LINE) and by ``hosts`` (the checksum right
before an upload, the download of a URL into the cache). No libvirt here.

Only qcow2 and raw images are uploaded: a qcow2 file starts with ``QFI\\xfb``
and states its virtual size in its header; anything else is raw, unless it
carries the magic of another image format, which is refused (a VMDK uploaded
as raw would boot nothing).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_QCOW2 = b"QFI\xfb"
# Other image formats by their magic (offset, bytes): refused, never uploaded as raw.
_OTHERS = (
    (0, b"KDMV", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),
    (64, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"QFI\xbf", "qed"),
)
CHUNK = 1 << 20
# Bytes done, bytes in all: the progress of a transfer.
Progress = Callable[[int, int], None]


class ImageError(ValueError):
    """An image that cannot be used: unreadable, of another format, a wrong checksum."""


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    format: str  # "qcow2" or "raw"
    virtual_size: int  # bytes the guest sees
    file_size: int  # bytes to upload


def inspect(path: str) -> ImageInfo:
    """The format and sizes of a local image file."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror}") from e
    if head.startswith(_QCOW2):
        if len(head) < 32:
            raise ImageError(f"{path}: truncated qcow2 header")
        (virtual,) = struct.unpack(">Q", head[24:32])
        return ImageInfo(format="qcow2", virtual_size=virtual, file_size=size)
    for offset, magic, name in _OTHERS:
        if head[offset : offset + len(magic)] == magic:
            raise ImageError(
                f"{path} is a {name} image; only qcow2 and raw images are uploaded "
                f"(convert it: qemu-img convert -O qcow2 ...)"
            )
    return ImageInfo(format="raw", virtual_size=size, file_size=size)


def sha256_of(path: str, progress: Progress | None = None) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def verify(path: str, sha256: str | None) -> None:
    """Raise ImageError unless ``path`` has the checksum (None: nothing to check)."""
    if sha256 is None:
        return
    found = sha256_of(path)
    if found != sha256.lower():
        raise ImageError(f"{path}: sha256 is {found}, the manifest says {sha256.lower()}")


def local_path(url: str) -> str | None:
    """The file a ``file://`` URL names (None for any other URL)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "file":
        return None
    return urllib.parse.unquote(parsed.path)


def cache_dir() -> Path:
    """Where downloaded images are kept: ``$VIRT_RECONCILE_CACHE`` or the XDG cache."""
    given = os.environ.get("VIRT_RECONCILE_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "virt-reconcile" / "images"


def cached(sha256: str) -> Path:
    """The cache file of the image with this checksum (it may not exist yet)."""
    return cache_dir() / f"sha256-{sha256.lower()}"


def fetch(url: str, sha256: str | None, progress: Progress | None = None) -> str:
    """A local, verified copy of the image at ``url``: its path.

    A ``file://`` URL is read where it is. Any other URL is downloaded once into
    the cache (by its checksum), verified, and reused by every later host and
    run; a download that fails or does not match leaves nothing in the cache.
    """
    path = local_path(url)
    if path is not None:
        verify(path, sha256)
        return path
    if sha256 is None:
        raise ImageError(f"{url}: a sha256 is required to download an image")
    target = cached(sha256)
    if target.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".download-")
    digest = hashlib.sha256()
    try:
        import urllib.request  # on first use: most runs download nothing

        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if digest.hexdigest() != sha256.lower():
            raise ImageError(
                f"{url}: sha256 of the download is {digest.hexdigest()}, "
                f"the manifest says {sha256.lower()}"
            )
        shutil.move(partial, target)
    except OSError as e:
        raise ImageError(f"cannot download {url}: {e}") from e
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return str(target)
