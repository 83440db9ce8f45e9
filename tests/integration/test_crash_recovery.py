"""Crash recovery on test-driver hosts: every interruption point of an apply.

The e2e tier kills a real ``apply`` process (``tests/e2e/test_crash.py``); a
test-driver host forgets everything when its process dies, so here the crash
is an exception raised from the same place the kill hook sits
(``hosts.calls._fault_point``, right after a mutating libvirt call), and the next
apply runs in the same process against the same host.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from reconciler import ownership
from reconciler.hosts import calls
from tests.integration.conftest import EMPTY_HOST, EXAMPLES, Run, host_snapshot
from tests.testbed.cli import vr


class Crash(BaseException):
    """Not an Exception: nothing in virt-reconcile may catch it, like SIGKILL."""


def crash_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    count = itertools.count(1)

    def fault() -> None:
        if next(count) >= n:
            raise Crash(n)

    monkeypatch.setattr(calls, "_fault_point", fault)


def fresh_host(tmp_path: Path, n: int) -> str:
    path = tmp_path / f"host-{n}.xml"
    path.write_text(EMPTY_HOST.read_text())
    return f"test://{path}"


def total_calls(doc: dict[str, Any]) -> int:
    return sum(n for h in doc["hosts"] for a in h["actions"] for n in a.get("calls", {}).values())


def managed_everywhere(conn: libvirt.virConnect) -> None:
    """Every example object exists once and carries its ownership record."""
    for dom in conn.listAllDomains():
        assert ownership.NAMESPACE in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.name()
    nets = {n.name(): n for n in conn.listAllNetworks()}
    assert set(nets) == {"vr-lab-net", ownership.REGISTRY_NETWORK}
    assert ownership.NAMESPACE in nets["vr-lab-net"].XMLDesc(0)
    registry = ownership.Registry.from_xml(nets[ownership.REGISTRY_NETWORK].XMLDesc(0))
    pools = conn.listAllStoragePools()
    assert [p.name() for p in pools] == ["vr-lab"]
    assert set(registry.pools) == {"vr-lab"}
    vols = {f"vr-lab/{v.name()}" for v in pools[0].listAllVolumes()}
    assert set(registry.volumes) == vols
    assert all(r.managed for r in [*registry.pools.values(), *registry.volumes.values()])


def update_examples(folder: Path) -> None:
    """Changes of several kinds: a restart (vr-web-1), a network update, a new
    volume, a new disk on a stopped domain and an autostart change."""
    web = folder / "web.yaml"
    text = web.read_text()
    text = text.replace("memory: 256MiB", "memory: 320MiB", 1)  # vr-web-1: restart-required
    text = text.replace(
        "restart: never, shutdownTimeout: 30s", "restart: ifNeeded, shutdownTimeout: 5s"
    )
    text = text.replace("currentMemory: 192MiB", "currentMemory: 224MiB")
    web.write_text(text.replace("autostart: false", "autostart: true"))
    net = folder / "network.yaml"
    net.write_text(
        net.read_text().replace(
            '        - {mac: "52:54:00:77:00:12", name: web-2, ip: 10.77.0.12}\n',
            '        - {mac: "52:54:00:77:00:12", name: web-2, ip: 10.77.0.12}\n'
            '        - {mac: "52:54:00:77:00:13", name: web-3, ip: 10.77.0.13}\n',
        )
    )
    storage = folder / "storage.yaml"
    storage.write_text(
        storage.read_text()
        + "---\napiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {name: db-1-logs.raw}\n"
        "spec: {pool: vr-lab, capacity: 16MiB, format: raw}\n"
    )
    db = folder / "db.yaml"
    db.write_text(
        db.read_text().replace(
            "      readonly: true\n",
            "      readonly: true\n    - target: vdb\n      bus: virtio\n      format: raw\n"
            "      source: {volume: {pool: vr-lab, name: db-1-logs.raw}}\n",
        )
    )


Prepare = Callable[[str], None]
Check = Callable[[libvirt.virConnect, libvirt.virConnect], None]


def crash_every_call(
    tmp_path: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    prepare: Prepare,
    check: Check,
) -> int:
    """Interrupt ``apply folder`` after each of its K calls in turn; returns K.

    Each time on a fresh host set up by ``prepare(uri)``; after the next apply
    and an empty plan, ``check(host, host_of_the_uninterrupted_apply)``.
    """

    def fresh(n: int) -> str:
        uri = fresh_host(tmp_path, n)
        prepare(uri)
        return uri

    clean_uri = fresh(0)
    code, out, err = run("apply", folder, "-c", clean_uri, "-o", "json")
    assert code == 0, out + err
    k = total_calls(json.loads(out))
    for n in range(1, k + 1):
        uri = fresh(n)
        with monkeypatch.context() as m:
            crash_after(m, n)
            with pytest.raises(Crash):
                run("apply", folder, "-c", uri)
        code, out, err = run("apply", folder, "-c", uri, "-o", "json")
        assert code == 0, (n, out + err)
        # Nothing done twice over: at most the interrupted call is repeated.
        assert total_calls(json.loads(out)) <= k - n + 1, n
        code, out, err = run("plan", folder, "-c", uri, "--detailed-exitcode")
        assert code == 0, (n, out + err)
        check(conn(uri), conn(clean_uri))
    return k


def same_objects_and_power(c: libvirt.virConnect, clean: libvirt.virConnect) -> None:
    assert set(host_snapshot(c)) == set(host_snapshot(clean))
    assert {d.name(): d.isActive() for d in c.listAllDomains()} == {
        d.name(): d.isActive() for d in clean.listAllDomains()
    }


@pytest.mark.parametrize(("update", "at_least"), [(False, 15), (True, 6)], ids=["create", "update"])
def test_apply_interrupted_after_every_call_converges_on_the_next_apply(
    tmp_path: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    monkeypatch: pytest.MonkeyPatch,
    update: bool,
    at_least: int,
) -> None:
    folder = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, folder)

    def prepare(uri: str) -> None:
        if update:
            code, out, err = run("apply", EXAMPLES, "-c", uri)
            assert code == 0, out + err

    def check(c: libvirt.virConnect, clean: libvirt.virConnect) -> None:
        managed_everywhere(c)
        same_objects_and_power(c, clean)

    if update:
        update_examples(folder)
    k = crash_every_call(tmp_path, run, conn, monkeypatch, folder, prepare, check)
    assert k >= at_least


def test_restart_interrupted_between_shutdown_and_start_is_finished(
    tmp_path: Path,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The manifest leaves the power state alone, so only the "restarting"
    # record tells the next run that the domain was running.
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = folder / "d.yaml"
    doc = (
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {{name: vr-d}}\n"
        "spec: {{type: test, memory: {memory}, updateStrategy: {{restart: ifNeeded}}}}\n"
    )

    def prepare(uri: str) -> None:
        manifest.write_text(doc.format(memory="128MiB"))
        code, out, err = run("apply", folder, "-c", uri)
        assert code == 0, out + err
        conn(uri).lookupByName("vr-d").create()
        manifest.write_text(doc.format(memory="160MiB"))

    def check(c: libvirt.virConnect, clean: libvirt.virConnect) -> None:
        dom = c.lookupByName("vr-d")
        assert dom.isActive()
        assert dom.info()[1] == 160 * 1024  # running the new definition
        record = ownership.read_record(
            etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        )
        assert record is not None and record.managed and not record.restarting
        same_objects_and_power(c, clean)

    k = crash_every_call(tmp_path, run, conn, monkeypatch, folder, prepare, check)
    assert k == 4  # define (restarting), shutdown, start, record (restarted)


def test_pool_and_volume_outside_the_registry_are_adopted_not_duplicated(
    host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect], tmp_path: Path
) -> None:
    # What a crash between creating a pool and recording it would leave (and
    # what a person creating it by hand leaves): the object, no record.
    c = conn(host_uri)
    pool = c.storagePoolDefineXML(
        "<pool type='dir'><name>vr-lab</name>"
        "<target><path>/var/lib/libvirt/images/vr-lab</path></target></pool>"
    )
    pool.create(0)
    pool.setAutostart(1)
    vol = pool.createXML(
        "<volume><name>web-1.qcow2</name><capacity unit='MiB'>64</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    key = vol.key()
    code, out, err = run("apply", EXAMPLES, "-c", host_uri, "-o", "json")
    assert code == 0, out + err
    actions = {
        (a["kind"], a.get("pool", ""), a["name"]): a["action"]
        for h in json.loads(out)["hosts"]
        for a in h["actions"]
    }
    assert actions[("StoragePool", "", "vr-lab")] == "adopt"
    assert actions[("Volume", "vr-lab", "web-1.qcow2")] == "adopt"
    assert [p.name() for p in c.listAllStoragePools()] == ["vr-lab"]
    assert pool.storageVolLookupByName("web-1.qcow2").key() == key
    managed_everywhere(c)
    assert run("plan", EXAMPLES, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_record_of_a_missing_pool_is_harmless(
    host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    # What a crash between recording a pool and defining it leaves.
    record = ownership.Record(managed=True, applied=frozenset({"@type"}), host="default")
    registry = ownership.Registry().with_pool("vr-lab", record)
    registry = registry.with_volume("vr-lab/web-1.qcow2", record)
    c = conn(host_uri)
    c.networkDefineXML(registry.to_xml())
    code, out, err = run("apply", EXAMPLES, "-c", host_uri)
    assert code == 0, out + err
    managed_everywhere(c)
    assert run("plan", EXAMPLES, "-c", host_uri, "--detailed-exitcode")[0] == 0


def test_fault_hook_kills_the_process_after_the_nth_call(tmp_path: Path) -> None:
    uri = fresh_host(tmp_path, 0)
    result = vr("apply", EXAMPLES, "-c", uri, fault_after=1)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    # Killed after the first call: nothing was reported done.
    assert "Converged" not in result.stdout
