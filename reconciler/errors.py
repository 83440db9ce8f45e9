"""Error classes shared by every stage, classified by what the caller should do.

* ``ManifestError``: the user's input is wrong; names FILE:LINE: FIELD: message.
* ``UsageError``: the command line is wrong beyond what argparse checks.
* ``HostError``: a host could not be reached or refused a call (may be temporary).
* ``ActionError``: one action on one object failed; names the object and host.
* ``ReplaceRequired``: the change cannot be made in place (needs ``--replace``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One located input error: ``FILE:LINE: FIELD.PATH: message``."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ReconcileError(Exception):
    """Base class: every error we raise on purpose."""


class ManifestError(ReconcileError):
    """Invalid input. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(ReconcileError):
    """The command line names something the manifests do not have (exit 1)."""


class HostError(ReconcileError):
    """A host is unreachable or answered with an error outside any one object."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"host {host}: {message}")


class ActionError(ReconcileError):
    """One action on one object failed."""

    def __init__(self, ref: str, host: str, message: str) -> None:
        self.ref = ref
        self.host = host
        super().__init__(f"{ref} on host {host}: {message}")


class ReplaceRequired(ReconcileError):
    """The change cannot be made in place; it needs ``--replace KIND/NAME``."""
