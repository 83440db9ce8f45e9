"""Guest disks on the real daemon: images uploaded from a file and a ``file://``
URL, overlays on a base volume, secrets and LUKS volumes. Objects are named ``vrt-g-*``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from reconciler.render.secret import secret_uuid
from tests.testbed.cli import vr

POOL = "vrt-g-images"


LABEL = "vrt-test: guests"


def _pool_doc(target: Path) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: StoragePool\n"
        f"metadata: {{name: {POOL}, labels: {{{LABEL}}}}}\n"
        f"spec: {{type: dir, target: {target}}}\n"
    )


def _volume(name: str, spec: str) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Volume\n"
        f"metadata: {{name: {name}, labels: {{{LABEL}}}}}\nspec: {{pool: {POOL}, {spec}}}\n"
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
    # The daemon is shared: the prune is narrowed to this module's objects.
    pruned = vr(
        "apply",
        manifests,
        "-c",
        system_uri,
        "--prune",
        "--force-prune",
        "-l",
        LABEL.replace(": ", "="),
    )
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "not deleted: in use by volume vrt-g-images/vrt-g-web-1.qcow2" in pruned.stdout
    assert "vrt-g-base.qcow2" in [v.name() for v in pool.listAllVolumes()]


def _secret_doc(name: str, private: bool) -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Secret\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{usage: {{ceph: {name}}}, value: {{file: db.key}}, "
        f"private: {str(private).lower()}}}\n"
    )


@pytest.fixture
def secrets_cleanup(conn: libvirt.virConnect) -> Iterator[list[str]]:
    """Names of the secrets a test makes; they are undefined afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(libvirt.libvirtError):
            conn.secretLookupByUUIDString(secret_uuid(name)).undefine()


def test_secret_from_a_file_drift_reset_and_the_value_in_no_output(
    system_uri: str, scratch_dir: Path, conn: libvirt.virConnect, secrets_cleanup: list[str]
) -> None:
    value, value2 = f"vrt-{secrets.token_hex(16)}", f"vrt-{secrets.token_hex(16)}"
    manifests = scratch_dir / "manifests"
    manifests.mkdir()
    (manifests / "db.key").write_text(value)
    secrets_cleanup += ["vrt-g-open", "vrt-g-priv"]
    (manifests / "secrets.yaml").write_text(
        "---\n".join([_secret_doc("vrt-g-open", False), _secret_doc("vrt-g-priv", True)])
    )
    outputs: list[str] = []

    def cli(*argv: object) -> subprocess.CompletedProcess[str]:
        result = vr(*argv)
        outputs.append(result.stdout + result.stderr)
        return result

    assert cli("apply", manifests, "-c", system_uri).returncode == 0, outputs[-1]
    assert cli("plan", manifests, "-c", system_uri, "--detailed-exitcode").returncode == 0, outputs[
        -1
    ]
    opened = conn.secretLookupByUUIDString(secret_uuid("vrt-g-open"))
    assert bytes(opened.value(0)) == value.encode()
    assert "<description>vrt-g-priv</description>" in conn.secretLookupByUUIDString(
        secret_uuid("vrt-g-priv")
    ).XMLDesc(0)

    # Changed on the host: seen through the digest, reset by apply.
    opened.setValue(b"changed-outside", 0)
    drift = cli("plan", manifests, "-c", system_uri, "-o", "json")
    actions = {a["name"]: a for a in json.loads(drift.stdout)["hosts"][0]["actions"]}
    [change] = actions["vrt-g-open"]["changes"]
    assert change["path"] == "value" and change["old"].startswith("differs")
    assert actions["vrt-g-priv"]["action"] == "unchanged"
    assert "private" in actions["vrt-g-priv"]["note"]
    assert cli("apply", manifests, "-c", system_uri).returncode == 0, outputs[-1]
    assert bytes(opened.value(0)) == value.encode()

    # A new value in the file: both secrets get it, the private one too.
    (manifests / "db.key").write_text(value2)
    changed = cli("plan", manifests, "-c", system_uri, "-o", "json")
    actions = {a["name"]: a for a in json.loads(changed.stdout)["hosts"][0]["actions"]}
    assert actions["vrt-g-priv"]["changes"][0]["old"] == (
        "the manifest's value changed since it was set"
    )
    assert cli("apply", manifests, "-c", system_uri).returncode == 0, outputs[-1]
    assert bytes(opened.value(0)) == value2.encode()
    assert cli("plan", manifests, "-c", system_uri, "--detailed-exitcode").returncode == 0, outputs[
        -1
    ]
    cli("status", manifests, "-c", system_uri)
    cli("status", manifests, "-c", system_uri, "-o", "json")

    # Export writes the secret without its value and says where it goes.
    exported = scratch_dir / "exported"
    result = cli(
        "export", "-c", system_uri, "--kind", "Secret", "--name", "vrt-g-open", "-d", exported
    )
    assert result.returncode == 0, outputs[-1]
    assert "vrt-g-open: its value is not exported; put it in" in result.stdout
    [document] = list(exported.rglob("*.yaml"))
    text = document.read_text()
    assert "value:\n    file: vrt-g-open.value" in text and "usage:" in text
    outputs.append(text)
    for output in outputs:
        assert value not in output and value2 not in output


def test_luks_volumes_with_a_secret_from_a_file_and_a_guest_disk_on_one(
    system_uri: str, scratch_dir: Path, conn: libvirt.virConnect, secrets_cleanup: list[str]
) -> None:
    passphrase = f"vrt-{secrets.token_hex(16)}"
    manifests = scratch_dir / "manifests"
    manifests.mkdir()
    (manifests / "db.key").write_text(passphrase)
    pool_dir = scratch_dir / "pool"
    secrets_cleanup += ["vrt-g-luks-q", "vrt-g-luks-r"]
    docs = [_pool_doc(pool_dir)]
    for secret, volume, fmt in (
        ("vrt-g-luks-q", "vrt-g-db.qcow2", "qcow2"),
        ("vrt-g-luks-r", "vrt-g-db.raw", "raw"),
    ):
        docs.append(
            "apiVersion: virt-reconcile/v1\nkind: Secret\n"
            f"metadata: {{name: {secret}}}\n"
            f"spec: {{usage: {{volume: {pool_dir / volume}}}, value: {{file: db.key}}}}\n"
        )
        docs.append(
            _volume(
                volume,
                f"format: {fmt}, capacity: 16MiB, encryption: {{format: luks, secret: {secret}}}",
            )
        )
    docs.append(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: vrt-g-db}\n"
        "spec:\n  memory: 64MiB\n  disks:\n"
        f"    - {{target: vda, format: qcow2, source: {{volume: {{pool: {POOL}, "
        "name: vrt-g-db.qcow2}}}\n"
    )
    (manifests / "all.yaml").write_text("---\n".join(docs))
    outputs = []
    result = vr("apply", manifests, "-c", system_uri)
    outputs.append(result.stdout + result.stderr)
    assert result.returncode == 0, outputs[-1]
    again = vr("plan", manifests, "-c", system_uri, "--detailed-exitcode")
    outputs.append(again.stdout + again.stderr)
    assert again.returncode == 0, outputs[-1]
    pool = conn.storagePoolLookupByName(POOL)
    for volume in ("vrt-g-db.qcow2", "vrt-g-db.raw"):
        path = pool.storageVolLookupByName(volume).path()
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(info)["encrypted"] is True, info
    disk = conn.lookupByName("vrt-g-db").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<encryption format='luks'" in disk
    assert f"<secret type='passphrase' uuid='{secret_uuid('vrt-g-luks-q')}'/>" in disk
    for output in outputs:
        assert passphrase not in output
