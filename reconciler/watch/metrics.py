"""watch: Prometheus metrics and the HTTP endpoint (/, /metrics, /healthz, /readyz, /-/reload)."""

from __future__ import annotations

import http.server
import json
import logging
import platform
import threading
from typing import Any, Protocol

import prometheus_client

from reconciler import __version__
from reconciler.defaults import DEFAULT_ADDRESS

log = logging.getLogger(__name__)


# No ``*_created`` series beside every counter and histogram: they double the
# series count and nothing here needs them (process-wide switch of prometheus_client).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """Prometheus metrics of one watcher (its own registry, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = r = prometheus_client.CollectorRegistry()
        counter, gauge = prometheus_client.Counter, prometheus_client.Gauge

        def labelled(cls: Any, name: str, doc: str, *labels: str) -> Any:
            return cls(f"virt_reconcile_{name}", doc, labels, registry=r)

        self.runs: prometheus_client.Counter = labelled(
            counter, "reconcile_runs", "Reconcile passes per host, by result", "host", "result"
        )
        self.duration = prometheus_client.Histogram(
            "virt_reconcile_reconcile_duration_seconds",
            "Duration of a reconcile pass",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.pass_objects = prometheus_client.Histogram(
            "virt_reconcile_pass_objects",
            "Objects a pass planned (over its hosts), by scope: full (every object of the "
            "hosts) or scoped (the objects a trigger named)",
            ["scope"],
            registry=r,
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000),
        )
        self.objects: prometheus_client.Gauge = labelled(
            gauge, "objects", "Objects the manifests name, by host and sync state", "host", "sync"
        )
        self.last_success: prometheus_client.Gauge = labelled(
            gauge, "last_success_timestamp_seconds", "When a host last converged", "host"
        )
        self.drift: prometheus_client.Counter = labelled(
            counter, "drift_corrections", "Changes behind our back, reverted", "host", "kind"
        )
        self.changes: prometheus_client.Counter = labelled(
            counter, "changes", "Changes applied, by host and action", "host", "action"
        )
        self.host_up: prometheus_client.Gauge = labelled(
            gauge, "host_up", "1 when the host was reachable in its last pass", "host"
        )
        self.triggers: prometheus_client.Counter = labelled(
            counter, "triggers", "Marks that asked for a pass, by reason", "reason"
        )
        self.manifests_valid: prometheus_client.Gauge = labelled(
            gauge, "manifests_valid", "1 when the latest manifests loaded without errors"
        )
        self.revision = prometheus_client.Info(
            "virt_reconcile_applied_revision", "Source and revision last applied", registry=r
        )
        self.pending: prometheus_client.Gauge = labelled(
            gauge,
            "pending_changes",
            "watch --dry-run: changes the last pass would have made, by host and action",
            "host",
            "action",
        )
        # watch --coordination: several replicas share the hosts.
        self.coordination_up: prometheus_client.Gauge = labelled(
            gauge,
            "coordination_up",
            "watch --coordination: 1 while the coordination backend answers within the "
            "lease (0: nothing is changed)",
        )
        self.owned_hosts: prometheus_client.Gauge = labelled(
            gauge, "owned_hosts", "watch --coordination: hosts this replica owns"
        )
        self.host_owner: prometheus_client.Gauge = labelled(
            gauge,
            "host_owner",
            "watch --coordination: 1 for the replica that owns each host, as this replica sees it",
            "host",
            "replica",
        )
        build: prometheus_client.Gauge = labelled(
            gauge, "build_info", "Always 1; the version of virt-reconcile", "version", "python"
        )
        build.labels(__version__, platform.python_version()).set(1)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9178``) -> (host, port); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_ADDRESS})")
    return host.strip("[]") or "0.0.0.0", int(port)


class Served(Protocol):
    """What the endpoint needs of the daemon."""

    metrics: Metrics

    def health(self) -> dict[str, Any]: ...

    def readiness(self) -> dict[str, Any]: ...

    def page(self) -> str: ...

    def reload(self) -> None: ...


def serve_http(watcher: Served, address: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    """``GET /`` (the status page), ``/metrics``, ``/healthz``, ``/readyz``, and
    ``POST /-/reload`` (the git webhook)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "virt-reconcile"

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, watcher.metrics.render(), prometheus_client.CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                health = watcher.health()
                code = 200 if health["status"] == "ok" else 503
                self._send(code, json.dumps(health).encode() + b"\n", "application/json")
            elif path == "/readyz":
                ready = watcher.readiness()
                code = 200 if ready["ready"] else 503
                self._send(code, json.dumps(ready).encode() + b"\n", "application/json")
            elif path == "/":
                self._send(200, watcher.page().encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))  # a webhook's payload: not needed
            if self.path.split("?", 1)[0] == "/-/reload":
                watcher.reload()
                self._send(202, b"reload triggered\n")
            else:
                self._send(404, b"not found\n")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    server = http.server.ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
