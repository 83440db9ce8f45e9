"""Command line: argument parsing, output and exit codes. The only module that prints.

    virt-reconcile validate PATH...
    virt-reconcile render   PATH... [--host NAME]
    virt-reconcile plan     PATH... [-c URI] [--host NAME...] [--prune] [-o text|json]
                                    [--detailed-exitcode] [--out PLANFILE]
    virt-reconcile apply    PATH... [-c URI] [--host NAME...] [--prune] [--replace KIND/NAME...]
                                    [-o text|json] [--dry-run] [--plan PLANFILE] [--yes]
    virt-reconcile status   PATH... [-c URI] [--host NAME...] [-o text|json] [--coordination URL]
    virt-reconcile watch    PATH... | --git URL [--ref main] [--interval 30s] [-c URI] [--prune]
                                    [--resync 5m] [--metrics-addr 127.0.0.1:9178] [--dry-run]
                                    [--log-format text|json]
                                    [--coordination URL [--replica-id NAME] [--lease 10s]]
    virt-reconcile export   [PATH...] [-c URI] [--host NAME] [--kind K...] [--name N...]
                                    [--adopt] -d DIR
    virt-reconcile schema | completion bash|zsh|fish

plan, apply and status also take -l/--selector KEY=VALUE and --target KIND/NAME;
the commands that read PATHs take --exclude GLOB; PATH '-' is stdin.

Exit codes: 0 success / no changes; 1 error (also a usage error: an unknown
flag or a bad value); 2 with --detailed-exitcode: success and there are changes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from reconciler import __version__, defaults, errors, shell, units
from reconciler.model import Host, Kind, Manifest, ManifestSet

if TYPE_CHECKING:
    from rich.console import Console

    from reconciler import (
        coordination,
        export,
        hosts,
        lock,
        manifests,
        plan,
        reconcile,
        render,
        report,
        schema,
        status,
        watch,
    )
    from reconciler.execute import Result
    from reconciler.placement import Placement
    from reconciler.plan import ActionType
    from reconciler.reconcile import (
        Run,
        Target,
        apply,
        object_hosts,
        resolve_hosts,
    )
    from reconciler.uris import redact_uri
else:
    # The pipeline loads on first use, so `--help`, `--version` and usage
    # errors cost only argparse (tens of ms, not the ~0.7 s of rich, lxml,
    # jsonschema, libvirt, watch and export).

    class _Lazy:
        """A module (or one name of a module) imported when first used."""

        def __init__(self, module: str, name: str | None = None) -> None:
            self._where = (module, name)

        def _get(self) -> Any:
            module, name = self._where
            loaded = importlib.import_module(module)
            return loaded if name is None else getattr(loaded, name)

        def __getattr__(self, attr: str) -> Any:
            return getattr(self._get(), attr)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._get()(*args, **kwargs)

    (
        coordination,
        export,
        hosts,
        lock,
        manifests,
        plan,
        reconcile,
        render,
        report,
        schema,
        status,
        watch,
    ) = (
        _Lazy(f"reconciler.{m}")
        for m in (
            "coordination",
            "export",
            "hosts",
            "lock",
            "manifests",
            "plan",
            "reconcile",
            "render",
            "report",
            "schema",
            "status",
            "watch",
        )
    )
    ActionType = _Lazy("reconciler.plan", "ActionType")
    Run, Target, apply, object_hosts, resolve_hosts = (
        _Lazy("reconciler.reconcile", n)
        for n in ("Run", "Target", "apply", "object_hosts", "resolve_hosts")
    )
    redact_uri = _Lazy("reconciler.uris", "redact_uri")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

# Console output: rich (~65 ms to import) only where it shows something a plain
# write would not: a terminal, or text beyond markup tags (see _Plain).
_MARKUP_TAG = re.compile(r"\[([a-z#/@][^\[\]]*)\]")
# What rich would render differently from the text with its tags removed: an
# escape, a control code it strips, a tab it expands, a possible :emoji: code.
_RICH_ONLY = re.compile(r"[\\\a\b\t\v\f\r]|:\S*:")


def escape(text: str) -> str:
    """rich's markup escape; loads rich only for text with a ``[`` or a final
    backslash (the only text it changes)."""
    if "[" not in text and not text.endswith("\\"):
        return text
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _plain_text(text: str) -> str | None:
    """``text`` as rich prints it off a terminal, with its balanced markup
    tags removed; None when rich must render it (see _RICH_ONLY; a closing
    tag that does not close the last one open: rich's error to give)."""
    if _RICH_ONLY.search(text):
        return None
    if "[" not in text:
        return text
    open_tags: list[str] = []
    for m in _MARKUP_TAG.finditer(text):
        tag = m.group(1)
        if not tag.startswith("/"):
            open_tags.append(tag)
        elif not open_tags or tag not in ("/", "/" + open_tags[-1]):
            return None
        else:
            open_tags.pop()
    return _MARKUP_TAG.sub("", text)


class _Plain:
    """A stand-in for ``rich.console.Console(highlight=False, soft_wrap=True)``
    that writes plain text itself while its stream is not a terminal (as rich
    decides: TTY_COMPATIBLE, FORCE_COLOR, isatty), so a run whose output goes
    to a pipe or a file (cron, CI, ``watch`` logs) does not load rich. Anything
    else — a terminal, text rich would render otherwise, a method other than
    ``print`` — goes to a rich Console, made on first use."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._rich: Any = None

    @property
    def file(self) -> Any:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        tty = os.environ.get("TTY_COMPATIBLE", "")
        if tty in ("0", "1"):
            return tty == "1"
        force = os.environ.get("FORCE_COLOR")
        if force is not None:
            return force != ""
        isatty = getattr(self.file, "isatty", None)
        try:
            return False if isatty is None else bool(isatty())
        except ValueError:  # a closed stream
            return False

    def _console(self) -> Any:
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._rich

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", **kwargs: Any) -> None:
        if not (set(kwargs) <= {"style"} and all(isinstance(o, str) for o in objects)):
            self._console().print(*objects, sep=sep, end=end, **kwargs)
            return
        text = _plain_text(sep.join(objects)) if not self.is_terminal else None
        if text is None:
            self._console().print(*objects, sep=sep, end=end, **kwargs)
        else:
            self.file.write(text + end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)


def _new_console(*, stderr: bool = False) -> Console:
    return cast("Console", _Plain(stderr=stderr))


@functools.cache
def _styles() -> dict[ActionType, str]:
    return {
        ActionType.CREATE: "green",
        ActionType.UPDATE: "yellow",
        ActionType.DELETE: "red",
        ActionType.ADOPT: "cyan",
        ActionType.UNCHANGED: "dim",
        ActionType.PENDING_RESTART: "magenta",
    }


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1: argparse's 2 means "changes" to
    ``--detailed-exitcode``, so CI would read a mistyped flag as drift.
    Subcommand parsers are of the same class (argparse uses ``type(self)``)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 100")
    return value


def _seconds(text: str) -> float:
    try:
        value = units.parse_duration(text) if text[-1:].isalpha() else float(text)
    except (ValueError, IndexError):
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30, 2m or 1m30s)")
    return value


def _prune_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--prune",
        action="store_true",
        help="delete managed objects that no manifest names (without it: shown as orphans)",
    )
    sp.add_argument(
        "--max-prune",
        type=_percent,
        default=defaults.DEFAULT_MAX_PRUNE,
        metavar="PERCENT",
        help="refuse a run that would delete more than this share of a host's managed "
        f"objects (default {defaults.DEFAULT_MAX_PRUNE})",
    )
    sp.add_argument(
        "--force-prune",
        action="store_true",
        help="delete even when more than --max-prune percent would go",
    )


def _host_args(sp: argparse.ArgumentParser, host_help: str = "work only on this Host") -> None:
    """-c, --host, --hosts-override: which hosts a command works on."""
    sp.add_argument(
        "-c",
        "--connect",
        metavar="URI",
        help="libvirt URI of the one host (without Host documents)",
    )
    sp.add_argument(
        "--host", action="append", default=[], metavar="NAME", help=f"{host_help} (repeatable)"
    )
    sp.add_argument(
        "--hosts-override",
        metavar="FILE",
        help="Host documents whose URIs replace those of the same names",
    )


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="virt-reconcile",
        description="Declarative desired-state reconciler for libvirt: YAML manifests in, "
        "the smallest libvirt changes out.",
    )
    p.add_argument("--version", action="version", version=f"virt-reconcile {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check manifests; needs no host")
    v.add_argument("paths", nargs="+", metavar="PATH")
    v.add_argument("-o", "--output", choices=["text", "json"], default="text")

    def hosts_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or folders")
        _host_args(sp)
        sp.add_argument("-o", "--output", choices=["text", "json"], default="text")

    def common(sp: argparse.ArgumentParser) -> None:
        hosts_args(sp)
        _prune_args(sp)
        sp.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also show unchanged objects, libvirt call counts and a unified XML diff",
        )
        sp.add_argument(
            "--diff",
            choices=["xml"],
            help="xml: also show each changed object's XML edits, addressed by XPath (xmldiff)",
        )

    pl = sub.add_parser("plan", help="show what apply would change")
    common(pl)
    pl.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when there are changes (0: none, 1: error)",
    )
    ap = sub.add_parser("apply", help="make the hosts match the manifests")
    common(ap)
    ap.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="KIND/NAME",
        help="allow delete-and-create of this object (repeatable)",
    )
    ap.add_argument("--dry-run", action="store_true", help="plan only, change nothing")
    ap.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another apply (on this machine; with --coordination: "
        "anywhere, or a watch replica) to release a host (default 0)",
    )
    _coordination_arg(
        ap,
        "take each host's lock on this tooz coordination backend too, the locks of the "
        "`watch --coordination` replicas, so an apply and the replicas never interleave on "
        "a host (e.g. etcd3+http://127.0.0.1:2379)",
    )
    ap.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when changes were made"
    )
    ap.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask before deleting, replacing or restarting (asked only when stdin "
        "is a terminal)",
    )
    st = sub.add_parser(
        "status",
        help="sync state, power state and health of every object the manifests name",
    )
    hosts_args(st)
    _coordination_arg(
        st,
        "also show which `watch --coordination` replica owns each host, as the group on "
        "this tooz backend assigns it now",
    )
    _flow_args(sub, v, pl, ap, st)
    _describe(pl, ap, st)
    _watch_parser(sub)
    _export_parser(sub)
    _tools_parser(sub)
    return p


def _coordination_arg(sp: argparse.ArgumentParser, text: str) -> None:
    sp.add_argument("--coordination", metavar="URL", help=text)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _flow_args(sub: Any, *parsers: argparse.ArgumentParser) -> None:
    """render; --exclude, -l/--selector, --target; plan --out and apply --plan."""
    r = sub.add_parser(
        "render",
        help="print the XML each object renders to (what would be defined); needs no host",
    )
    r.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or folders (-: stdin)")
    r.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="only objects for this host (repeatable)",
    )
    validate, pl, ap, st = parsers
    for sp in (validate, r, pl, ap, st):
        sp.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="GLOB",
            help="skip manifest files matching this gitignore-like pattern (repeatable; a "
            f"folder's {defaults.IGNORE_FILE} file does the same); PATH '-' reads stdin",
        )
    for sp in (pl, ap, st):
        sp.add_argument(
            "-l",
            "--selector",
            action="append",
            default=[],
            type=_label,
            metavar="KEY=VALUE",
            help="only objects whose metadata.labels match (repeatable: all must match; "
            "with --prune only managed objects recorded with these labels are deleted)",
        )
        sp.add_argument(
            "--target",
            action="append",
            default=[],
            metavar="KIND/NAME",
            help="only this object (repeatable; Volume/POOL/NAME or Volume/NAME)",
        )
    pl.add_argument("--out", metavar="PLANFILE", help="save the plan for apply --plan")
    ap.add_argument(
        "--plan",
        dest="planfile",
        metavar="PLANFILE",
        help="apply only if a fresh plan equals this saved one (else exit 1 and show how)",
    )


def _tools_parser(sub: Any) -> None:
    """Editors and shells: the combined JSON Schema, completion scripts."""
    sub.add_parser(
        "schema",
        help="print one JSON Schema for every kind (for editors: yaml-language-server)",
    )
    co = sub.add_parser("completion", help="print a shell completion script")
    co.add_argument("shell", choices=shell.SHELLS)


def _describe(pl: argparse.ArgumentParser, ap: argparse.ArgumentParser, st: Any) -> None:
    """What plan, apply and status promise (their --help)."""
    orphans = (
        "Managed objects that no manifest names any more are shown as orphans ('requires "
        "pruning') with what --prune would do: delete them, or keep them and why. "
    )
    pl.description = (
        "Show what apply would change; change nothing (read-only libvirt connections, no "
        "lock). " + orphans + "A placed domain whose candidates --host leaves out is noted."
    )
    ap.description = (
        "Print the plan, then each action's outcome as it ends, with progress for long "
        "waits (guest shutdown, device removal). When stdin is a terminal and the plan "
        "deletes, replaces or restarts something, ask first (default no: exit 1, nothing "
        "changed); --yes skips the question, and without a terminal (CI) nothing is asked. "
        "--dry-run is plan (read-only). Ends with 'Converged', naming the domains that wait "
        "for a restart, or with what is left. A --replace of a volume a domain uses is "
        "refused at plan time."
    )
    st.description = (
        "Sync state, power state and health per object (read-only libvirt connections). " + orphans
    )


def _export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a manifest for every existing object of a host (read-only unless --adopt)",
        description="Write one manifest per existing domain, network, storage pool and volume "
        "to DIR/HOST/KIND/NAME.yaml (volumes: DIR/HOST/volume/POOL/NAME.yaml). HOST is "
        "'default' with -c URI, else the Host document's name. With --adopt the exported "
        "objects also become managed, so plan shows no changes.",
    )
    ex.add_argument(
        "paths", nargs="*", metavar="PATH", help="Host documents naming the hosts (optional)"
    )
    _host_args(ex, host_help="export only this Host")
    ex.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        type=_kind,
        help="export only this kind (Domain, Network, StoragePool, Volume; repeatable)",
    )
    ex.add_argument(
        "--name", action="append", default=[], metavar="NAME", help="export only this object"
    )
    ex.add_argument(
        "--adopt", action="store_true", help="also mark the exported objects as managed"
    )
    ex.add_argument("-d", "--directory", required=True, metavar="DIR", help="output folder")
    ex.add_argument("-v", "--verbose", action="store_true", help="list every file written")


def _kind(text: str) -> Kind:
    for kind in Kind:
        if kind is not Kind.HOST and text.lower() in (kind.value.lower(), kind.name.lower()):
            return kind
    raise argparse.ArgumentTypeError(
        f"unknown kind {text!r}: use Domain, Network, StoragePool, Volume or Secret"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("schema", "completion"):
        text = schema.text() if args.command == "schema" else shell.completion(parser, args.shell)
        sys.stdout.write(text)
        return EXIT_OK
    out = _new_console()
    err = _new_console(stderr=True)
    as_json = getattr(args, "output", "text") == "json"
    try:
        if args.command == "validate":
            return _validate(args, out)
        if args.command == "render":
            return _render(args, out)
        if args.command == "status":
            return _status(args, out)
        if args.command == "watch":
            return _watch(args, err)
        if args.command == "export":
            return _export(args, out, err)
        return _plan_or_apply(args, out, err)
    except errors.ManifestError as e:
        if as_json:
            _print_json(out, report.errors_json(e.problems))
        for problem in e.problems:
            err.print(escape(str(problem)), style="red")
        err.print(f"{len(e.problems)} error(s); nothing was changed", style="red")
        return EXIT_ERROR
    except errors.ReconcileError as e:
        if as_json:
            _print_json(out, report.errors_json(str(e).splitlines()))
        err.print(f"error: {escape(str(e))}", style="red")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted", style="red")
        return EXIT_ERROR


def _print_json(out: Console, doc: Mapping[str, Any]) -> None:
    """A JSON document, indented; coloured on a terminal. Elsewhere (a pipe, a
    file) written as is: the same text, without rich parsing and highlighting
    it again (seconds for the plan of a thousand objects)."""
    if out.is_terminal:
        out.print_json(json.dumps(doc))
    else:
        out.file.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _load(args: argparse.Namespace) -> ManifestSet:
    return manifests.load(args.paths, exclude=getattr(args, "exclude", ()))


def _validate(args: argparse.Namespace, out: Console) -> int:
    loaded = _load(args)
    documents = len(loaded.objects) + len(loaded.hosts)
    if args.output == "json":
        _print_json(
            out, report.errors_json([]) | {"documents": documents, "files": len(loaded.files)}
        )
    else:
        out.print(f"{documents} document(s) in {len(loaded.files)} file(s) are valid")
    return EXIT_OK


def _check_replace(refs: Sequence[str], loaded: ManifestSet) -> None:
    """Every ``--replace`` names a volume a manifest declares, before any host is read.

    Only volumes are ever deleted and created again (format, backing store);
    the planner accepts ``Volume/POOL/NAME`` and ``Volume/NAME`` (any pool).
    """
    volumes = {m.ref for m in loaded.objects if m.kind is Kind.VOLUME}
    short = {f"{Kind.VOLUME.value}/{m.name}" for m in loaded.objects if m.kind is Kind.VOLUME}
    others = {m.ref for m in loaded.objects if m.kind is not Kind.VOLUME}
    problems = []
    for ref in refs:
        if ref in volumes or ref in short:
            continue
        if ref in others:
            problems.append(
                f"--replace {ref}: only volumes are replaced (deleted and created again); "
                "other kinds change in place or on the next restart"
            )
            continue
        close = difflib.get_close_matches(ref, sorted(volumes | others), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"--replace {ref}: no manifest declares it; use Volume/POOL/NAME{hint}")
    if problems:
        raise errors.UsageError("\n".join(problems))


def _render(args: argparse.Namespace, out: Console) -> int:
    from reconciler.reconcile import DEFAULT_HOST  # imported late: see _Lazy

    loaded = _load(args)
    known = {h.name for h in loaded.hosts} or {DEFAULT_HOST}
    if set(args.host) - known:
        raise errors.UsageError(f"--host: no such host {', '.join(set(args.host) - known)}")
    for m in loaded.objects:
        hosts = object_hosts(m, loaded)
        if args.host and not set(args.host) & set(hosts):
            continue
        where = f"host {hosts[0]}" if len(hosts) == 1 else f"one of hosts {', '.join(hosts)}"
        out.print(f"<!-- {m.ref} on {where} ({m.source}) -->", markup=False)
        out.print(render.to_string(render.render(m)).rstrip("\n"), markup=False)
    return EXIT_OK


def _selection(args: argparse.Namespace) -> plan.Options:
    return plan.Options(
        selector=tuple(getattr(args, "selector", ())),
        targets=frozenset(getattr(args, "target", ())),
    )


def _target(args: argparse.Namespace, loaded: ManifestSet | None = None) -> Target:
    loaded = loaded if loaded is not None else _load(args)
    args.digest = loaded.digest  # what a saved plan pins
    only = _selection(args)
    unknown = [
        t for t in only.targets if not any(m.ref == t or _short(m) == t for m in loaded.objects)
    ]
    if unknown and not getattr(args, "prune", False):
        raise errors.UsageError(
            f"--target {', '.join(sorted(unknown))}: no manifest declares it (with --prune a "
            "target may name a managed object to delete)"
        )
    # A domain's cloud-init seed (``owner``) is in the run when its domain is.
    loaded = dataclasses.replace(
        loaded,
        objects=tuple(m for m in loaded.objects if only.selects(m.owner or m.ref, m.labels)),
    )
    overrides = manifests.load_hosts_override(args.hosts_override) if args.hosts_override else None
    return resolve_hosts(loaded, connect=args.connect, only=args.host, overrides=overrides)


@functools.cache
def _sync_styles() -> dict[status.Sync, str]:
    return {
        status.Sync.SYNCED: "green",
        status.Sync.OUT_OF_SYNC: "yellow",
        status.Sync.PENDING_RESTART: "magenta",
        status.Sync.SUSPENDED: "dim",
        status.Sync.MISSING: "yellow",
        status.Sync.FAILED: "red",
        status.Sync.ORPHAN: "yellow",
    }


def _status(args: argparse.Namespace, out: Console) -> int:
    run = Run(target=_target(args), options=_selection(args), read_only=True)
    try:
        run.connect_and_observe()
        run.build_plans()
    finally:
        run.close()
    statuses = status.build(run.assignments, run.plans, run.states)
    owners = (
        coordination.current_owners(
            args.coordination,
            [hs.host for hs in statuses],
            (candidates for _, candidates in run.target.placed),
        )
        if args.coordination
        else None
    )
    if args.output == "json":
        doc = report.status_json(statuses)
        if owners is not None:
            for h in doc["hosts"]:
                h["owner"] = owners.get(h["host"])
        _print_json(out, doc)
    else:
        for hs in statuses:
            reach = "" if hs.reachable else f" [red]unreachable: {escape(hs.error or '')}[/]"
            rev = f" revision {escape(hs.revision[:12])}" if hs.revision else ""
            owner = ""
            if owners is not None:
                who = owners.get(hs.host)
                owner = " [red]owned by no replica[/]"
                if who:
                    owner = f" owned by replica {escape(who)}"
            out.print(
                f"[bold]Host {escape(hs.host)}[/] ({escape(redact_uri(hs.uri))}){rev}{owner}{reach}"
            )
            for o in hs.objects:
                power = ""
                if o.power:
                    why = f" ({o.power_reason})" if o.power_reason else ""
                    health = "" if o.healthy else " [red]unhealthy[/]"
                    power = f"  {escape(o.power + why)}{health}"
                out.print(
                    f"  [{_sync_styles()[o.sync]}]{o.sync.value:<14}[/] {escape(o.ref)}{power}"
                    f"  [dim]{escape(o.reason)}[/]"
                )
        counts = status.summary(statuses)
        out.print("Status: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    failed = any(o.sync is status.Sync.FAILED for hs in statuses for o in hs.objects)
    return EXIT_ERROR if failed else EXIT_OK


def _short(m: Manifest) -> str:
    return f"{m.kind.value}/{m.name}"


def _warn_in_memory(target: Target, err: Console) -> None:
    """``test:///default`` lives in the process: each command starts from libvirt's
    built-in sample host, so what an ``apply`` made is gone for the next ``plan``."""
    for h in target.hosts:
        if h.uri.rstrip("/") in ("test:///default", "test://default"):
            err.print(
                f"warning: host {escape(h.name)} is test:///default, an in-memory host of "
                "this process only: nothing applied to it is there for the next command "
                "(use a file-backed test host, test:///ABS/PATH.xml, or a real libvirtd)",
                style="yellow",
            )


def _plan_or_apply(args: argparse.Namespace, out: Console, err: Console) -> int:
    # -c URI: read the host while the manifests load. An apply takes the host's
    # lock first, so it still reads the host under its lock; when another run
    # holds it (or with --coordination, whose locks come first) the apply waits
    # for it after loading, as without -c: a bad manifest is reported at once.
    applying = _applying(args)
    early = args.connect and not args.hosts_override
    if applying and getattr(args, "coordination", None):
        early = False
    with contextlib.ExitStack() as held:
        args.locked = ()
        if early and applying:
            host = Host(name=reconcile.DEFAULT_HOST, uri=args.connect)
            try:
                held.enter_context(lock.hold([host], timeout=0, command="apply"))
                args.locked = (host.uri,)
            except lock.HostLocked:
                early = False
        prefetch = reconcile.Prefetch(args.connect, read_only=not applying) if early else None
        try:
            return _plan_or_apply_loaded(args, out, err, prefetch)
        finally:
            if prefetch is not None:
                prefetch.discard()  # unused: a bad manifest, or Host documents


def _lock(
    hosts: Sequence[Host], args: argparse.Namespace, err: Console
) -> contextlib.AbstractContextManager[None]:
    """This machine's lock of ``hosts`` for an apply, waiting up to --lock-timeout."""

    def waiting(host: Host, holder: lock.Holder) -> None:
        err.print(
            f"waiting up to {args.lock_timeout:g}s for host {escape(host.name)}: "
            f"locked by {escape(str(holder))}",
            style="yellow",
        )

    return lock.hold(hosts, timeout=args.lock_timeout, command="apply", on_wait=waiting)


def _plan_or_apply_loaded(
    args: argparse.Namespace, out: Console, err: Console, prefetch: reconcile.Prefetch | None
) -> int:
    loaded = _load(args)
    _check_replace(getattr(args, "replace", []), loaded)
    args.saved = _read_plan(args.planfile) if getattr(args, "planfile", None) else None
    target = _target(args, loaded)
    _warn_in_memory(target, err)
    options = plan.Options(
        prune=args.prune,
        replace=frozenset(getattr(args, "replace", [])),
        max_prune=args.max_prune,
        force_prune=args.force_prune,
        selector=_selection(args).selector,
        targets=_selection(args).targets,
    )
    applying = _applying(args)
    # plan and --dry-run change nothing, so they take no lock.
    # The distributed locks first, then this machine's (the order a watch pass takes them).
    with contextlib.ExitStack() as held:
        if applying and getattr(args, "coordination", None):
            args.guard = held.enter_context(_coordinated(args, target))
        # Locked before the manifests loaded (apply -c URI): not again (flock would wait).
        unlocked = [h for h in target.hosts if h.uri not in args.locked]
        if applying and unlocked:
            held.enter_context(_lock(unlocked, args, err))
        return _reconcile(args, target, options, out, err, prefetch)


@contextlib.contextmanager
def _coordinated(args: argparse.Namespace, target: Target) -> Iterator[coordination.Coordinator]:
    """apply --coordination: hold every host's lock on the backend (as the replicas do)."""
    c = coordination.Coordinator(args.coordination, replica_id=f"apply-{os.getpid()}", member=False)
    c.start()
    try:
        names = [h.name for h in target.hosts]
        with c.hold(names, timeout=args.lock_timeout) as locked:
            if locked.busy:
                raise errors.ReconcileError(
                    f"host(s) {', '.join(locked.busy)} locked on {redact_uri(args.coordination)} "
                    f"by a watch replica or another apply; waited {args.lock_timeout:g}s; "
                    "nothing was changed (give --lock-timeout SECONDS to wait longer)"
                )
            yield c
    finally:
        c.stop()


def _applying(args: argparse.Namespace) -> bool:
    """apply without --dry-run: the one case that changes hosts (read-write, locked)."""
    return bool(args.command == "apply" and not args.dry_run)


def _reconcile(
    args: argparse.Namespace,
    target: Target,
    options: plan.Options,
    out: Console,
    err: Console,
    prefetch: reconcile.Prefetch | None = None,
) -> int:
    stream = _Stream(args, out if args.output == "text" else None)
    run = Run(
        target=target,
        options=options,
        read_only=not _applying(args),
        on_result=stream.result,
        waiting=stream.waiting,
        prefetch=prefetch,
    )
    try:
        run.connect_and_observe()
        guard = getattr(args, "guard", None)
        if guard is not None:  # apply --coordination: every write checks the lock first
            for name, session in run.sessions.items():
                session.guard = functools.partial(guard.check, name)
        run.build_plans()
        problems = [(n, a) for n, hp in run.plans.items() for a in hp.actions if a.error]
        applying = _applying(args)
        if applying and err.is_terminal:
            shown = _Progress(err)
            for session in run.sessions.values():
                session.progress = shown
        if getattr(args, "verbose", False):
            args.as_written = _compared_as_written(run)
        changes = any(a.type.is_change for hp in run.plans.values() for a in hp.actions)
        saved = report.saved_plan(run.plans, args.digest)
        if args.saved is not None and (differences := report.plan_differences(args.saved, saved)):
            _print_plan(run.plans, args, out)
            err.print(f"the fresh plan differs from {escape(args.planfile)}:", style="red")
            for line in differences:
                err.print(f"  {escape(line)}", style="red")
            err.print("nothing was changed; review the new plan and save it again", style="red")
            return EXIT_ERROR
        if not applying:
            _print_plan(run.plans, args, out, run.unplaced())
            if problems:
                return EXIT_ERROR
            if getattr(args, "out", None):
                _write_plan(args.out, saved, err)
            return EXIT_CHANGES if args.detailed_exitcode and changes else EXIT_OK
        text = args.output == "text"

        def before_execute(plans: Mapping[str, plan.HostPlan]) -> None:
            if text:
                _print_plan(plans, args, out, run.unplaced())
            _confirm(plans, args, out if text else err)
            if text:
                out.print("[bold]Apply:[/]")

        try:
            applied = apply(run, before_execute=before_execute)
        except _Declined:
            err.print("apply cancelled; nothing was changed", style="red")
            return EXIT_ERROR
        if applied.blocked:
            # Checks that need a host failed: change nothing anywhere.
            _print_plan(applied.plans, args, out)
            err.print("plan-time checks failed; nothing was changed", style="red")
            return EXIT_ERROR
        left = [(n, a) for n, actions in applied.left.items() for a in actions]
        if args.output == "json":
            _print_json(
                out,
                report.plan_json(
                    applied.plans,
                    applied.results,
                    converged=applied.converged,
                    unplaced=run.unplaced(),
                    pending_restart=applied.pending_restart,
                ),
            )
        else:
            # What was not shown as it happened (an unreachable host, a placement record).
            rest = {
                h: [r for r in rs if id(r) not in stream.shown] for h, rs in applied.results.items()
            }
            _print_results(rest, args, out)
        failed = bool(applied.failed())
        if text:
            _print_convergence(left, failed, out, applied.pending_restart)
        if failed or not applied.converged:
            return EXIT_ERROR
        return EXIT_CHANGES if args.detailed_exitcode and applied.made() else EXIT_OK
    finally:
        run.close()


class _Progress:
    """Uploads and downloads on a terminal: bytes so far, rate, time left (a few times a second)."""

    def __init__(self, err: Console) -> None:
        self.err = err
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.shown: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        with self.lock:
            start = self.started.setdefault(what, now)
            finished = total > 0 and done >= total
            if not finished and now - self.shown.get(what, 0.0) < 0.25:
                return
            self.shown[what] = now
            rate = done / max(now - start, 1e-3)
            line = f"{what}: {_human(done)}"
            if total:
                line += f" of {_human(total)}"
            line += f", {_human(int(rate))}/s"
            if total and rate > 0 and not finished:
                line += f", {int((total - done) / rate)}s left"
            self.err.print(escape(line), style="dim")


def _human(nbytes: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor:
            return f"{nbytes / factor:.1f} {unit}"
    return f"{nbytes} B"


def _write_plan(path: str, document: Mapping[str, Any], err: Console) -> None:
    try:
        Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise errors.UsageError(f"--out {path}: {e.strerror or e}") from e
    err.print(f"Saved the plan to {escape(path)}; apply it with: apply ... --plan {escape(path)}")


def _read_plan(path: str) -> dict[str, Any]:
    """A saved plan, read before any host is (a bad file fails fast)."""
    try:
        return report.read_saved_plan(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise errors.UsageError(f"--plan {path}: {getattr(e, 'strerror', None) or e}") from e


def _print_plan(
    plans: Mapping[str, plan.HostPlan],
    args: argparse.Namespace,
    out: Console,
    unplaced: Sequence[tuple[Manifest, Placement]] = (),
) -> None:
    if args.output == "json":
        _print_json(out, report.plan_json(plans, unplaced=unplaced))
        return
    for name, hp in plans.items():
        status = "" if hp.reachable else f" [red]unreachable: {escape(hp.error or '')}[/]"
        out.print(f"[bold]Host {escape(name)}[/] ({escape(redact_uri(hp.host.uri))}){status}")
        for a in hp.actions:
            quiet = a.error is None and a.note is None
            if a.type is ActionType.UNCHANGED and not args.verbose and quiet:
                continue
            _print_action(a, args, out)
        if not any(a.type.is_change or a.error for a in hp.actions):
            out.print("  no changes")
    for m, p in unplaced:
        out.print(f"[yellow]Note:[/] {escape(report.unplaced_text(m.ref, p))}")
    counts = report.summary(plans)
    out.print("Plan: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


_PARSED = (Kind.DOMAIN, Kind.NETWORK, Kind.STORAGE_POOL, Kind.VOLUME)


def _compared_as_written(run: Run) -> set[str]:
    """Objects whose document libvirt's parser (the private test driver) refused:
    the plan compared them as written, without libvirt's normalisation (``-v``)."""
    refused = set()
    for manifests_of_host in run.assignments.values():
        for m in manifests_of_host:
            if m.kind not in _PARSED:
                continue
            xml = render.to_string(render.render(m))
            if hosts.normalise(m.kind, xml) is None:
                refused.add(m.ref)
    return refused


def _print_action(a: plan.Action, args: argparse.Namespace, out: Console) -> None:
    style, label = _styles()[a.type], f"{report.SYMBOLS[a.type]} {a.type.value}"
    if a.orphan is not None and a.type is ActionType.UNCHANGED:
        style, label = "yellow", "? orphan"  # requires pruning (Argo CD's word)
    disruption = f" ({a.disruption.value})" if a.disruption and a.type.is_change else ""
    where = f"  [dim]{escape(a.source)}[/]" if a.source else ""
    out.print(f"  [{style}]{label} {escape(a.ref)}[/]{disruption}{where}")
    if a.note:
        out.print(f"      [dim]{escape(a.note)}[/]")
    if a.ref in getattr(args, "as_written", ()):
        out.print(
            "      [dim]compared as written: libvirt's parser (test driver) refused the "
            "document, so values libvirt would rewrite may show as changes[/]"
        )
    if a.placement is not None and (a.type is ActionType.CREATE or a.placement.skipped):
        out.print(f"      [dim]{escape(report.placement_text(a.placement))}[/]")
    for line in (a.error or "").splitlines():  # one plan-time problem per line
        out.print(f"      [red]error: {escape(line)}[/]")
    for c in a.changes:
        if a.type in (ActionType.CREATE, ActionType.DELETE) and c.path == "definition":
            continue
        out.print(
            f"      {escape(c.label)}: {escape(report.short(c.display[0]))} → "
            f"{escape(report.short(c.display[1]))}  [dim]\\[{c.disruption.value}][/]"
        )
    if a.blast_radius:
        out.print(
            f"      [magenta]a network restart would affect running domains: "
            f"{escape(', '.join(a.blast_radius))}[/]"
        )
    if getattr(args, "diff", None) == "xml":
        for line in report.xml_edits(a.xml_before, a.xml_after):
            out.print(f"      [cyan]{escape(line)}[/]")
    if not getattr(args, "verbose", False):
        return
    for line in report.xml_diff(a.xml_before, a.xml_after):
        color = (
            "green"
            if line.startswith("+")
            else "red"
            if line.startswith("-")
            else ("cyan" if line.startswith("@@") else "dim")
        )
        out.print(f"      [{color}]{escape(line)}[/]")


def _print_results(
    results: Mapping[str, Sequence[Result]], args: argparse.Namespace, out: Console
) -> None:
    for name, rs in results.items():
        for r in rs:
            _print_result(name, r, args, out)


def _print_result(name: str, r: Result, args: argparse.Namespace, out: Console) -> None:
    if not r.action.type.is_change and r.result == "ok" and not args.verbose:
        return
    mark = {"ok": "[green]ok[/]", "rolled-back": "[yellow]rolled back[/]"}.get(
        r.result, "[red]FAILED[/]"
    )
    calls = ""
    if args.verbose and r.calls:
        calls = "  [dim]" + ", ".join(f"{k}={v}" for k, v in sorted(r.calls.items())) + "[/]"
    out.print(f"  {mark} {escape(name)}: {r.action.type.value} {escape(r.action.ref)}{calls}")
    if r.error:
        out.print(f"      [red]{escape(r.error)}[/]")
    if r.result == "ok" and r.action.placement and r.action.placement.skipped:
        out.print(f"      [dim]{escape(report.placement_text(r.action.placement))}[/]")


class _Stream:
    """apply's outcomes as each action ends (hosts run in parallel: each host's in
    order), and long waits: a spinner on a terminal, a line otherwise. Silent
    without a console (``-o json``: one document at the end)."""

    def __init__(self, args: argparse.Namespace, out: Console | None) -> None:
        self.args, self.out = args, out
        self.shown: set[int] = set()
        self._lock = threading.Lock()
        self._spinning = False  # one live display at a time (rich's rule)

    def result(self, host: str, r: Result) -> None:
        if self.out is not None:
            with self._lock:
                self.shown.add(id(r))
                _print_result(host, r, self.args, self.out)

    @contextlib.contextmanager
    def waiting(self, host: str, what: str, timeout: float) -> Iterator[None]:
        if self.out is None:
            yield
            return
        with self._lock:
            spin = self.out.is_terminal and not self._spinning
            self._spinning = self._spinning or spin
        if not spin:
            self.out.print(f"  [dim]… {escape(host)}: {escape(what)}[/]")
            yield
            return
        try:
            with self.out.status(f"{escape(host)}: {escape(what)}"):
                yield
        finally:
            self._spinning = False


class _Declined(Exception):
    """The person at the terminal did not confirm."""


def _interactive() -> bool:
    """Whether someone can answer: stdin is a terminal (not CI, not a pipe)."""
    return sys.stdin.isatty()


def _confirm(plans: Mapping[str, plan.HostPlan], args: argparse.Namespace, con: Console) -> None:
    """On a terminal, ask before deleting, replacing or restarting (``--yes``: do not)."""
    risky = report.disruptive(plans)
    if not risky or args.yes or not _interactive():
        return
    con.print("[bold]This apply deletes, replaces or restarts:[/]")
    for host, a, why in risky:
        con.print(f"  [red]{escape(why)}[/] {escape(host)}: {escape(a.ref)}")
    try:
        answer = con.input("Apply these changes? \\[y/N]: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise _Declined


def _print_convergence(
    left: Sequence[tuple[str, plan.Action]],
    failed: bool,
    out: Console,
    pending: Mapping[str, Sequence[plan.Action]],
) -> None:
    if failed:
        out.print("[red]Failed:[/] some actions failed (above); the rest was applied.")
    if not left:
        if not failed and pending:
            out.print(f"[green]Converged[/]; [magenta]{escape(report.restart_text(pending))}[/]")
        elif not failed:
            out.print("[green]Converged:[/] a fresh plan finds nothing left to do.")
        return
    out.print(
        "[red]Not converged:[/] libvirt rewrote or refused these fields; "
        "adjust the manifests to match:"
    )
    for name, a in left:
        if not a.changes:
            out.print(f"  {escape(name)}: {escape(a.ref)} still plans {a.type.value}")
        for c in a.changes:
            out.print(
                f"  {escape(name)}: {escape(a.ref)} {escape(c.label)}: "
                f"{escape(report.short(c.display[0]))} → {escape(report.short(c.display[1]))}"
            )


# --- watch ---------------------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        value = units.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value


def _address(text: str) -> str:
    try:
        watch.parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _watch_parser(sub: Any) -> None:
    w = sub.add_parser(
        "watch",
        help="keep the hosts matching the manifests; revert drift (a daemon)",
        description="Reconcile continuously: a change to the manifests (folder, or a git "
        "ref polled every --interval), a libvirt event on a host (a domain redefined, "
        "stopped or undefined, a device added or removed, a network stopped), --resync "
        "and SIGHUP each trigger a pass that plans and applies like `apply`. Invalid "
        "manifests change nothing (the last good ones stay applied). SIGTERM/SIGINT "
        "finish the current pass and exit 0. Metrics on http://ADDR/metrics, health on "
        "/healthz, POST /-/reload polls git now (a webhook).",
    )
    w.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="manifest files or folders (with --git: paths inside the repository)",
    )
    w.add_argument("--git", metavar="URL", help="read the manifests from this git repository")
    w.add_argument("--ref", default="main", help="git branch, tag or commit (default main)")
    w.add_argument(
        "--interval",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="how often to poll git (default 30s; e.g. 1m30s, 2h)",
    )
    w.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where git checkouts are kept (default ~/.cache/virt-reconcile/git)",
    )
    _host_args(w)
    _prune_args(w)
    w.add_argument(
        "--resync",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="reconcile every host at least this often (default 5m)",
    )
    w.add_argument(
        "--metrics-addr",
        type=_address,
        default=defaults.DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help="serve the status page (/), /metrics, /healthz, /readyz and POST /-/reload here "
        f"(default {defaults.DEFAULT_ADDRESS}; port 0: any free port)",
    )
    w.add_argument("--no-metrics", action="store_true", help="serve no HTTP endpoint")
    w.add_argument("-v", "--verbose", action="store_true", help="also log every libvirt event")
    # Daemon operation: drift detection only, and the log's format.
    w.add_argument(
        "--dry-run",
        action="store_true",
        help="detect and report drift and pending changes; change nothing",
    )
    w.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines")
    # Several replicas (README "Running several replicas").
    _coordination_arg(
        w,
        "share the hosts with the other replicas on this tooz coordination backend "
        "(e.g. etcd3+http://127.0.0.1:2379): each host is reconciled by the one replica "
        "that owns it, under its lock; while the backend does not answer, nothing is changed",
    )
    w.add_argument(
        "--replica-id",
        metavar="NAME",
        help="this replica's name in the group (default: the machine's host name; unique)",
    )
    w.add_argument(
        "--lease",
        type=_duration,
        default=defaults.DEFAULT_LEASE,
        metavar="DURATION",
        help="with --coordination: a replica that stops heartbeating loses its hosts and "
        "locks after this long (default 10s; whole seconds, at least 2s)",
    )


def _watch(args: argparse.Namespace, err: Console) -> int:
    if not args.git and not args.paths:
        raise errors.ReconcileError("watch needs manifest PATHs or --git URL")
    if not args.git:
        missing = [p for p in args.paths if not Path(p).exists()]
        if missing:
            raise errors.ReconcileError(f"no such file or folder: {', '.join(missing)}")
    config = watch.Config(
        paths=tuple(args.paths),
        git_url=args.git,
        git_ref=args.ref,
        interval=args.interval,
        cache_dir=args.cache_dir,
        connect=args.connect,
        hosts=tuple(args.host),
        hosts_override=args.hosts_override,
        prune=args.prune,
        max_prune=args.max_prune,
        force_prune=args.force_prune,
        resync=args.resync,
        metrics_addr=None if args.no_metrics else args.metrics_addr,
        dry_run=args.dry_run,
    )
    if (args.replica_id or args.lease != defaults.DEFAULT_LEASE) and not args.coordination:
        raise errors.ReconcileError("--replica-id and --lease need --coordination URL")
    if args.lease < 2:
        raise errors.ReconcileError(
            f"--lease {args.lease:g}s: at least 2s (etcd grants no shorter lease)"
        )
    unlog = watch.logs.configure(err.file, args.log_format, args.verbose)
    coordinator = (
        coordination.Coordinator(args.coordination, replica_id=args.replica_id, lease=args.lease)
        if args.coordination
        else None
    )
    # Each pass holds the hosts' apply locks (no waiting: a held lock is retried with backoff).
    watcher = watch.Watcher(
        config, lock=lambda hosts: lock.hold(hosts, command="watch"), coordination=coordinator
    )
    try:
        watcher.start()
    except OSError as e:
        watcher.stop()
        raise errors.ReconcileError(f"--metrics-addr {args.metrics_addr}: {e.strerror}") from e
    # The worker runs in its own thread; this one only waits, so signal handlers
    # never interrupt a thread holding the work queue's lock.
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    signal.signal(signal.SIGINT, lambda *_: watcher.stop())
    signal.signal(signal.SIGHUP, lambda *_: watcher.reload())
    while not watcher.wait(0.5):
        pass
    unlog()
    return EXIT_OK


def _export(args: argparse.Namespace, out: Console, err: Console) -> int:
    loaded = manifests.load(args.paths) if args.paths else ManifestSet()
    hosts_only = ManifestSet(hosts=loaded.hosts)
    overrides = manifests.load_hosts_override(args.hosts_override) if args.hosts_override else None
    target = resolve_hosts(hosts_only, connect=args.connect, only=args.host, overrides=overrides)
    directory = Path(args.directory)
    run = Run(target=target, options=plan.Options(), read_only=not args.adopt)
    try:
        run.connect_and_observe()
        failed = False
        written: list[Path] = []
        for host in target.hosts:
            state = run.states[host.name]
            if not state.reachable:
                err.print(f"error: host {escape(host.name)}: {escape(state.error or '')}")
                failed = True
                continue
            exported = export.export_host(
                state,
                host_field=host.name if loaded.hosts else None,
                kinds=frozenset(args.kind),
                names=frozenset(args.name),
            )
            files = export.write(exported, directory)
            written += files
            out.print(
                f"Host {escape(host.name)}: exported {len(files)} object(s) to "
                f"{escape(str(directory / export.host_folder(host.name)))}"
            )
            for path in files if args.verbose else ():
                out.print(f"  {escape(str(path))}")
            for o in exported.objects:
                if o.kind is Kind.SECRET:
                    where = (directory / o.path).parent / o.document["spec"]["value"]["file"]
                    out.print(
                        f"  Secret {escape(o.name)}: its value is not exported; put it in "
                        f"{escape(str(where))} (spec.value.file) before applying"
                    )
            for skipped in exported.skipped:
                out.print(f"  [dim]skipped {escape(skipped.ref)}: {escape(skipped.reason)}[/]")
        if args.adopt and written:
            failed = _adopt(args, [str(p) for p in written], run, out, err) or failed
        return EXIT_ERROR if failed else EXIT_OK
    finally:
        run.close()


def _adopt(
    args: argparse.Namespace, paths: Sequence[str], previous: Run, out: Console, err: Console
) -> bool:
    """Mark the exported objects managed: run only the plan's ``adopt`` actions.

    Returns whether something failed. Anything else the plan wants (an export
    that does not describe its object exactly) is reported and left alone.
    """
    written = set(paths)
    loaded = manifests.load([*args.paths, *paths])  # the Host documents, and what we wrote
    loaded = dataclasses.replace(
        loaded, objects=tuple(m for m in loaded.objects if m.source.file in written)
    )
    overrides = manifests.load_hosts_override(args.hosts_override) if args.hosts_override else None
    target = resolve_hosts(loaded, connect=args.connect, only=args.host, overrides=overrides)
    run = Run(target=target, options=plan.Options(), sessions=previous.sessions)
    run.connect_and_observe()
    run.build_plans()
    failed = False
    for name, hp in run.plans.items():
        for a in hp.actions:
            if a.error or (a.type.is_change and a.type is not ActionType.ADOPT):
                failed = True
                what = a.error or ", ".join(c.label for c in a.changes) or a.type.value
                err.print(f"not adopted: {escape(name)}: {escape(a.ref)}: {escape(what)}")
        run.plans[name] = dataclasses.replace(
            hp, actions=tuple(a for a in hp.actions if a.type is ActionType.ADOPT and not a.error)
        )
    results = run.execute()
    adopted = 0
    for name, rs in results.items():
        for r in rs:
            if r.result == "ok":
                adopted += 1
            else:
                failed = True
                err.print(
                    f"adopt failed: {escape(name)}: {escape(r.action.ref)}: {escape(r.error or '')}"
                )
    out.print(f"Adopted {adopted} object(s)")
    return failed
