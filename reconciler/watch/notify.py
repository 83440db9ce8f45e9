"""watch: systemd's service notification protocol (``sd_notify``), for ``Type=notify`` units.

The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket). Without
the variable every call does nothing, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(fields: Mapping[str, str], env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` to systemd; True when a socket was named and took the message."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.debug("NOTIFY_SOCKET %r is not a unix socket; not notifying", address)
        return False
    message = "".join(f"{k}={v.replace(chr(10), ' ')}\n" for k, v in fields.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify to %s failed: %s", address.replace("\0", "@"), e)
        return False
    return True


def ready(status: str) -> bool:
    return notify({"READY": "1", "STATUS": status})


def reloading() -> bool:
    """``RELOADING=1`` with the monotonic time systemd (>= 253) asks for; READY=1 ends it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify({"RELOADING": "1", "MONOTONIC_USEC": str(usec), "STATUS": "reloading"})


def stopping() -> bool:
    return notify({"STOPPING": "1", "STATUS": "stopping"})


def status(text: str) -> bool:
    return notify({"STATUS": text})
