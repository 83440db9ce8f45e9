"""libvirt's own parser as the normaliser of desired XML.

A document libvirt did not write (virt-install's, another tool's, a person's)
says many things in another form than libvirt will store them: hex numbers,
upper-case UUIDs, ``port='-1'``, a ``<source mode='bind'/>`` without a path,
controllers without an index. Rather than one hand-written rule per form, the
planner compares what libvirt's parser makes of the document: it is defined on
a private in-memory test-driver host (no daemon, a few milliseconds) and read
back (``canonical.flatten_desired`` keeps only what the document itself says).
The private host is a file-backed ``test:///`` URI of its own, never
``test:///default``, which the process may be reconciling.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from typing import assert_never

import libvirt

from reconciler.cache import cache_dir
from reconciler.model import Kind

_log = logging.getLogger(__name__)
_NORMALISE_POOL = "virt-reconcile-normalise"
_NORMALISE_HOST = f"""<node>
  <pool type='dir'>
    <name>{_NORMALISE_POOL}</name>
    <target><path>/{_NORMALISE_POOL}</path></target>
  </pool>
</node>
"""
_normaliser: libvirt.virConnect | None = None
_normaliser_lock = threading.Lock()
_normalised: dict[tuple[Kind, str], str | None] = {}
_NORMALISED_CACHE = 20000


def normalise(kind: Kind, xml: str) -> str | None:
    """``xml`` as libvirt's parser stores it (inactive, secure), or None when the
    test driver refuses it (then the planner compares the document as written).

    Cached in the process and on disk (``cache_dir()``, keyed by libvirt's
    version, the kind and the document), so a no-op plan of an unchanged folder
    does not pay for the parser again.
    """
    key = (kind, xml)
    with _normaliser_lock:
        if key in _normalised:
            return _normalised[key]
        path = _cache_file(kind, xml)
        result = _read_cached(path)
        if result is _MISSING:
            try:
                result = _round_trip(_normaliser_conn(), kind, xml)
            except libvirt.libvirtError as e:
                _log.debug("libvirt's parser refused the desired %s: %s", kind.value, e)
                result = None
            _write_cached(path, result)
        if len(_normalised) >= _NORMALISED_CACHE:
            _normalised.clear()
        _normalised[key] = result
        return result


# --- the on-disk cache ----------------------------------------------------------------

_MISSING = "\0missing"
_REFUSED = "\0refused"


def _cache_file(kind: Kind, xml: str) -> str:
    digest = hashlib.sha256(f"{libvirt.getVersion()}\0{kind.value}\0{xml}".encode()).hexdigest()
    return os.path.join(cache_dir(), "normalised", digest[:2], digest[2:])


def _read_cached(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return _MISSING
    return None if text == _REFUSED else text


def _write_cached(path: str, result: str | None) -> None:
    """Best effort and atomic: a cache that cannot be written is only slower."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_REFUSED if result is None else result)
        os.replace(tmp, path)
    except OSError as e:
        _log.debug("normaliser cache not written (%s): %s", path, e)


def _normaliser_conn() -> libvirt.virConnect:
    global _normaliser
    if _normaliser is None:
        with tempfile.TemporaryDirectory(prefix="virt-reconcile-") as folder:
            path = os.path.join(folder, "normalise.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(_NORMALISE_HOST)
            # The test driver reads the file once, at connect.
            _normaliser = libvirt.open(f"test://{path}")
    return _normaliser


def _round_trip(conn: libvirt.virConnect, kind: Kind, xml: str) -> str | None:
    match kind:
        case Kind.DOMAIN:
            dom = conn.defineXMLFlags(xml, 0)
            try:
                flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
                return str(dom.XMLDesc(flags))
            finally:
                dom.undefine()
        case Kind.NETWORK:
            net = conn.networkDefineXML(xml)
            try:
                return str(net.XMLDesc(0))
            finally:
                net.undefine()
        case Kind.STORAGE_POOL:
            pool = conn.storagePoolDefineXML(xml, 0)
            try:
                return str(pool.XMLDesc(0))
            finally:
                pool.undefine()
        case Kind.VOLUME:
            vol = conn.storagePoolLookupByName(_NORMALISE_POOL).createXML(xml, 0)
            try:
                return str(vol.XMLDesc(0))
            finally:
                vol.delete(0)
        case Kind.HOST | Kind.SECRET:
            return None  # no XML to read back (the test driver has no secrets)
        case _:
            assert_never(kind)
