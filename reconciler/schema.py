"""Editors: one JSON Schema for every kind (``virt-reconcile schema``), and the modeline
that points a YAML file at it (yaml-language-server's ``# yaml-language-server: $schema=``).

The per-kind schemas in ``reconciler/schemas/`` stay the authority for validation;
this module only combines them: each kind's schema under ``$defs/<Kind>`` (its own
``$defs`` references rewritten to that place), chosen by ``kind`` with ``if``/``then``
so an editor completes and checks the fields of the kind a document names.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import manifests
from reconciler.model import Kind

SCHEMA_ID = "https://virt-reconcile.dev/schemas/v1/virt-reconcile.schema.json"
FILE_NAME = "virt-reconcile.schema.json"  # written beside exported manifests
MODELINE = "# yaml-language-server: $schema="


def combined() -> dict[str, Any]:
    """The combined schema (a JSON document)."""
    defs: dict[str, Any] = {}
    choices = []
    for kind in sorted(Kind, key=lambda k: k.value):
        doc = json.loads(manifests.schema_text(kind))
        for key in ("$schema", "$id"):
            doc.pop(key, None)
        defs[kind.value] = _rebase(doc, f"#/$defs/{kind.value}/$defs/")
        choices.append(
            {
                "if": {"properties": {"kind": {"const": kind.value}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{kind.value}"},
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "virt-reconcile manifest",
        "description": "One virt-reconcile document: a Domain, Network, StoragePool, Volume "
        "or Host (each YAML document of a file is checked on its own).",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {
                "const": "virt-reconcile/v1",
                "description": "Always virt-reconcile/v1.",
            },
            "kind": {
                "enum": sorted(k.value for k in Kind),
                "description": "The kind of object this document describes.",
            },
        },
        "allOf": choices,
        "$defs": defs,
    }


def text() -> str:
    return json.dumps(combined(), indent=2, ensure_ascii=False) + "\n"


def modeline(location: str) -> str:
    """The first line that makes yaml-language-server use the schema at ``location``."""
    return f"{MODELINE}{location}\n"


def _rebase(node: Any, prefix: str) -> Any:
    """``node`` with its local ``#/$defs/X`` references pointing to ``prefix + X``."""
    if isinstance(node, dict):
        out = {k: _rebase(v, prefix) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = prefix + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_rebase(v, prefix) for v in node]
    return node
