"""watch: the read-only status page at ``GET /`` — plain HTML, a little CSS, no script.

Everything shown comes from the daemon's memory of its last passes (no libvirt
call per request); every value is escaped. The page reloads itself
(``<meta http-equiv="refresh">``) every ``REFRESH`` seconds.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reconciler import __version__
from reconciler.uris import redact_uri

if TYPE_CHECKING:
    from reconciler.watch.daemon import Entry, HostView, Watcher

REFRESH = 5

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:#555}.meta span{margin-right:1.2em}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:.6em}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef0f3;font-weight:600}
.b{display:inline-block;padding:0 .45em;border-radius:.3em;font-size:.9em;font-weight:600}
.Synced,.ok,.change,.yes{background:#dcf5e3;color:#135c2c}
.OutOfSync,.Missing,.PendingRestart,.would,.not-converged,.drift{background:#fff1cc;color:#6b4a00}
.Failed,.failed,.unreachable,.error,.no{background:#fde0e0;color:#8a1c1c}
.Suspended,.none{background:#e8e8e8;color:#444}
.err{color:#8a1c1c;white-space:pre-wrap}code{font-size:.95em}.n{white-space:nowrap}
"""


def render(w: Watcher) -> str:
    """The whole page for the daemon's current state."""
    now = time.time()
    health = w.health()
    ready = w.readiness()
    rev = health["revision"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        "<title>virt-reconcile watch</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>virt-reconcile watch</h1>",
        '<p class="meta">',
        _span("source", w.source.describe()),
        _span("revision", rev[:12] if rev else "—"),
        _span("manifests", "valid" if health["manifestsValid"] else "INVALID"),
        _span("mode", "dry run (changes nothing)" if w.config.dry_run else "apply"),
        _span("ready", "yes" if ready["ready"] else "no"),
        _span("passes", str(health["passes"])),
        _span("version", __version__),
        f"<span>started {_ago(w.started_at, now)}</span>",
        "</p>",
    ]
    coordination = health.get("coordination")
    if coordination is not None:  # watch --coordination: this replica and the group
        state = "up" if coordination["up"] else f"DOWN: {coordination['reason']}"
        mine = [h for h, m in coordination["owners"].items() if m == coordination["replica"]]
        parts.append(
            '<p class="meta">'
            + _span("replica", coordination["replica"])
            + _span("coordination", state)
            + _span("members", ", ".join(coordination["members"]) or "—")
            + _span("owns", ", ".join(mine) or "no host")
            + "</p>"
        )
    if w.last_pass is not None:
        at, text = w.last_pass
        parts.append(f'<p class="meta">last pass {_ago(at, now)}: <code>{_e(text)}</code></p>')
    else:
        parts.append('<p class="meta">no pass yet</p>')
    parts.append("<h2>Hosts</h2>")
    views = sorted(w.views.values(), key=lambda v: v.host)
    if not views:
        parts.append("<p>No host reconciled yet.</p>")
    for view in views:
        parts.extend(_host(view, now))
    parts.append("<h2>Recent changes, drift and errors</h2>")
    parts.extend(_recent(reversed(w.recent), now))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _host(v: HostView, now: float) -> list[str]:
    o = v.outcome
    counts = f", {o.changes} change(s)" if o.changes else ""
    counts += f", {o.pending} pending change(s)" if o.pending else ""
    out = [
        f'<h3 id="host-{_e(v.host)}">{_e(v.host)} <small class="meta">{_e(redact_uri(v.uri))}'
        f"</small></h3>",
        f'<p class="meta">last pass {_ago(v.at, now)}: {_badge(o.result.value)}{_e(counts)}</p>',
    ]
    if o.errors:
        out.append('<div class="err">' + "<br>".join(_e(e) for e in o.errors) + "</div>")
    if not v.objects:
        out.append("<p>No objects.</p>")
        return out
    out.append(
        '<table class="objects"><tr><th>object</th><th>sync</th><th>power</th>'
        "<th>health</th><th>reason</th></tr>"
    )
    for ob in v.objects:
        power = ob.power or "—"
        if ob.power and ob.power_reason:
            power += f" ({ob.power_reason})"
        health = ("yes" if ob.healthy else "no") if ob.power else "none"
        shown = {"yes": "healthy", "no": "unhealthy", "none": "—"}[health]
        out.append(
            f"<tr><td><code>{_e(ob.ref)}</code></td><td>{_badge(ob.sync.value)}</td>"
            f"<td>{_e(power)}</td><td>{_badge(health, shown)}</td><td>{_e(ob.reason)}</td></tr>"
        )
    out.append("</table>")
    return out


def _recent(entries: Iterable[Entry], now: float) -> list[str]:
    rows = [
        f'<tr><td class="n">{_ago(e.at, now)}</td><td class="n">{_e(e.host)}</td>'
        f"<td>{_badge(e.what)}</td><td><code>{_e(e.text)}</code></td>"
        f'<td class="n">{"&times; " + str(e.count) if e.count > 1 else ""}</td></tr>'
        for e in entries
    ]
    if not rows:
        return ["<p>Nothing yet.</p>"]
    head = "<tr><th>when</th><th>host</th><th>what</th><th>detail</th><th>times</th></tr>"
    return [f'<table class="recent">{head}', *rows, "</table>"]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _badge(cls: str, text: str | None = None) -> str:
    return f'<span class="b {_e(cls)}">{_e(text if text is not None else cls)}</span>'


def _span(label: str, value: str) -> str:
    return f"<span>{_e(label)}: <b>{_e(value)}</b></span>"


def _ago(at: float, now: float) -> str:
    """``12s ago``, ``4m 10s ago``, ``3h 5m ago``, ``2d 1h ago``; the UTC time on hover."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
    return f'<time datetime="{stamp}" title="{stamp}">{_span_of(now - at)} ago</time>'


def _span_of(seconds: float) -> str:
    left = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])
