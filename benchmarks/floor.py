"""The floor: what any tool must do to know (or write) a host, in a fresh process.

    python -m benchmarks.floor read URI           connect, listAll* per kind, one XML read
                                                  per object (volumes of active pools)
    python -m benchmarks.floor define URI FILE    connect, listAll*, then one define per
                                                  object of FILE (JSON: {"networks": [xml],
                                                  "pools": [xml], "volumes": [[pool, xml]],
                                                  "domains": [xml]}); networks and pools
                                                  are also started (as apply does)

Prints one JSON line: {"objects": N, "seconds": S} where S is the time from
connect to the last call (without the interpreter's start-up; the caller times
the whole process too).
"""

from __future__ import annotations

import json
import sys
import time

import libvirt


def _quiet(_ctx: object, _err: object) -> None:
    pass


def read(conn: libvirt.virConnect) -> int:
    n = 0
    for dom in conn.listAllDomains(0):
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        n += 1
    for net in conn.listAllNetworks(0):
        net.XMLDesc(0)
        n += 1
    for pool in conn.listAllStoragePools(0):
        pool.XMLDesc(0)
        n += 1
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                vol.XMLDesc(0)
                n += 1
    return n


def define(conn: libvirt.virConnect, objects: dict[str, list]) -> int:  # type: ignore[type-arg]
    conn.listAllDomains(0)
    conn.listAllNetworks(0)
    conn.listAllStoragePools(0)
    n = 0
    for xml in objects.get("networks", []):
        net = conn.networkDefineXML(xml)
        net.create()
        n += 1
    pools = {}
    for xml in objects.get("pools", []):
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
        pool.create(0)
        pools[pool.name()] = pool
        n += 1
    for pool_name, xml in objects.get("volumes", []):
        pools[pool_name].createXML(xml, 0)
        n += 1
    for xml in objects.get("domains", []):
        conn.defineXML(xml)
        n += 1
    return n


def main(argv: list[str]) -> int:
    libvirt.registerErrorHandler(_quiet, None)
    what, uri = argv[0], argv[1]
    t0 = time.perf_counter()
    conn = libvirt.open(uri)
    if what == "read":
        n = read(conn)
    elif what == "define":
        with open(argv[2]) as fh:
            n = define(conn, json.load(fh))
    else:
        raise SystemExit(f"unknown floor {what!r}")
    seconds = time.perf_counter() - t0
    conn.close()
    print(json.dumps({"objects": n, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
