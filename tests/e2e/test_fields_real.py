"""The friendly fields on the real qemu driver (qemu:///system): the broadened
surface of ``render.domain.FIELDS`` (golden case ``domain-extras``) is accepted
with validation, converges (nothing libvirt fills in reads as drift) and exports
back to the same friendly fields without an overlay for them. Defined, never
started: a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.testbed.cli import vr

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "render" / "domain-extras.yaml"
NAME = "vrt-fields-extras"


def test_broadened_domain_fields_are_accepted_converge_and_export(
    system_uri: str, tmp_path: Path
) -> None:
    doc = yaml.safe_load(GOLDEN.read_text())
    doc["metadata"]["name"] = NAME
    spec = doc["spec"]
    # No network "default" on every host: a bridge needs nothing defined.
    spec["interfaces"] = [{"bridge": "vrtbr0", "model": "virtio", "bootOrder": 2}]
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "extras.yaml").write_text(yaml.safe_dump(doc))

    applied = vr("apply", folder, "-c", system_uri, "-o", "json", "--lock-timeout", "300")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert json.loads(applied.stdout)["summary"]["create"] == 1
    again = vr("plan", folder, "-c", system_uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr

    out = tmp_path / "export"
    exported = vr("export", "-c", system_uri, "--kind", "Domain", "--name", NAME, "-d", out)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    [path] = list(out.rglob(f"{NAME}.yaml"))
    got = yaml.safe_load(path.read_text())["spec"]
    for key in ("title", "description", "memoryBacking", "cputune", "numatune", "cpu",
                "filesystems", "channels", "tpm", "sound", "video", "hostdevs", "watchdog",
                "rng", "disks"):  # fmt: skip
        assert got[key] == spec[key], key
    # Export writes the MAC render derived.
    assert [{k: v for k, v in n.items() if k != "mac"} for n in got["interfaces"]] == spec[
        "interfaces"
    ]
    # What stays in the overlay is libvirt's own (controllers, addresses, serial).
    overlay = got.get("xml", "")
    for tag in ("<tpm", "<filesystem", "<hostdev", "<watchdog", "<rng", "<channel"):
        assert tag not in overlay, (tag, overlay)


def test_broadened_network_and_pool_fields_are_accepted_converge_and_export(
    system_uri: str, tmp_path: Path
) -> None:
    """Network DNS forwarders, IPv6, port groups and an iscsi pool's source:
    defined (not started: no bridge, no iSCSI login), converged, exported back."""
    render = GOLDEN.parent
    docs = []
    for case, name in (("network-extras", "vrt-fields-net"), ("pool-iscsi", "vrt-fields-san")):
        doc = yaml.safe_load((render / f"{case}.yaml").read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["state"] = "inactive"
        docs.append(doc)
    docs[0]["spec"]["bridge"] = "vrtfields0"
    # A <vlan> needs a network type with VLANs (openvswitch, hostdev): not NAT.
    for group in docs[0]["spec"]["portgroups"]:
        group.pop("vlan", None)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "extras.yaml").write_text(yaml.safe_dump_all(docs))
    applied = vr("apply", folder, "-c", system_uri, "-o", "json", "--lock-timeout", "300")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = vr("plan", folder, "-c", system_uri, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    for doc in docs:
        out = tmp_path / doc["metadata"]["name"]
        exported = vr("export", "-c", system_uri, "--name", doc["metadata"]["name"], "-d", out)
        assert exported.returncode == 0, exported.stdout + exported.stderr
        [path] = list(out.rglob(f"{doc['metadata']['name']}.yaml"))
        got = yaml.safe_load(path.read_text())["spec"]
        want = {k: v for k, v in doc["spec"].items() if k not in ("state",)}
        assert {k: got[k] for k in want} == want
        # The overlay keeps only what libvirt added (a bridge's stp, a MAC).
        for tag in ("<ip", "<dns", "<portgroup", "<source", "<initiator"):
            assert tag not in got.get("xml", ""), (tag, got["xml"])
