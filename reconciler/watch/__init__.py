"""The ``watch`` daemon: keep hosts matching the manifests, continuously.

Level-based, like controller-runtime: a trigger says only *that* (and, where
known, on which host and which objects) something may differ — never what to do.

    triggers ──mark──▶ WorkQueue ──debounced batch──▶ worker: one pass
    (file change, git poll, libvirt event,             load manifests (last good
     resync timer, SIGHUP, POST /-/reload,             on bad input) → Run:
     retry after backoff, reconnect)                   observe → plan → execute
                                                       → observe → converged?

The pass is the same ``reconcile.Run`` that ``apply`` uses; nothing here plans.
A pass is *scoped* to the objects its triggers named when ``scope`` finds that
enough (their manifests and live state read again, the rest of the host as last
read), else *full* (every object of its hosts).
A failing host is retried with exponential backoff; a trigger that may bring
new desired state (file, git, reload) retries every host at once.
"""

from reconciler.defaults import DEFAULT_ADDRESS
from reconciler.watch import logs, notify
from reconciler.watch.daemon import Config, HostOutcome, LockHook, Watcher, no_lock
from reconciler.watch.metrics import Metrics, parse_address
from reconciler.watch.sources import FolderSource, GitSource, Snapshot, Source
from reconciler.watch.workqueue import Backoff, Batch, Reason, WorkQueue, due_at

__all__ = [
    "DEFAULT_ADDRESS",
    "Backoff",
    "Batch",
    "Config",
    "FolderSource",
    "GitSource",
    "HostOutcome",
    "LockHook",
    "Metrics",
    "Reason",
    "Snapshot",
    "Source",
    "Watcher",
    "WorkQueue",
    "due_at",
    "logs",
    "no_lock",
    "notify",
    "parse_address",
]
