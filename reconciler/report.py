"""Plans and change sets as plain data (``-o json``) and as text lines (pure).

The JSON document is a stable contract (README, `-o json`): fields may be added, never
renamed. ``cli`` prints what these functions return.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lxml import etree

from reconciler import errors, ownership
from reconciler.execute import Result
from reconciler.model import Manifest
from reconciler.placement import Placement
from reconciler.plan import Action, ActionType, Disruption, HostPlan
from reconciler.uris import redact_uri

if TYPE_CHECKING:
    from reconciler import status

JSON_VERSION = 1
SYMBOLS = {
    ActionType.CREATE: "+",
    ActionType.UPDATE: "~",
    ActionType.DELETE: "-",
    ActionType.ADOPT: ">",
    ActionType.UNCHANGED: "=",
    ActionType.PENDING_RESTART: "!",
}


def action_json(action: Action, result: Result | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": action.kind.value,
        "name": action.name,
        "action": action.type.value,
        "source": action.source,
        "disruption": action.disruption.value if action.disruption else None,
        "changes": [
            {
                "path": c.path,
                "old": c.old,
                "new": c.new,
                "disruption": c.disruption.value,
                "field": c.field,
                "display": {"old": c.display[0], "new": c.display[1]},
            }
            for c in action.changes
        ],
    }
    if action.pool is not None:
        data["pool"] = action.pool
    if action.blast_radius:
        data["blastRadius"] = list(action.blast_radius)
    if action.note:
        data["note"] = action.note
    if action.placement is not None:
        data["placement"] = placement_json(action.placement)
    if action.orphan is not None:
        # Argo CD's "requires pruning": what --prune does (or did) with it.
        data["orphan"] = {
            "requiresPruning": action.type is not ActionType.DELETE,
            "prune": "delete" if action.orphan.delete else "keep",
            "reason": action.orphan.reason,
        }
    if result is not None:
        data["result"] = result.result
        data["error"] = result.error
        data["calls"] = dict(sorted(result.calls.items()))
    elif action.error is not None:
        data["error"] = action.error
    return data


def disruptive(plans: Mapping[str, HostPlan]) -> list[tuple[str, Action, str]]:
    """(host, action, what) for each action that deletes, replaces or restarts something."""
    out = []
    for host, hp in plans.items():
        for a in hp.actions:
            labels = {s.label for s in a.steps}
            if a.error is not None:
                continue
            if a.type is ActionType.DELETE:
                out.append((host, a, "delete"))
            elif a.disruption is Disruption.REPLACE or "vol_delete" in labels:
                out.append((host, a, "replace"))
            elif "dom_restart" in labels or any(
                {f"{k}_stop", f"{k}_start"} <= labels for k in ("net", "pool")
            ):
                out.append((host, a, "restart"))
    return out


def restart_text(pending: Mapping[str, Sequence[Action]]) -> str:
    """ "2 domains wait for a restart (a, b)"; objects of other kinds by reference."""
    actions = [a for actions in pending.values() for a in actions]
    domains = all(a.kind.value == "Domain" for a in actions)
    names = ", ".join(a.name if domains else a.ref for a in actions)
    what = "domain" if domains else "object"
    plural = "s wait" if len(actions) != 1 else " waits"
    return f"{len(actions)} {what}{plural} for a restart ({names})"


def errors_json(problems: Sequence[errors.Problem | str]) -> dict[str, Any]:
    """``{"version": 1, "errors": [{file, line, path, message}]}``: what ``-o json``
    prints on stdout when the input is invalid (``file``/``line``/``path`` are
    null for an error that belongs to no manifest field, e.g. a bad ``-c``)."""
    return {
        "version": JSON_VERSION,
        "errors": [
            {"file": p.file, "line": p.line, "path": p.path, "message": p.message}
            if isinstance(p, errors.Problem)
            else {"file": None, "line": None, "path": None, "message": p}
            for p in problems
        ],
    }


def placement_json(p: Placement) -> dict[str, Any]:
    """Where a placed domain goes (``host``), why (``reason``), and why not elsewhere."""
    return {
        "host": p.host,
        "candidates": list(p.candidates),
        "reason": p.reason,
        "skipped": dict(p.skipped),
        "fallbacks": list(p.fallbacks),
        "pending": p.pending,
    }


def unplaced_text(ref: str, p: Placement) -> str:
    """Why a placed domain is in no host's plan of this run."""
    if not p.host:
        outside = ", ".join(p.skipped) or "some"
        return (
            f"{ref} is not placed yet and its candidate host(s) {outside} are not in this "
            "run (--host): left alone; run with all its candidates to place it"
        )
    return f"{ref} is placed on host {p.host}, which is not in this run (--host): left alone"


def unplaced_json(unplaced: Sequence[tuple[Manifest, Placement]]) -> list[dict[str, Any]]:
    return [
        {
            "kind": m.kind.value,
            "name": m.name,
            "source": str(m.source),
            "note": unplaced_text(f"{m.kind.value}/{m.name}", p),
            "placement": placement_json(p),
        }
        for m, p in unplaced
    ]


def placement_text(p: Placement) -> str:
    skipped = "; ".join(f"{h}: {why}" for h, why in p.skipped.items())
    return f"placement: host {p.host} ({p.reason})" + (f"; skipped {skipped}" if skipped else "")


def summary(
    plans: Mapping[str, HostPlan], results: Mapping[str, Sequence[Result]] | None = None
) -> dict[str, int]:
    counts = {t.value: 0 for t in ActionType if t is not ActionType.PENDING_RESTART}
    counts["pending-restart"] = 0
    failed = orphans = 0
    for hp in plans.values():
        for a in hp.actions:
            if a.error is None:
                counts[a.type.value] += 1
            orphans += a.orphan is not None and a.type is not ActionType.DELETE
        if results is None:
            failed += sum(1 for a in hp.actions if a.error is not None)
    if results is not None:
        failed = sum(1 for rs in results.values() for r in rs if r.result == "failed")
    counts["failed"] = failed
    counts["orphan"] = orphans  # counted in "unchanged" too: requires pruning
    return counts


def plan_json(
    plans: Mapping[str, HostPlan],
    results: Mapping[str, Sequence[Result]] | None = None,
    *,
    converged: bool | None = None,
    unplaced: Sequence[tuple[Manifest, Placement]] = (),
    pending_restart: Mapping[str, Sequence[Action]] | None = None,
) -> dict[str, Any]:
    hosts = []
    for name, hp in plans.items():
        by_action = {id(r.action): r for r in (results or {}).get(name, ())}
        hosts.append(
            {
                "host": name,
                "uri": redact_uri(hp.host.uri),
                "reachable": hp.reachable,
                "error": hp.error,
                "actions": [
                    action_json(a, by_action.get(id(a)) if results is not None else None)
                    for a in hp.actions
                ],
            }
        )
    doc: dict[str, Any] = {
        "version": JSON_VERSION,
        "hosts": hosts,
        "summary": summary(plans, results),
    }
    if converged is not None:
        doc["converged"] = converged
    if pending_restart is not None:
        # After an apply: what waits for a restart (converged or not).
        doc["pendingRestart"] = [
            {"host": host, "kind": a.kind.value, "name": a.name}
            for host, actions in pending_restart.items()
            for a in actions
        ]
    # Placed domains no host of this run plans (--host left their candidates out).
    doc["notPlaced"] = unplaced_json(unplaced)
    return doc


def status_json(statuses: Sequence[status.HostStatus]) -> dict[str, Any]:
    """The ``status -o json`` document (same versioning rules as the plan document)."""
    from reconciler import status  # here: plan and apply print no status

    return {
        "version": JSON_VERSION,
        "hosts": [
            {
                "host": hs.host,
                "uri": redact_uri(hs.uri),
                "reachable": hs.reachable,
                "error": hs.error,
                "revision": hs.revision,
                "objects": [
                    {
                        "kind": o.kind.value,
                        "name": o.name,
                        "pool": o.pool,
                        "source": o.source,
                        "sync": o.sync.value,
                        "reason": o.reason,
                        "power": o.power,
                        "powerReason": o.power_reason or None,
                        "healthy": o.healthy,
                    }
                    for o in hs.objects
                ],
            }
            for hs in statuses
        ],
        "summary": status.summary(statuses),
    }


def xml_diff(before: str | None, after: str | None) -> list[str]:
    """A unified diff of two XML documents without the ownership record (lines
    without trailing newlines)."""
    if before is None or after is None or before == after:
        return []
    before, after = _without_record(before), _without_record(after)
    return list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "live", "desired", n=2, lineterm=""
        )
    )


def xml_edits(before: str | None, after: str | None) -> list[str]:
    """The edits that turn one document into the other, each addressed by an XPath
    (``xmldiff``): what an overlay or ``ignoreDifferences`` would name."""
    if before is None or after is None or before == after:
        return []
    from xmldiff import formatting as xmldiff_formatting  # on first use (-v)
    from xmldiff import main as xmldiff_main

    text = xmldiff_main.diff_texts(
        _without_record(before).encode(),
        _without_record(after).encode(),
        formatter=xmldiff_formatting.DiffFormatter(normalize=xmldiff_formatting.WS_BOTH),
    )
    return [line for line in str(text).splitlines() if line]


def _without_record(xml: str) -> str:
    """A document as shown to people: the ownership record is ours, not a change."""
    root = etree.fromstring(xml.encode())
    ownership.write_record(root, None)
    metadata = root.find("metadata")
    if metadata is not None and len(metadata) == 0:
        root.remove(metadata)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def short(value: str | None, limit: int = 120) -> str:
    if value is None:
        return "(absent)"
    text = value if value != "" else '""'
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- saved plans (``plan --out``, ``apply --plan``) --------------------------------

SAVED_PLAN_FORMAT = "virt-reconcile/plan"
SAVED_PLAN_VERSION = 1


def saved_plan(plans: Mapping[str, HostPlan], digest: str) -> dict[str, Any]:
    """What a reviewed plan pins: the manifests' hash and, per host and object,
    the action and its field changes (objects left alone are not listed)."""
    return {
        "format": SAVED_PLAN_FORMAT,
        "version": SAVED_PLAN_VERSION,
        "manifests": {"sha256": digest},
        "hosts": {
            name: {
                "uri": redact_uri(hp.host.uri),
                "actions": {
                    a.ref: {
                        "action": a.type.value,
                        "changes": [
                            {
                                "path": c.path,
                                "old": c.old,
                                "new": c.new,
                                "field": c.field,
                                "display": {"old": c.display[0], "new": c.display[1]},
                            }
                            for c in a.changes
                        ],
                    }
                    for a in hp.actions
                    if a.type.is_change
                },
            }
            for name, hp in plans.items()
        },
    }


def read_saved_plan(text: str) -> dict[str, Any]:
    """A saved plan's document; ValueError when it is not one this version reads."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not a saved plan (invalid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SAVED_PLAN_FORMAT:
        raise ValueError(f'not a saved plan (no "format": "{SAVED_PLAN_FORMAT}")')
    if doc.get("version") != SAVED_PLAN_VERSION:
        raise ValueError(
            f"saved plan version {doc.get('version')!r}: this virt-reconcile reads version "
            f"{SAVED_PLAN_VERSION}"
        )
    if not isinstance(doc.get("hosts"), dict) or not isinstance(doc.get("manifests"), dict):
        raise ValueError('not a saved plan (no "hosts" or "manifests")')
    return doc


def plan_differences(saved: Mapping[str, Any], fresh: Mapping[str, Any]) -> list[str]:
    """How a fresh plan differs from a saved one, one line per difference (pure)."""
    lines = []
    was, now = saved["manifests"].get("sha256"), fresh["manifests"].get("sha256")
    if was != now:
        lines.append(
            f"manifests changed since the plan was saved (sha256 {str(was)[:12]} → {str(now)[:12]})"
        )
    for host in sorted(set(saved["hosts"]) | set(fresh["hosts"])):
        old = saved["hosts"].get(host, {}).get("actions", {})
        new = fresh["hosts"].get(host, {}).get("actions", {})
        for ref in sorted(set(old) | set(new)):
            a, b = old.get(ref), new.get(ref)
            if a == b:
                continue
            if a is None or b is None:
                planned = f"planned {a['action']}" if a else "not in the saved plan"
                lines.append(f"{host}: {ref}: {planned}, now {b['action'] if b else 'nothing'}")
                continue
            if a["action"] != b["action"]:
                lines.append(f"{host}: {ref}: planned {a['action']}, now {b['action']}")
            before = {c["path"]: c for c in a["changes"]}
            after = {c["path"]: c for c in b["changes"]}
            for path in sorted(set(before) | set(after)):
                c, d = before.get(path), after.get(path)
                if c == d:
                    continue
                label = (c or d or {}).get("field") or path
                lines.append(
                    f"{host}: {ref}: {label}: planned {_change_text(c)}, now {_change_text(d)}"
                )
    return lines


def _change_text(change: Mapping[str, Any] | None) -> str:
    if change is None:
        return "no change"
    shown = change.get("display") or change
    return f"{short(shown['old'], 60)} → {short(shown['new'], 60)}"
