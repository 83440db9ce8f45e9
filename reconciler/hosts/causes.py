"""What a libvirt error means for the user: ``cause: libvirt's message (what to do)``."""

from __future__ import annotations

import errno
import re

import libvirt

from reconciler.uris import scrub

# What a user can do about a class of libvirt error: (cause, advice).
_UNREACHABLE = (
    "host unreachable",
    "check that libvirtd runs there, the address and port, and the network between",
)
_AUTH = ("authentication failed", "check the user, key file or credentials of the host's URI")
_DENIED = (
    "permission denied",
    "the connecting user may not do this: connect as root or a member of the libvirt group, "
    "or check the host's polkit/ACL rules and file permissions",
)
_CLASH = (
    "name clash",
    "another object of that name exists on the host (created by someone else since the plan "
    "was made, or transient); remove or rename it, or rename the manifest",
)
_SPACE = ("out of space", "free space on the host or in the pool, or ask for a smaller volume")
_POOL_INACTIVE = (
    "storage pool inactive",
    "start the pool (`state: active` in its manifest, or virsh pool-start)",
)
_CAUSES_BY_CODE: dict[int, tuple[str, str]] = {
    libvirt.VIR_ERR_AUTH_FAILED: _AUTH,
    libvirt.VIR_ERR_AUTH_CANCELLED: _AUTH,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE: _AUTH,
    libvirt.VIR_ERR_NO_CONNECT: _UNREACHABLE,
    libvirt.VIR_ERR_OPERATION_DENIED: _DENIED,
    libvirt.VIR_ERR_ACCESS_DENIED: _DENIED,
    libvirt.VIR_ERR_DOM_EXIST: _CLASH,
    libvirt.VIR_ERR_NETWORK_EXIST: _CLASH,
    libvirt.VIR_ERR_XML_ERROR: ("invalid XML", "fix the manifest's spec.xml or fields"),
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED: (
        "configuration not supported by the host",
        "change the manifest to something this host's hypervisor supports",
    ),
    libvirt.VIR_ERR_NO_SUPPORT: ("not supported by this libvirt driver", ""),
    libvirt.VIR_ERR_OPERATION_INVALID: ("operation not valid in this state", ""),
}
_CAUSES_BY_ERRNO: dict[int, tuple[str, str]] = {
    errno.ECONNREFUSED: _UNREACHABLE,
    errno.EHOSTUNREACH: _UNREACHABLE,
    errno.ENETUNREACH: _UNREACHABLE,
    errno.ETIMEDOUT: _UNREACHABLE,
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
    errno.ENOSPC: _SPACE,
    errno.EDQUOT: _SPACE,
}
# Message patterns win over the code: libvirt reports many causes as
# "operation failed" or "system error".
_CAUSES_BY_TEXT: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = (
    (re.compile(r"storage pool '[^']*' is not active"), _POOL_INACTIVE),
    (re.compile(r"already exists with uuid|already exists"), _CLASH),
    (re.compile(r"No space left on device|Disk quota exceeded|not enough space", re.I), _SPACE),
    (re.compile(r"Permission denied|Operation not permitted"), _DENIED),
    (re.compile(r"authentication (failed|unavailable)", re.I), _AUTH),
    (
        re.compile(
            r"Connection refused|No route to host|Network is unreachable|Connection timed out|"
            r"Could not resolve hostname|Name or service not known|"
            r"Failed to connect socket|unable to connect to server|End of file while reading",
        ),
        _UNREACHABLE,
    ),
)


def describe(err: libvirt.libvirtError, *, uri: str | None = None) -> str:
    """A libvirt error as ``cause: libvirt's message (what to do)``.

    With ``uri``, every secret it carries (password, key material in the query)
    is blanked from the message too, in case libvirt echoed it back.
    """
    code = err.get_error_code()
    msg = (err.get_error_message() or str(err)).strip()
    cause = next((c for pattern, c in _CAUSES_BY_TEXT if pattern.search(msg)), None)
    if cause is None and code == libvirt.VIR_ERR_SYSTEM_ERROR and err.err:
        cause = _CAUSES_BY_ERRNO.get(err.err[7] if len(err.err) > 7 else -1)
    cause = cause or _CAUSES_BY_CODE.get(code)
    if uri:
        msg = scrub(msg, uri)
    if cause is None:
        return msg
    label, advice = cause
    text = msg if msg.lower().startswith(label) else f"{label}: {msg}"
    return f"{text} ({advice})" if advice else text
