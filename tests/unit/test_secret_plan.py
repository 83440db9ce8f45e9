"""Secrets in a host plan (pure): an in-use secret is never pruned."""

from __future__ import annotations

import pytest

from reconciler import ownership, plan
from reconciler.actions import ActionType, Options
from reconciler.model import Host, Kind
from reconciler.observed import HostState, Observed
from reconciler.render.secret import secret_uuid

pytestmark = pytest.mark.unit

HOST = Host(name="h", uri="test:///x")
UUID = secret_uuid("db-luks")
SECRET_XML = (
    f"<secret ephemeral='no' private='yes'><uuid>{UUID}</uuid><description>db-luks</description>"
    "<usage type='volume'><volume>/p/db.qcow2</volume></usage></secret>"
)
VOLUME_XML = (
    "<volume><name>db.qcow2</name><capacity unit='bytes'>1048576</capacity><target>"
    "<path>/p/db.qcow2</path><format type='qcow2'/><encryption format='luks'>"
    f"<secret type='passphrase' uuid='{UUID}'/></encryption></target></volume>"
)


def _state(*, volume_prunable: bool) -> HostState:
    record = ownership.Record(managed=True, prune=True, host="h")
    registry = ownership.Registry(
        secrets={"db-luks": record},
        volumes={"p/db.qcow2": ownership.Record(managed=True, prune=volume_prunable, host="h")},
    )
    objects = [
        Observed(kind=Kind.SECRET, name="db-luks", uuid=UUID, xml=SECRET_XML, record=record),
        Observed(kind=Kind.VOLUME, name="db.qcow2", pool="p", xml=VOLUME_XML),
    ]
    return HostState(host=HOST, objects={o.key: o for o in objects}, registry=registry)


def test_a_secret_an_encrypted_volume_uses_is_not_pruned() -> None:
    options = Options(prune=True, force_prune=True)
    hp = plan.build_host_plan([], _state(volume_prunable=False), options)
    [secret] = [a for a in hp.actions if a.kind is Kind.SECRET]
    assert secret.type is ActionType.UNCHANGED and not secret.steps
    assert secret.note == "not deleted: in use by Volume/p/db.qcow2"
    # Both go in one run: the volume first, then its secret.
    hp = plan.build_host_plan([], _state(volume_prunable=True), options)
    assert [(a.kind, a.type) for a in hp.actions] == [
        (Kind.VOLUME, ActionType.DELETE),
        (Kind.SECRET, ActionType.DELETE),
    ]
