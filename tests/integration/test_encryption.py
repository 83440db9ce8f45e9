"""Encrypted volumes: the volume's and the guest disk's ``<encryption>`` name
the Secret by its UUID; the secret is created first."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

from reconciler import manifests, render
from reconciler.model import Kind
from reconciler.render.secret import secret_uuid
from tests.integration.conftest import Run

DOCS = """\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: db-1}}
spec:
  memory: 64MiB
  disks:
    - {{target: vda, format: qcow2, source: {{volume: {{pool: vms, name: db-1-data.qcow2}}}}}}
---
apiVersion: virt-reconcile/v1
kind: Volume
metadata: {{name: db-1-data.qcow2}}
spec:
  pool: vms
  format: qcow2
  capacity: 16MiB
  encryption: {{format: luks, secret: db-1-luks}}
---
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {{name: vms}}
spec: {{type: dir, target: {target}}}
---
apiVersion: virt-reconcile/v1
kind: Secret
metadata: {{name: db-1-luks}}
spec:
  usage: {usage}
  value: {{file: db-1.key}}
"""


def _write(tmp_path: Path, usage: str = "") -> Path:
    target = tmp_path / "pool"
    usage = usage or f"{{volume: {target}/db-1-data.qcow2}}"
    (tmp_path / "db-1.key").write_text("correct horse battery staple")
    (tmp_path / "db.yaml").write_text(DOCS.format(target=target, usage=usage))
    return tmp_path / "db.yaml"


def test_volume_and_disk_encryption_name_the_secret(tmp_path: Path) -> None:
    loaded = manifests.load([str(_write(tmp_path))])
    by_kind = {m.kind: m for m in loaded.objects}
    uuid = secret_uuid("db-1-luks")
    volume = render.render(by_kind[Kind.VOLUME])
    enc = volume.find("target/encryption")
    assert enc is not None and enc.get("format") == "luks"
    assert (
        etree.tostring(enc.find("secret"))
        .decode()
        .startswith(f'<secret type="passphrase" uuid="{uuid}"/>')
    )
    domain = render.render(by_kind[Kind.DOMAIN])
    disk_enc = domain.find("devices/disk/source/encryption")
    assert disk_enc is not None and disk_enc.get("format") == "luks"
    assert disk_enc.find("secret").get("uuid") == uuid  # type: ignore[union-attr]
    secret = render.render(by_kind[Kind.SECRET])
    assert secret.findtext("uuid") == uuid
    assert secret.find("usage").get("type") == "volume"  # type: ignore[union-attr]


def test_plan_orders_secret_pool_volume_domain(tmp_path: Path, host_uri: str, run: Run) -> None:
    path = _write(tmp_path)
    code, out, err = run("plan", path, "-c", host_uri, "-o", "json")
    assert code == 0, out + err
    kinds = [a["kind"] for a in json.loads(out)["hosts"][0]["actions"]]
    assert kinds == ["Secret", "StoragePool", "Volume", "Domain"]


def test_a_volume_secret_needs_a_volume_usage(tmp_path: Path, run: Run) -> None:
    path = _write(tmp_path, usage="{ceph: client.db}")
    code, out, err = run("validate", path)
    assert code == 1
    assert f"{path}:16: spec.encryption.secret: Secret 'db-1-luks' has usage ceph" in out + err


def test_an_encrypted_volume_needs_its_secret(tmp_path: Path, host_uri: str, run: Run) -> None:
    path = _write(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("---\napiVersion: virt-reconcile/v1\nkind: Secret")])
    code, out, _err = run("plan", path, "-c", host_uri)
    assert code == 1
    assert "spec.encryption.secret: secret 'db-1-luks' does not exist on host" in out
