"""Safe parsing of user XML at validation time: no host, no DTD, no entities, no I/O."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler import cli, errors, manifests
from reconciler.render import xmlutil

pytestmark = pytest.mark.unit

HEAD = "apiVersion: virt-reconcile/v1\nkind: Domain\nmetadata: {name: d}\nspec:\n"


def overlay_file(tmp_path: Path, xml: str) -> str:
    body = "".join(f"    {line}\n" for line in xml.splitlines())
    path = tmp_path / "d.yaml"
    path.write_text(f"{HEAD}  type: test\n  memory: 64MiB\n  xml: |\n{body}", encoding="utf-8")
    return str(path)


def test_validate_refuses_a_bad_overlay_without_any_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = overlay_file(tmp_path, '<!DOCTYPE domain [<!ENTITY a "b">]>\n<domain>&a;</domain>')
    assert cli.main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert f"{path}:8: spec.xml: <!DOCTYPE> declarations are not allowed" in err


def test_overlay_over_1_mib_of_utf8_bytes_is_refused(tmp_path: Path) -> None:
    # 600,000 characters pass the schema's character limit; the bytes do not.
    path = overlay_file(
        tmp_path, "<domain><description>" + "é" * 600_000 + "</description></domain>"
    )
    with pytest.raises(errors.ManifestError) as info:
        manifests.load([path])
    (problem,) = info.value.problems
    assert problem.path == "spec.xml" and "more than the limit of 1048576" in problem.message


def test_xinclude_and_external_references_are_not_followed() -> None:
    root = xmlutil.parse_xml(
        '<domain xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<xi:include href="/etc/passwd" parse="text"/></domain>'
    )
    assert "root:" not in xmlutil.to_string(root)


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    entities = '<!ENTITY e0 "ha">' + "".join(
        f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10)
    )
    text = f"<!DOCTYPE d [{entities}]><domain>&e9;</domain>"
    start = time.monotonic()
    with pytest.raises(xmlutil.XMLInputError, match="DOCTYPE"):
        xmlutil.parse_xml(text)
    assert time.monotonic() - start < 1
