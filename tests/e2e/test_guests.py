"""Guest disks on the real daemon: images uploaded from a file and a ``file://``
URL, a changed source refused without --replace. Objects are named ``vrt-g-*``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.testbed.cli import vr

POOL = "vrt-g-images"


def _pool_doc(target: Path) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: StoragePool\n"
        f"metadata: {{name: {POOL}}}\nspec: {{type: dir, target: {target}}}\n"
    )


def _volume(name: str, spec: str) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Volume\n"
        f"metadata: {{name: {name}}}\nspec: {{pool: {POOL}, {spec}}}\n"
    )


@pytest.fixture
def conn(system_uri: str) -> Iterator[libvirt.virConnect]:
    c = libvirt.open(system_uri)
    yield c
    c.close()


@pytest.fixture
def base_image(scratch_dir: Path) -> Path:
    """A small qcow2 image with a known pattern in its first 64 KiB."""
    path = scratch_dir / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _same_content(a: str, b: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", a, b], check=False).returncode == 0


def test_upload_from_a_file_and_a_file_url(
    system_uri: str, scratch_dir: Path, base_image: Path, conn: libvirt.virConnect
) -> None:
    sha = hashlib.sha256(base_image.read_bytes()).hexdigest()
    manifests = scratch_dir / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(_pool_doc(scratch_dir / "pool"))
    from_file = _volume("vrt-g-base.qcow2", "format: qcow2, source: {file: ../base.qcow2}")
    from_url = _volume(
        "vrt-g-url.qcow2",
        f"format: qcow2, capacity: 64MiB, source: {{url: 'file://{base_image}', sha256: {sha}}}",
    )
    (manifests / "volumes.yaml").write_text("---\n".join([from_file, from_url]))

    result = vr("apply", manifests, "-c", system_uri, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["converged"] is True
    pool = conn.storagePoolLookupByName(POOL)
    base = pool.storageVolLookupByName("vrt-g-base.qcow2")
    url = pool.storageVolLookupByName("vrt-g-url.qcow2")
    assert "<format type='qcow2'/>" in base.XMLDesc(0)
    assert base.info()[1] == 32 << 20  # the image's virtual size: no capacity given
    assert url.info()[1] == 64 << 20  # grown to the manifest's capacity
    assert _same_content(str(base_image), base.path())
    # The data is the image's: the pattern at offset 0 survived the upload.
    probe = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xab 0 64k", url.path()],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Pattern verification failed" not in probe.stdout

    again = vr("plan", manifests, "-c", system_uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    # Another checksum is another source: a replace, refused without --replace.
    (manifests / "volumes.yaml").write_text(
        "---\n".join(
            [from_file.replace("../base.qcow2}", f"../base.qcow2, sha256: {sha}}}"), from_url]
        )
    )
    refused = vr("apply", manifests, "-c", system_uri)
    assert refused.returncode == 1
    assert "--replace Volume/vrt-g-images/vrt-g-base.qcow2" in refused.stdout
    assert pool.storageVolLookupByName("vrt-g-base.qcow2").info()[1] == 32 << 20


def test_wrong_checksum_uploads_nothing(
    system_uri: str, scratch_dir: Path, base_image: Path, conn: libvirt.virConnect
) -> None:
    manifests = scratch_dir / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(_pool_doc(scratch_dir / "pool"))
    (manifests / "volumes.yaml").write_text(
        _volume(
            "vrt-g-bad.qcow2", f"format: qcow2, source: {{file: ../base.qcow2, sha256: {'0' * 64}}}"
        )
    )
    result = vr("apply", manifests, "-c", system_uri)
    assert result.returncode == 1
    assert "sha256 is" in result.stdout + result.stderr
    names = [v.name() for v in conn.storagePoolLookupByName(POOL).listAllVolumes()]
    assert "vrt-g-bad.qcow2" not in names


def test_overlays_on_an_uploaded_base_and_the_base_stays_while_in_use(
    system_uri: str, scratch_dir: Path, base_image: Path, conn: libvirt.virConnect
) -> None:
    manifests = scratch_dir / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(_pool_doc(scratch_dir / "pool"))
    base = _volume("vrt-g-base.qcow2", "format: qcow2, prune: true, source: {file: ../base.qcow2}")
    overlays = [
        _volume(
            f"vrt-g-web-{i}.qcow2",
            f"format: qcow2, capacity: 64MiB, prune: true, "
            f"backingStore: {{volume: {{pool: {POOL}, name: vrt-g-base.qcow2}}}}",
        )
        for i in (1, 2, 3)
    ]
    (manifests / "volumes.yaml").write_text("---\n".join([*overlays, base]))
    result = vr("apply", manifests, "-c", system_uri)
    assert result.returncode == 0, result.stdout + result.stderr
    pool = conn.storagePoolLookupByName(POOL)
    base_path = pool.storageVolLookupByName("vrt-g-base.qcow2").path()
    for i in (1, 2, 3):
        path = pool.storageVolLookupByName(f"vrt-g-web-{i}.qcow2").path()
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", path],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert info["backing-filename"] == base_path and info["virtual-size"] == 64 << 20
        # The overlay reads the base's data through.
        probe = subprocess.run(
            ["qemu-io", "-f", "qcow2", "-r", "-U", "-c", "read -P 0xab 0 64k", path],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "Pattern verification failed" not in probe.stdout
    again = vr("plan", manifests, "-c", system_uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    # No manifest names the base any more and it may be pruned: it is kept.
    (manifests / "volumes.yaml").write_text("---\n".join(overlays))
    pruned = vr("apply", manifests, "-c", system_uri, "--prune", "--force-prune")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "not deleted: in use by volume vrt-g-images/vrt-g-web-1.qcow2" in pruned.stdout
    assert "vrt-g-base.qcow2" in [v.name() for v in pool.listAllVolumes()]
