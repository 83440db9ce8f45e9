"""The host's registry (see ``ownership``): read by observe, changed by steps, written back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, assert_never

import libvirt

from reconciler import ownership, values
from reconciler.hosts.api import API
from reconciler.model import Kind
from reconciler.steps import Registered


class RegistryStore:
    """The registry of one host as last read or written.

    ``call`` makes a counted mutating libvirt call (``Calls.call``).
    """

    def __init__(self, conn: libvirt.virConnect, call: Callable[..., Any]) -> None:
        self.conn = conn
        self.call = call
        self.current = ownership.Registry()

    def set_record(self, kind: Registered, key: str, record: ownership.Record | None) -> None:
        """Write (or drop) the record of a pool or volume."""
        match kind:
            case Kind.STORAGE_POOL:
                self.current = self.current.with_pool(key, record)
            case Kind.VOLUME:
                self.current = self.current.with_volume(key, record)
            case Kind.SECRET:
                self.current = self.current.with_secret(key, record)
            case _:
                assert_never(kind)
        self.write()

    def set_domain(self, name: str, record: ownership.Record | None) -> bool:
        """Keep (or drop) the placement record of a domain; False: it was so already."""
        if self.current.domains.get(name) == record:
            return False
        self.current = self.current.with_domain(name, record)
        self.write()
        return True

    def secret_key(self) -> str:
        """The host's key for digests of secret values, made (and written) when missing."""
        if not self.current.secret_key:
            self.current = dataclasses.replace(self.current, secret_key=values.new_key())
            self.write()
        return self.current.secret_key

    def set_applied(self, applied: dict[str, str]) -> None:
        self.current = dataclasses.replace(self.current, applied=applied)
        self.write()

    def write(self) -> None:
        """Define the registry network with the registry as it is now."""
        define = API[Kind.NETWORK].define
        net = self.call(define.name, define.fn, self.conn, self.current.to_xml())
        if not self.current.uuid:
            self.current = dataclasses.replace(self.current, uuid=net.UUIDString(), exists=True)
