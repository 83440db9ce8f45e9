"""Volume sources on test-driver hosts: what the plan says, and the checks made
when the manifests are read (the upload itself needs a real daemon: e2e)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.integration.conftest import Run

POOL = """\
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {{name: images}}
spec: {{type: dir, target: {target}}}
"""


def _qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _write(folder: Path, pool_target: Path, *volumes: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.yaml").write_text(POOL.format(target=pool_target))
    (folder / "volumes.yaml").write_text("---\n".join(volumes))
    return folder


def _volume(name: str, spec: str) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Volume\n"
        f"metadata: {{name: {name}}}\nspec: {{pool: images, {spec}}}\n"
    )


def _actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{a['kind']}/{a.get('pool', '')}{a['name']}": a for a in doc["hosts"][0]["actions"]}


def test_plan_of_an_upload_says_where_from_and_needs_no_capacity(
    tmp_path: Path, host_uri: str, plan_json: Callable[..., dict[str, Any]]
) -> None:
    _qcow2(tmp_path / "base.qcow2")
    folder = _write(
        tmp_path / "m",
        tmp_path / "pool",
        _volume("base.qcow2", "format: qcow2, source: {file: ../base.qcow2}"),
    )
    action = _actions(plan_json(folder, "-c", host_uri))["Volume/imagesbase.qcow2"]
    assert action["action"] == "create"
    [source] = [c for c in action["changes"] if c["path"] == "source"]
    assert (source["old"], source["new"], source["disruption"]) == (
        None,
        "upload ../base.qcow2",
        "none",
    )


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ("format: raw, source: {file: ../base.qcow2}", "spec.format", "does not match the source"),
        ("source: {file: ../base.qcow2}", "spec.format", "set format: qcow2"),
        ("format: qcow2, capacity: 1MiB, source: {file: ../base.qcow2}", "spec.capacity", "less"),
        ("format: qcow2, source: {file: ../missing.qcow2}", "spec.source.file", "no such file"),
        ("format: qcow2, source: {url: 'https://example.org/x.qcow2'}", "spec.source.sha256", ""),
        ("format: qcow2, source: {file: a, url: 'file:///a'}", "spec.source", "exactly one"),
        ("source: {volume: {pool: images}}", "spec.source.volume.name", "required"),
    ],
)
def test_bad_sources_are_refused_with_file_and_line(
    tmp_path: Path, host_uri: str, run: Run, spec: str, field: str, message: str
) -> None:
    _qcow2(tmp_path / "base.qcow2")
    folder = _write(tmp_path / "m", tmp_path / "pool", _volume("v", spec))
    code, out, err = run("validate", folder)
    assert code == 1
    assert f"volumes.yaml:4: {field}" in out + err
    assert message in out + err


def test_a_file_url_with_a_checksum_is_read_when_loaded(
    tmp_path: Path, host_uri: str, run: Run
) -> None:
    base = _qcow2(tmp_path / "base.qcow2")
    folder = _write(
        tmp_path / "m",
        tmp_path / "pool",
        _volume("v", f"format: raw, source: {{url: 'file://{base}', sha256: '{'0' * 64}'}}"),
    )
    code, out, err = run("validate", folder)
    assert code == 1
    assert "volumes.yaml:4: spec.format: raw does not match the source, a qcow2 image" in out + err


def test_failed_upload_leaves_no_volume(
    tmp_path: Path, host_uri: str, run: Run, conn: Callable[[str], libvirt.virConnect]
) -> None:
    # The test driver has no virStorageVolUpload: the upload fails after the
    # volume was created, and the volume must go again.
    _qcow2(tmp_path / "base.qcow2")
    folder = _write(
        tmp_path / "m",
        tmp_path / "pool",
        _volume("base.qcow2", "format: qcow2, source: {file: ../base.qcow2}"),
    )
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 1, out + err
    assert "vol_upload" in out + err or "storageVolUpload" in out + err
    pool = conn(host_uri).storagePoolLookupByName("images")
    assert [v.name() for v in pool.listAllVolumes()] == []


def test_clone_then_changed_source_is_a_replace(
    tmp_path: Path,
    host_uri: str,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    golden = _volume("golden", "capacity: 8MiB")
    other = _volume("other", "capacity: 8MiB")
    copy = _volume("copy", "source: {volume: {pool: images, name: golden}}")
    folder = _write(tmp_path / "m", tmp_path / "pool", golden, other, copy)
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 0, out + err
    vol = conn(host_uri).storagePoolLookupByName("images").storageVolLookupByName("copy")
    assert vol.info()[1] == 8 << 20  # the original's capacity
    code, out, err = run("plan", folder, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err
    # Another source: the volume would be another volume.
    (folder / "volumes.yaml").write_text(
        "---\n".join([golden, other, copy.replace("name: golden", "name: other")])
    )
    code, out, err = run("plan", folder, "-c", host_uri)
    assert code == 1
    assert "source cannot change in place" in out and "--replace Volume/images/copy" in out
    code, out, err = run(
        "apply",
        folder,
        "-c",
        host_uri,
        "--dry-run",
        "--replace",
        "Volume/images/copy",
        "-o",
        "json",
    )
    assert code == 0, out + err
    action = _actions(json.loads(out))["Volume/imagescopy"]
    assert action["action"] == "update" and action["disruption"] == "replace"
    change = next(c for c in action["changes"] if c["path"] == "source")
    assert json.loads(change["old"]) == {"volume": {"pool": "images", "name": "golden"}}
    code, out, err = run("apply", folder, "-c", host_uri, "--replace", "Volume/images/copy")
    assert code == 0, out + err


def test_missing_source_volume_is_a_plan_error(
    tmp_path: Path, host_uri: str, run: Run, plan_json: Callable[..., dict[str, Any]]
) -> None:
    folder = _write(
        tmp_path / "m",
        tmp_path / "pool",
        _volume("copy", "source: {volume: {pool: images, name: nope}}"),
    )
    code, out, _err = run("plan", folder, "-c", host_uri)
    assert code == 1
    assert "volumes.yaml:4: spec.source.volume: volume 'images/nope' does not exist" in out


def test_overlays_on_a_base_volume_and_the_base_is_kept_while_in_use(
    tmp_path: Path,
    host_uri: str,
    run: Run,
    conn: Callable[[str], libvirt.virConnect],
    plan_json: Callable[..., dict[str, Any]],
) -> None:
    base = _volume("base.qcow2", "capacity: 8MiB, format: qcow2, prune: true")
    overlays = [
        _volume(
            f"web-{i}.qcow2",
            "capacity: 16MiB, format: qcow2, "
            "backingStore: {volume: {pool: images, name: base.qcow2}}",
        )
        for i in (1, 2, 3)
    ]
    # The overlays come first in the file: the plan still creates the base first.
    folder = _write(tmp_path / "m", tmp_path / "pool", *overlays, base)
    code, out, err = run("apply", folder, "-c", host_uri)
    assert code == 0, out + err
    pool = conn(host_uri).storagePoolLookupByName("images")
    base_path = pool.storageVolLookupByName("base.qcow2").path()
    for i in (1, 2, 3):
        xml = pool.storageVolLookupByName(f"web-{i}.qcow2").XMLDesc(0)
        assert f"<path>{base_path}</path>" in xml.split("<backingStore>")[1]
    code, out, err = run("plan", folder, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err
    # Growing the base would change what the overlays were written against.
    grown = base.replace("capacity: 8MiB", "capacity: 12MiB")
    (folder / "volumes.yaml").write_text("---\n".join([*overlays, grown]))
    code, out, _err = run("plan", folder, "-c", host_uri)
    assert code == 1
    assert "capacity cannot change: it is the backing file of images/web-1.qcow2" in out
    # No manifest names the base any more, and --prune may delete it: it stays.
    (folder / "volumes.yaml").write_text("---\n".join(overlays))
    code, out, err = run("apply", folder, "-c", host_uri, "--prune", "--force-prune", "-o", "json")
    assert code == 0, out + err
    action = _actions(json.loads(out))["Volume/imagesbase.qcow2"]
    assert action["note"].startswith("not deleted: in use by volume images/web-1.qcow2")
    assert "base.qcow2" in [v.name() for v in pool.listAllVolumes()]
