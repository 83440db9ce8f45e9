"""Stage 1: reading, validating and cross-checking manifest files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler import errors, manifests, model, units
from reconciler.render import identity

pytestmark = pytest.mark.unit

HOSTS = """\
apiVersion: virt-reconcile/v1
kind: Host
metadata: {name: kvm-a, labels: {zone: a}}
spec: {uri: "test:///default"}
---
apiVersion: virt-reconcile/v1
kind: Host
metadata: {name: kvm-b, labels: {zone: b}}
spec: {uri: "qemu+ssh://kvm-b/system"}
"""

DOMAIN = """\
apiVersion: virt-reconcile/v1
kind: Domain
metadata:
  name: web-1
  labels: {tier: web, enabled: no}
spec:
  memory: 2GiB
  vcpus: 2
  interfaces:
    - network: default
      mac: 52:54:00:12:34:56
    - name: backup
      bridge: br0
"""


def write(directory: Path, name: str, text: str | bytes) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def problems(paths: list[str], **kwargs: str) -> list[str]:
    with pytest.raises(errors.ManifestError) as info:
        manifests.load(paths, **kwargs)
    return [str(p) for p in info.value.problems]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so that messages name files by short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- values


def test_valid_domain_values_stay_what_they_look_like(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN)
    loaded = manifests.load(["web.yaml"], default_uri="test:///default")
    (domain,) = loaded.objects
    assert domain.kind is model.Kind.DOMAIN
    assert domain.name == "web-1"
    assert domain.spec["interfaces"][0]["mac"] == "52:54:00:12:34:56"
    assert domain.spec["vcpus"] == 2
    assert domain.labels == {"tier": "web", "enabled": "no"}
    assert domain.source == model.Source(file="web.yaml", line=1)
    assert domain.lines["spec.interfaces.1.bridge"] == 13
    assert domain.source_of("spec.interfaces.0.mac") == model.Source(file="web.yaml", line=11)
    assert domain.host is None
    assert loaded.hosts == (model.Host(name="default", uri="test:///default"),)
    assert loaded.files == ("web.yaml",)


def test_yaml_11_booleans_and_numbers_stay_strings(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        DOMAIN
        + "  cpu: {model: on}\n"
        + "  disks: [{target: vda, serial: 0o17, source: {file: /x}}, "
        + "{target: vdb, serial: 1_000, format: yes}]\n",
    )
    (domain,) = manifests.load(["web.yaml"]).objects
    assert domain.spec["cpu"] == {"model": "on"}
    assert domain.spec["disks"][0]["serial"] == "0o17"
    assert domain.spec["disks"][1]["serial"] == "1_000"
    assert domain.spec["disks"][1]["format"] == "yes"


def test_names_labels_and_annotations_are_strings(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        "apiVersion: virt-reconcile/v1\nkind: Network\n"
        "metadata:\n  name: 123\n  labels: {rack: 7, ha: true}\n"
        "  annotations: {virt-reconcile/prune: false}\n"
        "spec: {mtu: 1500, autostart: true}\n",
    )
    (network,) = manifests.load(["web.yaml"]).objects
    assert network.name == "123"
    assert network.labels == {"rack": "7", "ha": "true"}
    assert network.prune_protected
    assert network.spec == {"mtu": 1500, "autostart": True}


def test_booleans_where_the_schema_wants_them(in_tmp: Path) -> None:
    write(in_tmp, "vol.yaml", DOMAIN + "  autostart: no\n")
    assert problems(["vol.yaml"]) == ["vol.yaml:14: spec.autostart: expected boolean, got string"]


# ---------------------------------------------------------------- located errors


def test_unknown_field(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("  memory: 2GiB", "  memory: 2GiB\n  memroy: 1GiB"))
    assert problems(["web.yaml"]) == [
        "web.yaml:8: spec.memroy: unknown field 'memroy' (did you mean 'memory'?)"
    ]


def test_unknown_top_level_and_metadata_fields(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        DOMAIN.replace("  name: web-1", "  name: web-1\n  uid: x") + "extra: 1\nstatus: {a: 1}\n",
    )
    assert problems(["web.yaml"]) == [
        "web.yaml:5: metadata.uid: unknown field 'uid'",
        "web.yaml:15: extra: unknown field 'extra'",
    ]


@pytest.mark.parametrize(
    ("size", "hint"),
    [
        ("2 GB", "; decimal units are refused: 2GB is 1.86GiB; did you mean 2GiB?"),
        ("2048", ""),
        ("2.5GiB", "; did you mean 2560MiB?"),
        ("2G", "; did you mean 2GiB?"),
        ("512m", "; did you mean 512MiB?"),
        ("1 tb", "; decimal units are refused: 1TB is 0.909TiB; did you mean 1TiB?"),
        ("2 gigs", ""),
    ],
)
def test_bad_size(in_tmp: Path, size: str, hint: str) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("2GiB", size))
    assert problems(["web.yaml"]) == [
        f"web.yaml:7: spec.memory: size '{size}' needs a binary unit: "
        f"B, KiB, MiB, GiB or TiB (e.g. '2GiB'){hint}"
    ]


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("1m30s", 90.0), ("2h", 7200.0), ("500ms", 0.5), (45, 45.0)]
)
def test_compound_durations(in_tmp: Path, timeout: str | int, seconds: float) -> None:
    text = DOMAIN + f"  updateStrategy: {{shutdownTimeout: {timeout}}}\n"
    write(in_tmp, "web.yaml", text)
    (m,) = manifests.load(["web.yaml"]).objects
    assert units.parse_duration(m.spec["updateStrategy"]["shutdownTimeout"]) == seconds


@pytest.mark.parametrize("timeout", ["1m30", "90 seconds", "-5s", "1.5"])
def test_bad_duration(in_tmp: Path, timeout: str) -> None:
    write(in_tmp, "web.yaml", DOMAIN + f"  updateStrategy: {{shutdownTimeout: '{timeout}'}}\n")
    assert problems(["web.yaml"]) == [
        f"web.yaml:14: spec.updateStrategy.shutdownTimeout: duration '{timeout}': use a number "
        "of seconds or numbers with ms, s, m or h (e.g. '120s', '1m30s')"
    ]


def test_schemas_use_the_one_duration_and_size_pattern() -> None:
    for kind in model.Kind:
        defs = manifests._validator(kind).schema["$defs"]
        assert defs["duration"]["pattern"] == units.DURATION_PATTERN
        assert defs["size"]["pattern"] == units.SIZE_PATTERN


def test_wrong_type(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("vcpus: 2", 'vcpus: "2"'))
    assert problems(["web.yaml"]) == ["web.yaml:8: spec.vcpus: expected integer, got string"]


def test_float_is_not_an_integer(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("vcpus: 2", "vcpus: 2.0"))
    assert problems(["web.yaml"]) == ["web.yaml:8: spec.vcpus: expected integer, got number"]


def test_missing_required_fields(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {labels: {}}\n"
        "spec:\n  vcpus: 1\n  disks:\n    - bus: virtio\n",
    )
    assert problems(["web.yaml"]) == [
        "web.yaml:3: metadata.name: required field is missing",
        "web.yaml:4: spec.memory: required field is missing",
        "web.yaml:7: spec.disks.0.target: required field is missing",
    ]


def test_missing_spec(in_tmp: Path) -> None:
    write(in_tmp, "h.yaml", "apiVersion: virt-reconcile/v1\nkind: Host\nmetadata: {name: a}\n")
    assert problems(["h.yaml"]) == ["h.yaml:1: spec: required field is missing"]


def test_unknown_kind(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("kind: Domain", "kind: Domian"))
    assert problems(["web.yaml"]) == [
        "web.yaml:2: kind: unknown kind 'Domian' (did you mean 'Domain'?)"
    ]


def test_unknown_api_version(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("virt-reconcile/v1", "v1"))
    assert problems(["web.yaml"]) == [
        "web.yaml:1: apiVersion: unknown apiVersion 'v1' (use 'virt-reconcile/v1')"
    ]


def test_enum_and_exclusive_fields(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        DOMAIN
        + "  state: stopped\n  secureBoot: true\n  boot: [hd]\n  kernel: {path: /boot/vmlinuz}\n"
        + "  disks:\n    - target: vda\n      source: {file: /a.img, block: /dev/sda}\n"
        + "    - target: vdb\n      source: {}\n",
    )
    write(
        in_tmp,
        "nic.yaml",
        DOMAIN.replace("      bridge: br0", "      bridge: br0\n      network: x"),
    )
    assert problems(["nic.yaml", "web.yaml"]) == [
        "nic.yaml:12: spec.interfaces.1: give exactly one of network or bridge",
        "web.yaml:14: spec.state: must be one of: running, shutoff, paused (got 'stopped')",
        "web.yaml:15: spec.secureBoot: secureBoot needs firmware: efi",
        "web.yaml:17: spec.kernel: give boot or kernel, not both",
        "web.yaml:20: spec.disks.0.source: give exactly one of volume, file or block",
        "web.yaml:22: spec.disks.1.source: give exactly one of volume, file or block",
    ]


def test_host_and_placement_are_exclusive(in_tmp: Path) -> None:
    write(in_tmp, "hosts.yaml", HOSTS)
    write(in_tmp, "web.yaml", DOMAIN + "  host: kvm-a\n  placement: {hosts: [kvm-a]}\n")
    assert problems(["."]) == ["./web.yaml:15: spec.placement: give host or placement, not both"]


def test_bad_mac(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("52:54:00:12:34:56", "52:54:00:12:34"))
    assert problems(["web.yaml"]) == [
        "web.yaml:11: spec.interfaces.0.mac: invalid MAC address '52:54:00:12:34': "
        "expected six hex pairs like '52:54:00:12:34:56'"
    ]


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/b", '"a\\tb"', "''"])
def test_bad_volume_names(in_tmp: Path, name: str) -> None:
    write(
        in_tmp,
        "vol.yaml",
        f"apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata:\n  name: {name}\n"
        "spec: {pool: default, capacity: 1GiB}\n",
    )
    (problem,) = problems(["vol.yaml"])
    assert problem.startswith("vol.yaml:4: metadata.name: invalid name ")
    assert "names are 1-200 characters, without '/'" in problem


def test_volume_name_too_long(in_tmp: Path) -> None:
    text = "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata:\n  name: NAME\n"
    text += "spec: {pool: default, capacity: 1GiB}\n"
    write(in_tmp, "ok.yaml", text.replace("NAME", "a" * 200))
    assert manifests.load(["ok.yaml"]).objects[0].name == "a" * 200
    write(in_tmp, "long.yaml", text.replace("NAME", "a" * 201))
    assert len(problems(["long.yaml"])) == 1


def test_multiple_errors_reported_together(in_tmp: Path) -> None:
    write(in_tmp, "a.yaml", DOMAIN.replace("vcpus: 2", "vcpus: two"))
    write(
        in_tmp,
        "b.yaml",
        "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {name: v}\n"
        "spec:\n  pool: default\n  capacity: 10\n  prune: yes\n",
    )
    assert problems(["a.yaml", "b.yaml"]) == [
        "a.yaml:8: spec.vcpus: expected integer, got string",
        "b.yaml:6: spec.capacity: size '10' needs a binary unit: "
        "B, KiB, MiB, GiB or TiB (e.g. '2GiB')",
        "b.yaml:7: spec.prune: expected boolean, got string",
    ]


def test_schema_and_semantic_errors_of_one_document_in_one_run(in_tmp: Path) -> None:
    # Unknown fields beside a memory check and a disk target used twice: one
    # run reports all of them, not the rest on the next run.
    write(
        in_tmp,
        "web.yaml",
        DOMAIN.replace(
            "vcpus: 2",
            "vcpus: 2\n  currentMemory: 4GiB\n  bogus: 1\n"
            "  disks:\n    - {target: vda, size: 1}\n    - {target: vda}",
        ),
    )
    assert problems(["web.yaml"]) == [
        "web.yaml:9: spec.currentMemory: currentMemory (4GiB) is more than memory (2GiB)",
        "web.yaml:10: spec.bogus: unknown field 'bogus'",
        "web.yaml:12: spec.disks.0.size: unknown field 'size'",
        "web.yaml:13: spec.disks.1.target: target 'vda' is already used by spec.disks.0",
    ]


def test_checks_never_guess_from_a_refused_field(in_tmp: Path) -> None:
    # vcpus 4.0 is refused (not an integer): no "more than maxVcpus" on top of it,
    # and a memory the schema refused is not compared with currentMemory.
    write(
        in_tmp,
        "web.yaml",
        DOMAIN.replace("vcpus: 2", "vcpus: 4.0\n  maxVcpus: 2").replace(
            "memory: 2GiB", "memory: lots\n  currentMemory: 4GiB"
        ),
    )
    found = problems(["web.yaml"])
    assert [p.split(": ")[1] for p in found] == ["spec.memory", "spec.vcpus"], found


def test_errors_across_documents_beside_schema_errors(in_tmp: Path) -> None:
    # b.yaml has a schema error and the name a.yaml declares; c.yaml's overlay
    # is not XML. All three problems show at once.
    write(in_tmp, "a.yaml", DOMAIN)
    other = DOMAIN.replace("52:54:00:12:34:56", "52:54:00:12:34:57").replace("backup", "b2")
    write(in_tmp, "b.yaml", other.replace("vcpus: 2", "vcpus: two"))
    write(
        in_tmp,
        "c.yaml",
        "apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: n}\n"
        "spec:\n  xml: |\n    <network><name>n</name>\n",
    )
    found = problems(["a.yaml", "b.yaml", "c.yaml"])
    assert found[:3] == [
        "a.yaml:4: metadata.name: Domain 'web-1' is also declared at b.yaml:4",
        "b.yaml:4: metadata.name: Domain 'web-1' is also declared at a.yaml:4",
        "b.yaml:8: spec.vcpus: expected integer, got string",
    ]
    assert len(found) == 4 and found[3].startswith("c.yaml:"), found


def test_memory_and_vcpu_limits(in_tmp: Path) -> None:
    write(
        in_tmp,
        "web.yaml",
        DOMAIN.replace("vcpus: 2", "vcpus: 4\n  maxVcpus: 2\n  currentMemory: 4GiB"),
    )
    assert problems(["web.yaml"]) == [
        "web.yaml:8: spec.vcpus: vcpus (4) is more than maxVcpus (2)",
        "web.yaml:10: spec.currentMemory: currentMemory (4GiB) is more than memory (2GiB)",
    ]


# ---------------------------------------------------------------- across documents


def test_duplicate_names_report_both_locations(in_tmp: Path) -> None:
    write(in_tmp, "a.yaml", DOMAIN)
    # Same domain name: the NIC names must differ too, or the derived MACs collide.
    other = DOMAIN.replace("52:54:00:12:34:56", "52:54:00:12:34:57").replace("backup", "b2")
    write(in_tmp, "b.yaml", "# the same again\n" + other)
    assert problems(["a.yaml", "b.yaml"]) == [
        "a.yaml:4: metadata.name: Domain 'web-1' is also declared at b.yaml:5",
        "b.yaml:5: metadata.name: Domain 'web-1' is also declared at a.yaml:4",
    ]


def test_same_name_on_different_hosts_or_pools_is_fine(in_tmp: Path) -> None:
    volume = (
        "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {{name: disk.qcow2}}\n"
        "spec: {{host: {host}, pool: {pool}, capacity: 1GiB}}\n"
    )
    write(in_tmp, "hosts.yaml", HOSTS)
    write(
        in_tmp,
        "vols.yaml",
        "---\n".join(
            volume.format(host=h, pool=p)
            for h, p in [("kvm-a", "a"), ("kvm-a", "b"), ("kvm-b", "a")]
        ),
    )
    loaded = manifests.load(["."])
    assert [(v.host, v.spec["pool"]) for v in loaded.objects] == [
        ("kvm-a", "a"),
        ("kvm-a", "b"),
        ("kvm-b", "a"),
    ]
    assert [h.name for h in loaded.hosts] == ["kvm-a", "kvm-b"]
    assert loaded.hosts[0].labels == {"zone": "a"}


def test_duplicate_volume_in_same_pool_and_host(in_tmp: Path) -> None:
    volume = (
        "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {name: d}\n"
        "spec: {pool: p, capacity: 1GiB}\n"
    )
    write(in_tmp, "vols.yaml", volume + "---\n" + volume)
    assert problems(["vols.yaml"]) == [
        "vols.yaml:3: metadata.name: Volume 'd' in pool 'p' is also declared at vols.yaml:8",
        "vols.yaml:8: metadata.name: Volume 'd' in pool 'p' is also declared at vols.yaml:3",
    ]


def test_duplicate_hosts(in_tmp: Path) -> None:
    write(in_tmp, "hosts.yaml", HOSTS.replace("name: kvm-b", "name: kvm-a"))
    assert problems(["hosts.yaml"]) == [
        "hosts.yaml:3: metadata.name: Host 'kvm-a' is also declared at hosts.yaml:8",
        "hosts.yaml:8: metadata.name: Host 'kvm-a' is also declared at hosts.yaml:3",
    ]


def test_dangling_host_reference(in_tmp: Path) -> None:
    write(in_tmp, "hosts.yaml", HOSTS)
    write(
        in_tmp,
        "web.yaml",
        DOMAIN
        + "  placement: {hosts: [kvm-a, kvm-c]}\n---\n"
        + DOMAIN.replace("web-1", "web-2").replace("52:54:00:12:34:56", "52:54:00:12:34:57")
        + "  host: kvm-x\n",
    )
    assert problems(["hosts.yaml", "web.yaml"]) == [
        "web.yaml:14: spec.placement.hosts.1: no Host document declares 'kvm-c'",
        "web.yaml:29: spec.host: no Host document declares 'kvm-x'",
    ]


def test_host_reference_without_host_documents(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN + "  host: kvm-a\n")
    assert problems(["web.yaml"]) == ["web.yaml:14: spec.host: no Host document declares 'kvm-a'"]


def test_host_required_with_several_hosts(in_tmp: Path) -> None:
    write(in_tmp, "hosts.yaml", HOSTS)
    write(in_tmp, "web.yaml", DOMAIN)
    assert problems(["."]) == [
        "./web.yaml:6: spec.host: required when several Host documents exist (kvm-a, kvm-b)"
    ]


def test_placement_selector(in_tmp: Path) -> None:
    write(in_tmp, "hosts.yaml", HOSTS)
    write(in_tmp, "web.yaml", DOMAIN + "  placement: {selector: {zone: b}}\n")
    (domain,) = manifests.load(["."]).objects
    assert domain.host is None
    write(in_tmp, "web.yaml", DOMAIN + "  placement: {selector: {zone: c}}\n")
    assert problems(["."]) == ["./web.yaml:14: spec.placement.selector: matches no Host document"]


def test_mac_collisions(in_tmp: Path) -> None:
    derived = identity.derive_mac("web-1", "backup")
    write(in_tmp, "a.yaml", DOMAIN)
    write(
        in_tmp,
        "b.yaml",
        DOMAIN.replace("web-1", "db-1").replace("52:54:00:12:34:56", derived),
    )
    assert problems(["a.yaml", "b.yaml"]) == [
        f"a.yaml:12: spec.interfaces.1: MAC {derived} (derived from 'web-1/backup') "
        "is also used by Domain 'db-1' interface 'nic0' at b.yaml:10",
        f"b.yaml:10: spec.interfaces.0: MAC {derived} is also used by "
        "Domain 'web-1' interface 'backup' at a.yaml:12",
    ]


def test_derived_mac_rule() -> None:
    import hashlib

    digest = hashlib.sha256(b"web-1/nic0").hexdigest()
    expected = "52:54:00:" + ":".join(digest[i : i + 2] for i in (0, 2, 4))
    assert identity.derive_mac("web-1", "nic0") == expected


def test_volume_pool_may_be_undeclared(in_tmp: Path) -> None:
    write(
        in_tmp,
        "vol.yaml",
        "apiVersion: virt-reconcile/v1\nkind: Volume\nmetadata: {name: d}\n"
        "spec: {pool: elsewhere, capacity: 1GiB}\n",
    )
    (volume,) = manifests.load(["vol.yaml"]).objects
    assert volume.ref == "Volume/elsewhere/d"


def test_objects_sorted_by_kind_host_name(in_tmp: Path) -> None:
    write(
        in_tmp,
        "all.yaml",
        DOMAIN
        + "---\napiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: b}\nspec: {}\n"
        + "---\napiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: a}\nspec: {}\n"
        + "---\napiVersion: virt-reconcile/v1\nkind: StoragePool\nmetadata: {name: p}\n"
        + "spec: {type: dir, target: /var/lib/p}\n",
    )
    loaded = manifests.load(["all.yaml"])
    assert [o.ref for o in loaded.objects] == [
        "StoragePool/p",
        "Network/a",
        "Network/b",
        "Domain/web-1",
    ]
    assert loaded.objects[1].source == model.Source(file="all.yaml", line=20)


# ---------------------------------------------------------------- YAML and files


def test_yaml_syntax_error(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("  vcpus: 2", "  vcpus: [2"))
    (problem,) = problems(["web.yaml"])
    assert problem.startswith("web.yaml:9: invalid YAML: ")


def test_non_mapping_document(in_tmp: Path) -> None:
    write(in_tmp, "list.yaml", DOMAIN + "---\n- a\n- b\n---\nhello\n")
    assert problems(["list.yaml"]) == [
        "list.yaml:15: a document must be a mapping, not a list",
        "list.yaml:18: a document must be a mapping, not the scalar 'hello'",
    ]


def test_empty_documents_and_files_are_skipped(in_tmp: Path) -> None:
    write(in_tmp, "m/empty.yaml", "")
    write(in_tmp, "m/comments.yml", "# nothing here\n")
    write(in_tmp, "m/web.yaml", "---\n---\n" + DOMAIN + "---\n")
    write(in_tmp, "m/notes.txt", "not: yaml: at all")
    write(in_tmp, "m/.github/ci.yml", "on: push")
    loaded = manifests.load(["m"])
    assert [o.name for o in loaded.objects] == ["web-1"]
    assert loaded.objects[0].source == model.Source(file="m/web.yaml", line=3)
    assert loaded.files == ("m/comments.yml", "m/empty.yaml", "m/web.yaml")


def test_directories_are_walked_recursively_in_order(in_tmp: Path) -> None:
    write(in_tmp, "m/z.yaml", DOMAIN.replace("web-1", "z"))
    write(in_tmp, "m/sub/a.yaml", "kind: Nope\n")
    write(in_tmp, "m/a.yml", DOMAIN.replace("web-1", "a").replace(":56", ":57"))
    assert problems(["m/"]) == [
        "m/sub/a.yaml:1: apiVersion: required field is missing (use 'virt-reconcile/v1')",
        "m/sub/a.yaml:1: kind: unknown kind 'Nope' (one of: Secret, StoragePool, Volume, Network, "
        "Domain, Host)",
    ]


def test_relative_paths_stay_relative(in_tmp: Path) -> None:
    write(in_tmp, "deploy/site/web.yaml", DOMAIN.replace("vcpus: 2", "vcpus: x"))
    expected = "deploy/site/web.yaml:8: spec.vcpus: expected integer, got string"
    assert problems(["deploy"]) == [expected]
    assert problems(["deploy/site/web.yaml"]) == [expected]
    assert problems([os.path.join("deploy", "..", "deploy")]) == [
        "deploy/../deploy/site/web.yaml:8: spec.vcpus: expected integer, got string"
    ]


def test_missing_path(in_tmp: Path) -> None:
    assert problems(["nope.yaml"]) == ["nope.yaml:0: no such file or directory"]


def test_non_utf8_file(in_tmp: Path) -> None:
    write(in_tmp, "bad.yaml", DOMAIN.encode().replace(b"tier: web", b"tier: w\xffb"))
    assert problems(["bad.yaml"]) == ["bad.yaml:5: not valid UTF-8 (byte 0xff at column 19)"]


def test_control_character(in_tmp: Path) -> None:
    write(in_tmp, "bad.yaml", DOMAIN.replace("tier: web", "tier: w\x01b"))
    (problem,) = problems(["bad.yaml"])
    assert problem.startswith("bad.yaml:5: invalid YAML: ")


def test_oversize_file_rejected(in_tmp: Path) -> None:
    write(in_tmp, "big.yaml", DOMAIN + "#" * (4 << 20) + "\n")
    assert problems(["big.yaml"]) == ["big.yaml:1: file is larger than 4 MiB"]


def test_billion_laughs_rejected_quickly(in_tmp: Path) -> None:
    # 81 aliases expanding to 10^9 strings: stopped by the value count.
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]")
    write(in_tmp, "bomb.yaml", "\n".join(lines) + "\n")
    start = time.monotonic()
    (problem,) = problems(["bomb.yaml"])
    assert time.monotonic() - start < 5
    assert problem == "bomb.yaml:1: document expands to more than 100000 values"


def test_too_many_aliases(in_tmp: Path) -> None:
    text = "a: &a x\nb:\n" + "  - *a\n" * 101
    write(in_tmp, "aliases.yaml", text)
    assert problems(["aliases.yaml"]) == ["aliases.yaml:103: document uses more than 100 aliases"]


def test_unsafe_tags_are_not_constructed(in_tmp: Path) -> None:
    write(in_tmp, "evil.yaml", DOMAIN.replace("2GiB", "!!python/object/apply:os.system [echo hi]"))
    assert problems(["evil.yaml"]) == [
        "evil.yaml:7: spec.memory: unsupported YAML tag '!!python/object/apply:os.system'"
    ]


def test_duplicate_keys(in_tmp: Path) -> None:
    write(in_tmp, "web.yaml", DOMAIN.replace("  vcpus: 2", "  vcpus: 2\n  vcpus: 3"))
    assert problems(["web.yaml"]) == ["web.yaml:9: spec.vcpus: duplicate key 'vcpus'"]


def test_deep_nesting(in_tmp: Path) -> None:
    write(in_tmp, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    (problem,) = problems(["deep.yaml"])
    assert problem.startswith("deep.yaml:1: ")


# ---------------------------------------------------------------- hosts override


def test_load_hosts_override(in_tmp: Path) -> None:
    write(in_tmp, "override.yaml", HOSTS)
    assert manifests.load_hosts_override("override.yaml") == {
        "kvm-a": "test:///default",
        "kvm-b": "qemu+ssh://kvm-b/system",
    }


def test_hosts_override_rejects_other_kinds(in_tmp: Path) -> None:
    write(in_tmp, "override.yaml", HOSTS + "---\n" + DOMAIN)
    with pytest.raises(errors.ManifestError) as info:
        manifests.load_hosts_override("override.yaml")
    assert [str(p) for p in info.value.problems] == [
        "override.yaml:12: kind: a hosts override file holds only Host documents"
    ]
