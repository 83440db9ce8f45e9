"""Stage 7 of the pipeline: run a host's planned actions, return a change set.

The executor decides nothing: it runs each action's steps in order through a
``hosts.Session`` and records, per action, the result and the mutating libvirt
calls it made. An action that fails is reported with the object's identity
and the host; the others on the host still run (a failed pool makes its
volumes fail on their own).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from reconciler import errors
from reconciler.hosts import Session
from reconciler.plan import Action, HostPlan


@dataclass(frozen=True, kw_only=True)
class Result:
    """What happened to one action: ``ok``, ``failed`` or ``skipped``."""

    action: Action
    result: str
    error: str | None = None
    calls: dict[str, int] = field(default_factory=dict)


def execute_host(session: Session, host_plan: HostPlan) -> list[Result]:
    """Run every action of one host's plan, in order."""
    results: list[Result] = []
    for action in host_plan.actions:
        if action.error is not None:
            results.append(Result(action=action, result="failed", error=action.error))
            continue
        if not action.steps:
            results.append(Result(action=action, result="ok"))
            continue
        before = collections.Counter(session.calls)
        error = None
        try:
            for step in action.steps:
                session.run(step, action)
        except errors.ReconcileError as e:
            error = str(e)
        calls = dict(session.calls - before)
        results.append(
            Result(action=action, result="failed" if error else "ok", error=error, calls=calls)
        )
    return results
