"""The volume planner with ``spec.source``: the steps of a create, and a volume
whose upload never finished (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler import ownership
from reconciler.actions import ActionType, Options
from reconciler.kinds import KINDS, Context
from reconciler.kinds.volume import source_fingerprint
from reconciler.model import Host, Kind, Manifest, Source
from reconciler.observed import Observed
from reconciler.steps import CloneVolume, DeleteVolume, RegistrySet, UploadVolume

pytestmark = pytest.mark.unit

HOST = Host(name="h", uri="test:///x")
SPEC = {"pool": "p", "format": "qcow2", "source": {"file": "img/base.qcow2", "sha256": "a" * 64}}
VOLUME_XML = (
    "<volume><name>v</name><capacity unit='bytes'>1048576</capacity>"
    "<target><path>/p/v</path><format type='qcow2'/></target></volume>"
)


def _context(registry: ownership.Registry) -> Context:
    return Context(
        host=HOST,
        options=Options(),
        registry=registry,
        network_users={},
        volume_users={},
        running_domains=frozenset(),
    )


def _manifest(spec: dict[str, object]) -> Manifest:
    return Manifest(
        kind=Kind.VOLUME, name="v", spec=spec, source=Source(file="/m/vols.yaml", line=1)
    )


def test_create_records_uploading_until_the_upload_is_done() -> None:
    m = _manifest(SPEC)
    h = KINDS[Kind.VOLUME]
    action = h.plan(m, h.render(m.name, m.spec), None, _context(ownership.Registry()))
    first, upload, last = action.steps
    assert isinstance(first, RegistrySet) and first.record is not None
    assert first.record.uploading
    assert isinstance(upload, UploadVolume)
    # Relative to the manifest's file; the checksum goes with it.
    assert upload.file == "/m/img/base.qcow2" and upload.sha256 == "a" * 64
    assert "<capacity" not in upload.xml
    assert isinstance(last, RegistrySet) and last.record is not None
    assert not last.record.uploading and last.record.source == source_fingerprint(SPEC)


def test_clone_step_names_the_original() -> None:
    m = _manifest({"pool": "p", "source": {"volume": {"pool": "t", "name": "gold"}}})
    h = KINDS[Kind.VOLUME]
    action = h.plan(m, h.render(m.name, m.spec), None, _context(ownership.Registry()))
    [clone] = [s for s in action.steps if isinstance(s, CloneVolume)]
    assert (clone.pool, clone.from_pool, clone.from_name) == ("p", "t", "gold")


def test_a_volume_whose_upload_never_finished_is_created_again() -> None:
    m = _manifest(SPEC)
    h = KINDS[Kind.VOLUME]
    record = ownership.Record(source=source_fingerprint(SPEC), uploading=True, host="h")
    registry = ownership.Registry(volumes={"p/v": record})
    obs = Observed(kind=Kind.VOLUME, name="v", pool="p", xml=VOLUME_XML, record=record)
    action = h.plan(m, h.render(m.name, m.spec), obs, _context(registry))
    assert action.type is ActionType.UPDATE and action.error is None
    assert isinstance(action.steps[0], DeleteVolume)
    assert any(isinstance(s, UploadVolume) for s in action.steps)
    # Once done, the same volume is converged.
    done = dataclasses.replace(record, uploading=False, applied=frozenset(["target/format/@type"]))
    registry = ownership.Registry(volumes={"p/v": done})
    again = h.plan(
        m, h.render(m.name, m.spec), dataclasses.replace(obs, record=done), _context(registry)
    )
    assert again.type is not ActionType.CREATE
    assert not any(isinstance(s, UploadVolume | DeleteVolume) for s in again.steps)
