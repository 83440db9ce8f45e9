"""Secret values (``kind: Secret``, ``spec.value``): where they are read, and their keyed digest.

A value lives in a file or an environment variable, never in a manifest. It is
read only when needed (by the planner for its digest, by ``hosts`` to set it)
and kept nowhere: not in a plan, a step, a record, a log or an error message.
What is kept is an HMAC-SHA256 of it under a random key of each host's registry,
so drift can be seen without storing anything that reveals the value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

MAX_BYTES = 64 << 10


class UnreadableValue(ValueError):
    """A value that cannot be read; the message names where from, never the value."""


@dataclass(frozen=True, kw_only=True)
class ValueRef:
    """Where a secret's value is: ``file`` (an absolute path) or ``env`` (a name)."""

    file: str | None = None
    env: str | None = None

    def __str__(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"

    @classmethod
    def of(cls, value: Mapping[str, str], manifest_file: str) -> ValueRef:
        """``spec.value`` of a manifest; a relative file is relative to the manifest's file."""
        if "file" in value:
            folder = os.path.dirname(os.path.abspath(manifest_file))
            return cls(file=os.path.normpath(os.path.join(folder, value["file"])))
        return cls(env=value["env"])


def read(ref: ValueRef) -> bytes:
    """The value's bytes (a file's content as it is; an environment variable's text)."""
    if ref.file is not None:
        try:
            with open(ref.file, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise UnreadableValue(f"cannot read the value: {ref}: {e.strerror}") from None
        if len(data) > MAX_BYTES:
            raise UnreadableValue(f"the value in {ref} is larger than {MAX_BYTES // 1024} KiB")
        return data
    found = os.environ.get(str(ref.env))
    if found is None:
        raise UnreadableValue(f"cannot read the value: {ref} is not set")
    return found.encode()


def new_key() -> str:
    """A fresh per-host digest key (hex)."""
    return secrets.token_hex(32)


def digest(key: str, value: bytes) -> str:
    """The keyed digest of a value that records keep instead of it."""
    return hmac.new(bytes.fromhex(key), value, hashlib.sha256).hexdigest()
