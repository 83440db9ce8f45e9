"""Exported manifests point editors at the combined schema written beside them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from reconciler import schema
from tests.integration.conftest import Run


def test_export_writes_the_schema_and_a_modeline_in_every_manifest(
    corpus_uri: str, tmp_path: Path, run: Run
) -> None:
    out = tmp_path / "exported"
    code, _, err = run("export", "-c", corpus_uri, "-d", str(out))
    assert code == 0, err
    written = json.loads((out / schema.FILE_NAME).read_text())
    assert written == schema.combined()
    validator = jsonschema.Draft202012Validator(written)
    files = sorted(out.rglob("*.yaml"))
    assert len(files) > 20
    kinds = set()
    for f in files:
        first, rest = f.read_text().split("\n", 1)
        assert first.startswith("# yaml-language-server: $schema="), f
        target = (f.parent / first.split("=", 1)[1]).resolve()
        assert target == (out / schema.FILE_NAME).resolve(), f
        doc = yaml.safe_load(rest)
        kinds.add(doc["kind"])
        assert list(validator.iter_errors(doc)) == [], f
    assert kinds == {"Domain", "Network", "StoragePool", "Volume"}
    # The modeline is a comment: the export still reads back as manifests.
    code, _, err = run("validate", str(out))
    assert code == 0, err
