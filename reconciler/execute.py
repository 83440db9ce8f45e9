"""Stage 7 of the pipeline: run a host's planned actions, return a change set.

The executor decides nothing: it runs each action's steps in order through a
``hosts.Session`` and records, per action, the result and the mutating libvirt
calls it made. An action that fails is reported with the object's identity
and the host; the others on the host still run (a failed pool makes its
volumes fail on their own).

A new domain with several candidate hosts (``action.placement``) whose
define, autostart or start fails is rolled back: what this action defined is
stopped and undefined, so nothing is left on the host, and ``Result.rolled_back``
tells ``reconcile.Run`` it may try the next candidate.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler import errors
from reconciler.hosts import Session
from reconciler.model import Kind
from reconciler.plan import Action, ActionType, HostPlan
from reconciler.steps import Define


class Outcome(enum.StrEnum):
    """What happened to one action (``result`` in the JSON output)."""

    OK = "ok"
    FAILED = "failed"
    # A placed domain whose create failed here and was undone (another candidate tried).
    ROLLED_BACK = "rolled-back"


@dataclass(frozen=True, kw_only=True)
class Result:
    """What happened to one action."""

    action: Action
    result: Outcome
    error: str | None = None
    calls: dict[str, int] = field(default_factory=dict)
    # A failed create of a placed domain left nothing on the host.
    rolled_back: bool = False


def execute_host(
    session: Session, host_plan: HostPlan, on_result: Callable[[Result], None] | None = None
) -> list[Result]:
    """Run every action of one host's plan, in order; ``on_result`` sees each as it ends."""
    results: list[Result] = []

    def done(result: Result) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    for action in host_plan.actions:
        if action.error is not None:
            done(Result(action=action, result=Outcome.FAILED, error=action.error))
            continue
        if not action.steps:
            done(Result(action=action, result=Outcome.OK))
            continue
        before = collections.Counter(session.calls)
        error = None
        defined = False
        try:
            for step in action.steps:
                session.run(step, action)
                defined = defined or (isinstance(step, Define) and step.kind is Kind.DOMAIN)
        except errors.ReconcileError as e:
            error = str(e)
        rolled_back = False
        if error and action.placement is not None and action.type is ActionType.CREATE:
            rolled_back, error = _roll_back(session, action, error, defined=defined)
        calls = dict(session.calls - before)
        done(
            Result(
                action=action,
                result=Outcome.FAILED if error else Outcome.OK,
                error=error,
                calls=calls,
                rolled_back=rolled_back,
            )
        )
    return results


def _roll_back(session: Session, action: Action, error: str, *, defined: bool) -> tuple[bool, str]:
    """Undo a placed domain's failed create; (nothing left on the host?, error)."""
    if not defined:
        return True, error  # define itself failed: nothing to undo
    try:
        session.discard_domain(action.name)
    except errors.ReconcileError as e:
        return False, f"{error}; the rollback failed too: {e}"
    return True, f"{error} (rolled back: undefined again)"
