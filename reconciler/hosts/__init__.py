"""The only package that talks to libvirt: connections, observation, calls, events.

* ``Session.open`` connects (``connection``: after starting libvirt's default
  event loop in a daemon thread, which keepalive and device-removal events need).
* ``Session.observe`` reads one host in one pass (``observe``): one
  ``listAll*`` per kind and one XML read per object, into ``observed.HostState``.
* ``Session.run`` carries out one ``steps.Step`` (``calls``; the operations
  every kind has go through the per-kind table in ``api``); every mutating
  libvirt call is counted by name in ``Session.calls``. Pool and volume records
  live in the host's registry (``registry``).
* libvirt errors become ``errors.HostError``/``errors.ActionError`` with a
  message a user can act on (``causes``); URIs are shown without passwords
  (``reconciler.uris``).
* ``Session.watch`` passes libvirt's change events (``events``: domain
  lifecycle incl. redefine, devices, networks, pools, a dropped connection) to
  a plain Python callback as ``HostEvent``, so ``watch`` needs no libvirt import.

``normalise`` reads a desired document back through libvirt's own parser on a
private in-memory host (``normalise``), for the planner to compare.

The test-only crash hook ``FAULT_AFTER_CALLS`` is described in ``calls``.
"""

from reconciler.hosts.calls import FAULT_AFTER_CALLS
from reconciler.hosts.causes import describe
from reconciler.hosts.connection import open_uri, start_event_loop
from reconciler.hosts.events import HostEvent
from reconciler.hosts.normalise import normalise
from reconciler.hosts.session import Session

__all__ = [
    "FAULT_AFTER_CALLS",
    "HostEvent",
    "Session",
    "describe",
    "normalise",
    "open_uri",
    "start_event_loop",
]
