"""An object another client removes between the listing and the read of its XML is
left out of the observation: the host is read, not reported unreachable."""

from __future__ import annotations

import shutil
from pathlib import Path

import libvirt
import pytest

from reconciler.hosts import observe
from tests.integration.conftest import EMPTY_HOST

pytestmark = pytest.mark.integration


def _domain(name: str) -> str:
    return (
        f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type>hvm</type></os></domain>"
    )


def test_a_domain_undefined_after_the_listing_is_left_out(tmp_path: Path) -> None:
    host = tmp_path / "host.xml"
    shutil.copy(EMPTY_HOST, host)
    conn = libvirt.open(f"test://{host}")
    try:
        for name in ("vr-stays", "vr-goes"):
            conn.defineXML(_domain(name))
        listed = conn.listAllDomains(0)
        assert sorted(d.name() for d in listed) == ["vr-goes", "vr-stays"]
        conn.lookupByName("vr-goes").undefine()  # another client, after our listing
        for parallel in (False, True):
            read = observe.read_domains(listed, parallel=parallel)
            assert [o.name for o in read] == ["vr-stays"]
            assert "<name>vr-stays</name>" in read[0].xml
    finally:
        conn.close()


def test_a_network_or_pool_removed_after_the_listing_is_left_out(tmp_path: Path) -> None:
    host = tmp_path / "host.xml"
    shutil.copy(EMPTY_HOST, host)
    conn = libvirt.open(f"test://{host}")
    conn.networkDefineXML("<network><name>vr-net-goes</name></network>")
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    conn.storagePoolDefineXML(
        f"<pool type='dir'><name>vr-pool-goes</name><target><path>{pool_dir}</path></target></pool>"
    )
    nets = [n for n in conn.listAllNetworks(0) if n.name() == "vr-net-goes"]
    pools = [p for p in conn.listAllStoragePools(0) if p.name() == "vr-pool-goes"]
    nets[0].undefine()
    pools[0].undefine()
    assert observe.unless_gone(lambda: observe.observe_network(nets[0], "vr-net-goes")) is None
    registry = observe.ownership.Registry()
    assert observe.unless_gone(lambda: observe.observe_pool(pools[0], registry)) is None
    # Any other error still raises: a host that fails is reported, not skipped.
    with pytest.raises(libvirt.libvirtError):
        observe.unless_gone(lambda: conn.defineXML("<domain type='test'/>"))
    conn.close()


def test_persistence_and_autostart_come_from_the_host_wide_listings(tmp_path: Path) -> None:
    # One listing of the transient domains (few) stands for every domain's
    # persistence; autostart and state come from their own listings too.
    host = tmp_path / "host.xml"
    shutil.copy(EMPTY_HOST, host)
    conn = libvirt.open(f"test://{host}")
    try:
        conn.defineXML(_domain("vr-defined")).setAutostart(1)
        conn.defineXML(_domain("vr-started")).create()
        conn.createXML(_domain("vr-transient"), 0)
        flags = observe._Flags.read(conn)
        assert flags is not None and len(flags.transient) == 1
        observed = observe._observe_domains(conn)
        seen = {o.name: (o.persistent, o.autostart, o.state) for o in observed}
    finally:
        conn.close()
    assert seen == {
        "vr-defined": (True, True, "shutoff"),
        "vr-started": (True, False, "running"),
        "vr-transient": (False, False, "running"),
    }
