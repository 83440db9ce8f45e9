"""Fixtures for the e2e tier: a real libvirtd, real (TCG) guests, isolated extra hosts.

Every test under ``tests/e2e`` is marked ``e2e``.  Needs root and the packages from
``scripts/setup-testbed.sh``.

Fixtures
--------
``system_uri`` (session)      ``qemu:///system``, daemon started if needed (and stopped at
                              session end only if this session started it).
``guest`` (session)           :class:`Guest` with the tiny kernel + initrd (built once, cached).
``isolated_hosts`` (session)  factory ``isolated_hosts(n=2, prefix="host", hide=None)`` ->
                              ``list[IsolatedHost]`` of fresh private libvirtds (``.uri``,
                              ``.pid``, ``.stop()``); all stopped at session end.
                              ``hide={index: [path, ...]}``: paths that daemon sees empty.
``libvirt_events`` (session)  default event loop registered + running in a thread; request
                              it BEFORE opening the connection whose events you need.
``scratch_dir``               fresh dir under /var/tmp that qemu can read (images, serial
                              logs); removed afterwards.
``_e2e_session_lock``          machine-wide flock (``/run/virt-reconcile-e2e.lock``): a second
                              e2e session on the same machine waits instead of clobbering.
``vr_cleanup`` (autouse)      removes ``vrt-*`` domains/networks/pools/volumes on the system
                              daemon before and after each test.  Name test objects ``vrt-*``.
"""

from __future__ import annotations

import itertools
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # "tests.testbed" without a pythonpath setting
    sys.path.insert(0, str(_REPO))

import libvirt  # noqa: E402

from tests.testbed.daemon import (  # noqa: E402
    TEST_PREFIX,
    IsolatedHost,
    cleanup_prefixed,
    ensure_event_loop,
    ensure_system_libvirtd,
    exclusive_session,
    start_isolated_hosts,
    stop_all,
)
from tests.testbed.guest import Guest, build_guest, make_scratch_dir  # noqa: E402

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _quiet_libvirt_errors(_ctx: object, _err: object) -> None:
    """Errors still raise libvirtError; this only stops libvirt printing them to stderr."""


@pytest.fixture(scope="session")
def _e2e_session_lock() -> Iterator[None]:
    """One e2e session per machine at a time (they share the system daemon + cleanup)."""
    with exclusive_session():
        yield


@pytest.fixture(scope="session")
def system_uri(_e2e_session_lock: None) -> Iterator[str]:
    libvirt.registerErrorHandler(_quiet_libvirt_errors, None)
    uri = ensure_system_libvirtd()
    cleanup_prefixed(uri, TEST_PREFIX)
    yield uri
    cleanup_prefixed(uri, TEST_PREFIX)
    stop_all()  # isolated hosts + the system daemons this session started, by pid


@pytest.fixture(scope="session")
def guest() -> Guest:
    return build_guest()


@pytest.fixture(scope="session")
def libvirt_events() -> None:
    ensure_event_loop()


@pytest.fixture(scope="session")
def isolated_hosts(
    tmp_path_factory: pytest.TempPathFactory, _e2e_session_lock: None
) -> Iterator[Callable[..., list[IsolatedHost]]]:
    """Factory: ``isolated_hosts(n=2, prefix="host")`` starts ``n`` fresh private daemons."""
    libvirt.registerErrorHandler(_quiet_libvirt_errors, None)
    started: list[IsolatedHost] = []
    counter = itertools.count(1)

    def start(
        n: int = 2, prefix: str = "host", hide: Mapping[int, Sequence[str]] | None = None
    ) -> list[IsolatedHost]:
        base = tmp_path_factory.mktemp("isolated")
        specs = []
        hidden: dict[str, Sequence[str]] = {}
        for i in range(n):
            name = f"{prefix}{next(counter)}"
            specs.append((name, base / name))
            hidden[name] = (hide or {}).get(i, ())
        hosts = start_isolated_hosts(specs, hide=hidden)
        started.extend(hosts)
        return hosts

    yield start
    for host in started:
        host.stop()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    path = make_scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def vr_cleanup(system_uri: str) -> Iterator[None]:
    cleanup_prefixed(system_uri, TEST_PREFIX)
    yield
    cleanup_prefixed(system_uri, TEST_PREFIX)
