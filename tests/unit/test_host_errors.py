"""libvirt errors become messages a user can act on; URI secrets never show."""

from __future__ import annotations

import errno

import libvirt
import pytest

from reconciler import hosts, uris

pytestmark = pytest.mark.unit


def lv_error(code: int, message: str, *, err_no: int = -1) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it (the tuple of virGetLastError)."""
    e = libvirt.libvirtError(message)
    e.err = (code, 0, message, 2, "%s", message, None, err_no, -1)
    return e


CASES = [
    (
        lv_error(libvirt.VIR_ERR_AUTH_FAILED, "authentication failed: Failed to verify peer"),
        "authentication failed: Failed to verify peer (check the user, key file",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_SYSTEM_ERROR,
            "unable to connect to server at 'kvm-a:16509': No route to host",
            err_no=errno.EHOSTUNREACH,
        ),
        "host unreachable: unable to connect to server at 'kvm-a:16509': No route to host "
        "(check that libvirtd runs there",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_SYSTEM_ERROR,
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file",
            err_no=errno.ENOENT,
        ),
        "host unreachable: Failed to connect socket",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_ACCESS_DENIED,
            "access denied: 'domain.write' denied for uid 1000",
        ),
        "permission denied: access denied: 'domain.write' denied for uid 1000 "
        "(the connecting user may not do this",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_SYSTEM_ERROR,
            "cannot create directory '/srv/pool': Permission denied",
            err_no=errno.EACCES,
        ),
        "permission denied: cannot create directory '/srv/pool': Permission denied",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_OPERATION_INVALID,
            "Requested operation is not valid: storage pool 'lab' is not active",
        ),
        "storage pool inactive: Requested operation is not valid: storage pool 'lab' is not "
        "active (start the pool",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_OPERATION_FAILED,
            "operation failed: domain 'web-1' already exists with uuid 1b4e28ba-2fa1",
        ),
        "name clash: operation failed: domain 'web-1' already exists with uuid 1b4e28ba-2fa1 "
        "(another object of that name exists on the host",
    ),
    (
        lv_error(
            libvirt.VIR_ERR_SYSTEM_ERROR,
            "cannot allocate 10737418240 bytes in file '/pool/v.qcow2': No space left on device",
            err_no=errno.ENOSPC,
        ),
        "out of space: cannot allocate 10737418240 bytes in file '/pool/v.qcow2': No space left "
        "on device (free space on the host or in the pool",
    ),
    (
        lv_error(libvirt.VIR_ERR_SYSTEM_ERROR, "write failed", err_no=errno.EDQUOT),
        "out of space: write failed",
    ),
    (
        lv_error(libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: something odd"),
        "internal error: something odd",
    ),
]


@pytest.mark.parametrize(("error", "expected"), CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_describe_names_the_cause_and_what_to_do(
    error: libvirt.libvirtError, expected: str
) -> None:
    assert hosts.describe(error).startswith(expected)


def test_describe_blanks_secrets_that_libvirt_echoes() -> None:
    uri = "qemu+tcp://admin:hunter22@kvm-a/system?password=s3cret&keyfile=/etc/k"
    e = lv_error(libvirt.VIR_ERR_AUTH_FAILED, f"authentication failed for {uri} (s3cret)")
    text = hosts.describe(e, uri=uri)
    assert "hunter22" not in text and "s3cret" not in text
    assert "qemu+tcp://admin:***@kvm-a/system" in text and "keyfile=/etc/k" in text


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("qemu+ssh://root@kvm-a/system", "qemu+ssh://root@kvm-a/system"),
        ("qemu+tcp://root:pw@kvm-a/system", "qemu+tcp://root:***@kvm-a/system"),
        (
            "qemu+tls://kvm-a/system?pkipath=/p&password=x&token=y",
            "qemu+tls://kvm-a/system?pkipath=/p&password=***&token=***",
        ),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert uris.redact_uri(uri) == shown
