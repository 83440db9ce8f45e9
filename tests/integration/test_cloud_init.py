"""cloud-init seeds and the NVRAM/TPM keepState of domains on test-driver hosts:
the seed's name and disk, a content change (new seed, media swap, old seed
deleted), validation errors with FILE:LINE, and the undefine flags.

The test driver cannot receive an upload (``virStorageVolUpload``): here the
seed volume is created empty by a stand-in for the upload call, so the plan
side can be run to the end; the real upload and a guest reading the seed are
in tests/e2e/test_cloud_init_guest.py.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pycdlib
import pytest
from lxml import etree

from reconciler import cloudinit
from reconciler.hosts import api
from reconciler.hosts.calls import Calls
from reconciler.plan import Action
from reconciler.steps import UploadVolume
from tests.integration.conftest import EXAMPLES, Run

IMAGE = "debian-12-genericcloud-amd64.qcow2"

BASE = """\
apiVersion: virt-reconcile/v1
kind: StoragePool
metadata: {{name: images}}
spec: {{type: dir, target: {target}}}
---
apiVersion: virt-reconcile/v1
kind: Volume
metadata: {{name: web.qcow2}}
spec: {{pool: images, capacity: 1GiB, format: qcow2}}
"""
DOMAIN = """\
apiVersion: virt-reconcile/v1
kind: Domain
metadata: {{name: web}}
spec:
  memory: 256MiB
  disks:
    - {{target: vda, source: {{volume: {{pool: images, name: web.qcow2}}}}}}
  cloudInit:
{cloud_init}
"""


def _write(folder: Path, cloud_init: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(BASE.format(target=folder.parent / "pool"))
    (folder / "web.yaml").write_text(DOMAIN.format(cloud_init=textwrap.indent(cloud_init, "    ")))
    return folder


USER_A = "userData: |\n  #cloud-config\n  hostname: web-a\n"
USER_B = "userData: |\n  #cloud-config\n  hostname: web-b\n"


def _actions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{a['kind']}/{a['pool'] + '/' if a.get('pool') else ''}{a['name']}": a
        for a in doc["hosts"][0]["actions"]
    }


def _seed(cloud_init: str) -> str:
    """The seed volume's name for ``USER_*`` content (computed as the loader does)."""
    text = cloud_init.split("|\n", 1)[1].replace("\n  ", "\n").removeprefix("  ")
    return cloudinit.volume_name("web", cloudinit.seed_files("web", {}, text.encode()))


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Stands in for the upload the test driver lacks: creates the volume empty
    and keeps the bytes that would have gone up."""
    sent: list[bytes] = []

    def upload(self: Calls, action: Action, step: UploadVolume) -> None:
        assert step.data is not None
        sent.append(step.data)
        doc = etree.fromstring(step.xml.encode())
        etree.SubElement(doc, "capacity", unit="bytes").text = str(len(step.data))
        self.conn.storagePoolLookupByName(step.pool).createXML(
            etree.tostring(doc, encoding="unicode"), 0
        )

    monkeypatch.setattr(Calls, "_vol_upload", upload)
    return sent


def test_a_seed_is_a_volume_named_by_its_content_and_a_read_only_cdrom(
    tmp_path: Path, host_uri: str, run: Run, plan_json: Callable[..., dict[str, Any]]
) -> None:
    folder = _write(tmp_path / "m", USER_A + "metaData: {local-hostname: web}\npool: images\n")
    actions = _actions(plan_json(folder, "-c", host_uri))
    name = next(k for k in actions if "-cidata-" in k).removeprefix("Volume/images/")
    assert name.startswith("web-cidata-") and name.endswith(".iso") and len(name) == 23
    seed = actions[f"Volume/images/{name}"]
    assert seed["action"] == "create"
    assert any(c["new"] == "cloud-init seed of Domain/web" for c in seed["changes"])
    # The same content on another run (another folder) is the same seed.
    again = _actions(
        plan_json(
            _write(tmp_path / "n", USER_A + "metaData: {local-hostname: web}\n"), "-c", host_uri
        )
    )
    assert f"Volume/images/{name}" in again

    code, out, err = run("render", folder)
    assert code == 0, err
    assert f'<source pool="images" volume="{name}"/>' in out
    assert '<disk type="volume" device="cdrom">' in out and "<readonly/>" in out


def test_the_seed_holds_the_files_cloud_init_reads(tmp_path: Path) -> None:
    files = cloudinit.seed_files(
        "web",
        {"metaData": {"local-hostname": "web"}, "networkConfig": {"version": 2}},
        b"#cloud-config\nhostname: web\n",
    )
    image = cloudinit.build_iso(files)
    assert image == cloudinit.build_iso(files)  # the same bytes every time
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    assert iso.pvd.volume_identifier.rstrip() == b"cidata"
    for path_kind in ("joliet_path", "rr_path"):
        for name in ("user-data", "meta-data", "network-config"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{path_kind: f"/{name}"})
            assert out.getvalue() == files[name]
    assert b"instance-id: " + cloudinit.instance_id("web").encode() in files["meta-data"]
    iso.close()


def test_new_content_makes_a_new_seed_swaps_the_media_and_deletes_the_old_seed(
    tmp_path: Path,
    host_uri: str,
    run: Run,
    plan_json: Callable[..., dict[str, Any]],
    uploads: list[bytes],
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    folder = _write(tmp_path / "m", USER_A)
    code, out, err = run("apply", folder, "-c", host_uri, "--yes")
    assert code == 0, out + err
    old, new = _seed(USER_A), _seed(USER_B)
    assert len(uploads) == 1
    pool = conn(host_uri).storagePoolLookupByName("images")
    assert old in pool.listVolumes()
    dom = conn(host_uri).lookupByName("web")
    cdrom = etree.fromstring(dom.XMLDesc(0).encode()).find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("readonly") is not None
    assert cdrom.find("source").get("volume") == old
    assert cdrom.find("target").get("dev") == "sdf"
    assert cdrom.find("target").get("bus") == "sata"
    assert plan_json(folder, "-c", host_uri, "--detailed-exitcode")["hosts"][0]["actions"]

    _write(folder.parent / "m", USER_B)
    actions = _actions(plan_json(folder, "-c", host_uri))
    assert actions[f"Volume/images/{new}"]["action"] == "create"
    [swap] = actions["Domain/web"]["changes"]
    assert swap["field"] == "cloudInit"
    assert (swap["old"], swap["new"]) == (old, new)
    gone = actions[f"Volume/images/{old}"]
    assert gone["action"] == "delete"
    assert "old cloud-init seed of Domain/web" in gone["note"]
    # In execution order: the new seed, the swap, then the old seed goes.
    order = [
        k for k in actions if k in (f"Volume/images/{new}", "Domain/web", f"Volume/images/{old}")
    ]
    assert order == [f"Volume/images/{new}", "Domain/web", f"Volume/images/{old}"]
    code, text, _ = run("plan", folder, "-c", host_uri)
    assert f"delete Volume/images/{old}" in text and "old cloud-init seed of Domain/web" in text

    code, out, err = run("apply", folder, "-c", host_uri, "--yes")  # no --prune needed
    assert code == 0, out + err
    assert sorted(pool.listVolumes()) == sorted([new, "web.qcow2"])
    xml = conn(host_uri).lookupByName("web").XMLDesc(0)
    assert f"volume='{new}'" in xml and old not in xml
    code, out, err = run("plan", folder, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err

    # Deleting the domain (prune) deletes its seed too.
    (folder / "web.yaml").unlink()
    code, out, err = run("apply", folder, "-c", host_uri, "--yes", "--prune", "--force-prune")
    assert code == 0, out + err
    assert new not in pool.listVolumes()


@pytest.mark.parametrize(
    ("cloud_init", "field", "line", "message"),
    [
        (
            "userData: |\n  #cloud-config\n  hostname: [web\n",
            "spec.cloudInit.userData",
            9,
            "not valid YAML (line 3 of the user data)",
        ),
        ("userData: {file: missing.yaml}\n", "spec.cloudInit.userData.file", 9, "cannot read"),
        (
            "userData:\n  file: big.txt\n",
            "spec.cloudInit.userData.file",
            10,
            "big.txt is more than 10 MiB",
        ),
        ("userData: x\ntarget: vda\n", "spec.cloudInit.target", 10, "used by a disk"),
        ("userData: [x]\n", "spec.cloudInit.userData", 9, "as text or as {file: PATH}"),
    ],
)
def test_bad_seeds_are_refused_with_file_and_line(
    tmp_path: Path, host_uri: str, run: Run, cloud_init: str, field: str, line: int, message: str
) -> None:
    folder = _write(tmp_path / "m", cloud_init)
    # Random bytes do not compress: a user data file just over the limit.
    (folder / "big.txt").write_bytes(b"#!/bin/sh\n" + bytes(range(256)) * (41 << 10))
    code, _out, err = run("plan", folder, "-c", host_uri)
    assert code == 1
    assert f"{folder / 'web.yaml'}:{line}: {field}: " in err, err
    assert message in err, err


def test_a_seed_needs_a_pool_when_no_disk_is_on_a_volume(tmp_path: Path, run: Run) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "d.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: web}\n"
        "spec:\n  memory: 256MiB\n  cloudInit:\n    userData: x\n"
    )
    code, _, err = run("plan", folder, "-c", "test:///default")
    assert code == 1
    assert f"{folder / 'd.yaml'}:6: spec.cloudInit.pool: required" in err


def test_undefine_flags_keep_or_remove_nvram_and_tpm_state() -> None:
    keep = api.undefine_flags(True)[0]
    remove = api.undefine_flags(False)[0]
    assert (
        keep & libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        and keep & libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
    )
    assert not keep & (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
    assert remove & libvirt.VIR_DOMAIN_UNDEFINE_NVRAM and remove & libvirt.VIR_DOMAIN_UNDEFINE_TPM
    # Every fallback still says what happens to the NVRAM (libvirt refuses to
    # undefine a domain with NVRAM otherwise), except the last, for drivers
    # without NVRAM at all.
    for flags in api.undefine_flags(True)[:-1]:
        assert flags & libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM


def test_keep_state_goes_into_the_record_and_the_plan(
    tmp_path: Path,
    host_uri: str,
    run: Run,
    plan_json: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    doc = folder / "d.yaml"
    doc.write_text(
        "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: uefi}\n"
        "spec: {memory: 256MiB}\n"
    )
    code, out, err = run("apply", folder, "-c", host_uri, "--yes")
    assert code == 0, out + err
    doc.write_text(doc.read_text().replace("256MiB}", "256MiB, keepState: false}"))
    [action] = plan_json(folder, "-c", host_uri)["hosts"][0]["actions"]
    assert action["action"] == "update"
    assert [(c["field"], c["old"], c["new"]) for c in action["changes"]] == [
        ("keepState", "true", "false")
    ]
    code, out, err = run("apply", folder, "-c", host_uri, "--yes")
    assert code == 0, out + err
    code, out, err = run("plan", folder, "-c", host_uri, "--detailed-exitcode")
    assert code == 0, out + err
    # The deletion undefines with the NVRAM/TPM flags keepState says.
    undefined: list[bool] = []
    original = Calls._dom_undefine

    def spy(self: Calls, name: str, keep_state: bool) -> None:
        undefined.append(keep_state)
        original(self, name, keep_state)

    monkeypatch.setattr(Calls, "_dom_undefine", spy)
    doc.write_text("")
    code, out, err = run("apply", folder, "-c", host_uri, "--yes", "--prune", "--force-prune")
    assert code == 0, out + err
    assert undefined == [False]


def test_the_cloud_image_example_validates_and_plans(
    tmp_path: Path, host_uri: str, plan_json: Callable[..., dict[str, Any]]
) -> None:
    """examples/manifests/cloud-image with a small qcow2 in place of the downloaded image."""
    folder = tmp_path / "cloud-image"
    shutil.copytree(EXAMPLES / "cloud-image", folder)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(folder / IMAGE), "2G"], check=True
    )
    actions = _actions(plan_json(folder, "-c", host_uri))
    assert all(a["action"] == "create" and not a.get("error") for a in actions.values()), actions
    [seed] = [k for k in actions if k.startswith("Volume/vr-cloud/web-1-cidata-")]
    assert f"upload {IMAGE}" in json.dumps(actions[f"Volume/vr-cloud/{IMAGE}"])
    assert list(actions).index(seed) < list(actions).index("Domain/web-1")


def test_a_seed_is_in_a_run_narrowed_to_its_domain(
    tmp_path: Path, host_uri: str, plan_json: Callable[..., dict[str, Any]]
) -> None:
    folder = _write(tmp_path / "m", USER_A)
    doc = plan_json(
        folder,
        "-c",
        host_uri,
        "--target",
        "Domain/web",
        "--target",
        "StoragePool/images",
        "--target",
        "Volume/web.qcow2",
    )
    actions = _actions(doc)
    assert actions[f"Volume/images/{_seed(USER_A)}"]["action"] == "create"
    assert not actions["Domain/web"].get("error")


def test_a_domain_that_drops_cloud_init_drops_its_seed(
    tmp_path: Path,
    host_uri: str,
    run: Run,
    uploads: list[bytes],
    conn: Callable[[str], libvirt.virConnect],
) -> None:
    folder = _write(tmp_path / "m", USER_A)
    code, out, err = run("apply", folder, "-c", host_uri, "--yes")
    assert code == 0, out + err
    web = folder / "web.yaml"
    web.write_text(web.read_text().split("  cloudInit:")[0])
    code, out, err = run("apply", folder, "-c", host_uri, "--yes")
    assert code == 0, out + err
    assert f"delete Volume/images/{_seed(USER_A)}" in out
    assert conn(host_uri).storagePoolLookupByName("images").listVolumes() == ["web.qcow2"]
    assert "cdrom" not in conn(host_uri).lookupByName("web").XMLDesc(0)
