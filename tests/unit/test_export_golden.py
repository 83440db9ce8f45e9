"""Export golden pairs: exporting ``tests/data/export/<case>.xml`` (what a host
has) gives exactly ``<case>.yaml`` (the manifest). Regenerate with
``pytest --regen-golden`` and review the diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from reconciler import export
from reconciler.model import API_VERSION, Kind
from reconciler.observed import Observed

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "export"
CASES = sorted(p.stem for p in GOLDEN.glob("*.xml"))
ROOTS = {"domain": Kind.DOMAIN, "network": Kind.NETWORK, "pool": Kind.STORAGE_POOL,
         "volume": Kind.VOLUME, "secret": Kind.SECRET}  # fmt: skip


def exported(case: str) -> str:
    """The YAML manifest ``export`` writes for one case's XML (a volume lives in
    pool ``images``; domains are shut off, networks and pools inactive)."""
    xml = (GOLDEN / f"{case}.xml").read_text()
    root = etree.fromstring(xml)
    kind = ROOTS[str(root.tag)]
    name = root.findtext("name") or root.findtext("description") or ""
    obs = Observed(kind=kind, name=name, xml=xml, pool="images" if kind is Kind.VOLUME else None)
    spec, form = export.export_object(obs)
    document = {"apiVersion": API_VERSION, "kind": kind.value, "metadata": {"name": name},
                "spec": spec}  # fmt: skip
    return f"# form: {form}\n" + export.to_yaml(document)


def test_cases_cover_every_kind() -> None:
    kinds = {ROOTS[str(etree.parse(str(GOLDEN / f"{c}.xml")).getroot().tag)] for c in CASES}
    assert kinds == set(Kind) - {Kind.HOST}


@pytest.mark.parametrize("case", CASES)
def test_export_golden(case: str, regen_golden: bool) -> None:
    got = exported(case)
    expected = GOLDEN / f"{case}.yaml"
    if regen_golden:
        expected.write_text(got)
    assert got == expected.read_text()
