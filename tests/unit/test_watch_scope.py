"""watch scoped passes: which objects a trigger names, and when a full pass is needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler import errors, manifests, ownership
from reconciler.model import Host, Kind, ManifestSet
from reconciler.observed import HostState, Observed, object_key
from reconciler.reconcile import Scope
from reconciler.watch import scope
from reconciler.watch.workqueue import Reason, WorkQueue

NETWORK = """\
apiVersion: virt-reconcile/v1
kind: Network
metadata: {name: lan}
spec: {forward: nat, bridge: vrs0, ip: {address: 10.77.0.1, prefix: 24}}
---
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {name: images}
spec: {type: dir, target: /var/lib/vrs-images}
---
apiVersion: virt-reconcile/v1
kind: Volume
metadata: {name: disk.qcow2}
spec: {pool: images, capacity: 1GiB, format: qcow2}
"""


def domain(name: str, memory: str = "64MiB", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: virt-reconcile/v1
        kind: Domain
        metadata: {{name: {name}}}
        spec:
          type: test
          memory: {memory}
          vcpus: 1
          interfaces: [{{network: lan}}]
        """) + textwrap.indent(extra, "  ")


def folder(tmp_path: Path, count: int = 3) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    (d / "infra.yaml").write_text(NETWORK)
    for i in range(count):
        (d / f"web-{i}.yaml").write_text(domain(f"web-{i}"))
    return d


def load(d: Path) -> ManifestSet:
    return manifests.load([str(d)])


DOMAIN_WEB_1 = object_key(Kind.DOMAIN, "web-1")


def test_an_edited_manifest_is_the_only_change(tmp_path: Path) -> None:
    d = folder(tmp_path)
    old = load(d)
    (d / "web-1.yaml").write_text(domain("web-1", memory="96MiB"))
    got = scope.changed(old, load(d))
    assert got.full is None
    assert got.objects == {"default": frozenset({DOMAIN_WEB_1})}


def test_unchanged_manifests_and_moved_lines_change_nothing(tmp_path: Path) -> None:
    d = folder(tmp_path)
    old = load(d)
    (d / "infra.yaml").write_text("# a comment moves every line down\n" + NETWORK)
    assert scope.changed(old, load(d)).objects == {}


def test_a_new_manifest_is_scoped_and_a_removed_one_needs_a_full_pass(tmp_path: Path) -> None:
    d = folder(tmp_path)
    old = load(d)
    (d / "web-9.yaml").write_text(domain("web-9"))
    new = load(d)
    assert scope.changed(old, new).objects == {
        "default": frozenset({object_key(Kind.DOMAIN, "web-9")})
    }
    removed = scope.changed(new, old)
    assert removed.full == "Domain/web-9 is no longer declared (or moved)"


def test_host_documents_and_placement_need_a_full_pass(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    hosts = "---\n".join(
        f"apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {{name: {h}}}\n"
        f"spec: {{uri: 'test:///default'}}\n"
        for h in ("a", "b")
    )
    (d / "hosts.yaml").write_text(hosts)
    placed = domain("web-p").replace("spec:\n", "spec:\n  placement: {hosts: [a, b]}\n")
    (d / "web-p.yaml").write_text(placed.replace("  interfaces: [{network: lan}]\n", ""))
    old = load(d)
    (d / "hosts.yaml").write_text(hosts.replace("test:///default", "test:///other", 1))
    assert scope.changed(old, load(d)).full == "the Host documents changed"
    (d / "hosts.yaml").write_text(hosts)
    (d / "web-p.yaml").write_text((d / "web-p.yaml").read_text().replace("64MiB", "80MiB"))
    assert scope.changed(old, load(d)).full == "Domain/web-p is placed (spec.placement)"


def test_events_name_domains_networks_and_pools_but_not_the_registry() -> None:
    assert scope.event_keys({("Domain", "web-1"), ("Network", "lan")}) == {
        DOMAIN_WEB_1,
        object_key(Kind.NETWORK, "lan"),
    }
    assert scope.event_keys({("Network", ownership.REGISTRY_NETWORK)}) is None
    assert scope.event_keys({("Secret", "s")}) is None


def _state(*objects: Observed) -> HostState:
    return HostState(
        host=Host(name="default", uri="test:///default"), objects={o.key: o for o in objects}
    )


def test_a_scope_plans_the_named_objects_and_reads_their_references_again(
    tmp_path: Path,
) -> None:
    d = folder(tmp_path)
    ms = load(d)
    got = scope.host_scope(
        ms.objects, frozenset(), frozenset({DOMAIN_WEB_1}), prune=False, last=_state()
    )
    assert got == Scope(
        plan=frozenset({DOMAIN_WEB_1}),
        read=frozenset({DOMAIN_WEB_1, object_key(Kind.NETWORK, "lan")}),
        narrow=True,  # a domain's plan needs no other domain
    )
    pool = object_key(Kind.STORAGE_POOL, "images")
    volume = object_key(Kind.VOLUME, "disk.qcow2", "images")
    got = scope.host_scope(ms.objects, frozenset(), frozenset({pool}), prune=False, last=_state())
    assert got == Scope(plan=frozenset({pool, volume}), read=frozenset({pool, volume}))


def test_with_prune_an_event_on_an_undeclared_object_needs_a_full_pass(tmp_path: Path) -> None:
    ms = load(folder(tmp_path))
    stray = object_key(Kind.DOMAIN, "stray")
    for last, expected in (
        (_state(), "Domain/stray: no manifest declares it (--prune)"),  # not read yet
        (
            _state(Observed(kind=Kind.DOMAIN, name="stray", xml="<domain/>")),
            Scope(plan=frozenset(), read=frozenset({stray}), narrow=True),  # read: not ours
        ),
    ):
        assert (
            scope.host_scope(ms.objects, frozenset(), frozenset({stray}), prune=True, last=last)
            == expected
        )
    assert scope.host_scope(
        ms.objects, frozenset(), frozenset({stray}), prune=False, last=_state()
    ) == Scope(plan=frozenset(), read=frozenset({stray}), narrow=True)


def test_reload_reads_only_the_changed_file_and_equals_a_full_read(tmp_path: Path) -> None:
    d = folder(tmp_path)
    old = load(d)
    (d / "web-1.yaml").write_text(domain("web-1", memory="96MiB"))
    fresh = scope.reload(old, [str(d / "web-1.yaml")])
    assert fresh is not None
    assert fresh.objects == load(d).objects
    assert fresh.digest != old.digest


@pytest.mark.parametrize(
    ("file", "text", "why"),
    [
        ("web-1.yaml", None, "deleted"),
        ("web-9.yaml", domain("web-9"), "a new file"),
        ("web-1.yaml", domain("web-7"), "renamed: web-1 is no longer declared"),
        ("web-1.yaml", domain("web-2"), "declared twice"),
        (
            "web-1.yaml",
            domain("web-1").replace("{network: lan}", "{network: lan, mac: 'MAC'}"),
            "a MAC another domain uses",
        ),
    ],
)
def test_reload_needs_every_file_when_files_or_objects_come_or_go(
    tmp_path: Path, file: str, text: str | None, why: str
) -> None:
    d = folder(tmp_path)
    old = load(d)
    path = d / file
    if text is None:
        path.unlink()
    else:
        web0 = next(m for m in old.objects if m.name == "web-0")
        mac = manifests.interface_macs("web-0", web0.spec)[0][2]
        path.write_text(text.replace("MAC", mac))
    assert scope.reload(old, [str(path)]) is None, why


def test_reload_reports_the_changed_files_errors(tmp_path: Path) -> None:
    d = folder(tmp_path)
    old = load(d)
    (d / "web-1.yaml").write_text(domain("web-1").replace("vcpus: 1", "vcpu: 1"))
    with pytest.raises(errors.ManifestError) as e:
        scope.reload(old, [str(d / "web-1.yaml")])
    assert "web-1.yaml" in str(e.value.problems[0].file)


def test_a_cloud_init_domain_edit_is_scoped_and_a_new_seed_is_a_full_pass(
    tmp_path: Path,
) -> None:
    d = folder(tmp_path, count=0)
    seed = "cloudInit:\n  pool: images\n  userData: |\n    #cloud-config\n    hostname: {}\n"
    (d / "web.yaml").write_text(domain("web", extra=seed.format("a")))
    old = load(d)
    assert [m.kind for m in old.objects].count(Kind.VOLUME) == 2  # the disk and the seed
    (d / "web.yaml").write_text(domain("web", memory="96MiB", extra=seed.format("a")))
    got = scope.changed(old, load(d))
    assert got.objects == {"default": frozenset({object_key(Kind.DOMAIN, "web")})}
    # Drift on the domain: its seed is planned with it (else it would look like an old seed).
    web = object_key(Kind.DOMAIN, "web")
    got_scope = scope.host_scope(
        old.objects, frozenset(), frozenset({web}), prune=False, last=_state()
    )
    assert isinstance(got_scope, Scope)
    seeds = [m for m in old.objects if m.owner == "Domain/web"]
    assert len(seeds) == 1
    assert got_scope.plan == {web, scope.key_of(seeds[0])}
    assert not got_scope.narrow
    (d / "web.yaml").write_text(domain("web", extra=seed.format("b")))
    assert "no longer declared" in (scope.changed(old, load(d)).full or "")


def test_marks_that_name_objects_or_files_make_a_batch_that_can_be_scoped() -> None:
    now = [0.0]
    queue = WorkQueue(debounce=0.1, max_delay=1.0, clock=lambda: now[0])
    queue.add(Reason.EVENT, "a", obj=("Domain", "web-1"))
    queue.add(Reason.FILE, path="/m/web-2.yaml")
    queue.add(Reason.EVENT, "b")  # names no object: a full pass of b
    now[0] = 0.5
    batch = queue.get(timeout=0)
    assert batch is not None
    assert batch.objects == {"a": frozenset({("Domain", "web-1")})}
    assert batch.files == frozenset({"/m/web-2.yaml"})
    assert not batch.full("a") and batch.full("b")
    queue.done()
    queue.add(Reason.EVENT, "a", obj=("Domain", "web-1"))
    queue.add(Reason.RESYNC, cause="resync")
    now[0] = 1.0
    batch = queue.get(timeout=0)
    assert batch is not None and batch.full("a") and batch.all_full
