"""Stage 1 of the pipeline: read manifest files into the validated model.

YAML text -> nodes with line numbers -> plain data (YAML 1.2 core-like
scalars, so ``52:54:00:12:34:56`` and ``no`` stay strings) -> JSON Schema
validation against ``reconciler/schemas/<Kind>.json`` (package data, read with
``importlib.resources``) -> checks across documents ->
``model.ManifestSet``.

Every problem in every file is collected and raised together as one
``errors.ManifestError`` (``FILE:LINE: FIELD.PATH: message``), so one bad
document means nothing is applied. No host is needed here.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.resources
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lxml import etree

from reconciler import cache, cloudinit, errors, images, model, render, units
from reconciler.defaults import IGNORE_FILE
from reconciler.render import identity

if TYPE_CHECKING:
    import pathspec
    import yaml

SCHEMA_PACKAGE = "reconciler"  # the JSON Schemas ship in it: reconciler/schemas/<Kind>.json
MAX_FILE_BYTES = 4 << 20
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 100
MAX_NAME_BYTES = 200
MANIFEST_SUFFIXES = (".yaml", ".yml")
STDIN = "-"  # a PATH that reads manifests from standard input
STDIN_NAME = "<stdin>"  # how messages name it
DEFAULT_HOST_NAME = "default"

_KINDS = {k.value: k for k in model.Kind}

# --------------------------------------------------------------------------
# YAML: a SafeLoader that only composes nodes; ``_Builder`` turns them into
# data with our own scalar rules and records every field's line.

_PLAIN_TAG = "tag:virt-reconcile.dev,2024:plain"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}


class _LoadAbort(Exception):
    """Stops reading one file (or one document) with a located message."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@functools.cache
def _loader_class() -> type[Any]:
    """``_Loader``, made on first use: PyYAML loads only when a file is parsed
    (not for a folder the cache knows)."""
    import yaml
    from yaml._yaml import CParser

    class _FastLoader(yaml.composer.Composer, CParser, yaml.resolver.Resolver):
        """libyaml scans and parses (ten times faster than PyYAML's Python parser);
        composing stays in Python so that aliases can be counted."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    class _Loader(_FastLoader):
        """Composes YAML nodes; plain scalars keep a marker tag for ``_Builder``.

        Implicit typing (YAML 1.1's ``on``/``no``/sexagesimal ints) is switched
        off here; ``_plain_scalar`` applies the small YAML 1.2 core-like rule set.
        Aliases are counted so that a "billion laughs" document fails fast.
        """

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.alias_count = 0

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is yaml.ScalarNode and implicit[0]:
                return _PLAIN_TAG
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            if self.check_event(yaml.AliasEvent):
                self.alias_count += 1
                if self.alias_count > MAX_ALIASES:
                    event = self.peek_event()
                    line = event.start_mark.line + 1 if event and event.start_mark else 0
                    raise _LoadAbort(line, f"document uses more than {MAX_ALIASES} aliases")
            node: yaml.Node | None = super().compose_node(parent, index)
            return node

    return _Loader


def _plain_scalar(text: str) -> Any:
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass(kw_only=True)
class _Builder:
    """Node tree -> plain data; ``lines`` and ``raws`` are keyed by dotted path."""

    lines: dict[str, int] = field(default_factory=dict)
    # Original text of plain scalars that became int/float/bool, so a value the
    # schema wants as a string ("names are always strings") can be restored.
    raws: dict[str, str] = field(default_factory=dict)
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    # The first line of a scalar's text: the line after the key for block
    # scalars (``xml: |``), so a line inside an XML overlay maps to the file.
    text_lines: dict[str, int] = field(default_factory=dict)
    nodes: int = 0

    def build(self, node: yaml.Node, path: str = "", depth: int = 0) -> Any:
        import yaml

        self.nodes += 1
        line = node.start_mark.line + 1
        if self.nodes > MAX_NODES:
            raise _LoadAbort(line, f"document expands to more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise _LoadAbort(line, f"document is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.ScalarNode):
            self.text_lines[path] = line + 1 if node.style in ("|", ">") else line
            if node.tag == _PLAIN_TAG:
                value = _plain_scalar(str(node.value))
                if value is not None and not isinstance(value, str):
                    self.raws[path] = str(node.value)
                return value
            if node.tag == _STR_TAG:
                return str(node.value)
        elif isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            items = []
            for index, item in enumerate(node.value):
                item_path = _join(path, index)
                self.lines[item_path] = item.start_mark.line + 1
                items.append(self.build(item, item_path, depth + 1))
            return items
        elif isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append((key_line, path, "a key must be plain text"))
                    continue
                key = str(key_node.value)
                key_path = _join(path, key)
                if key in result:
                    self.problems.append((key_line, key_path, f"duplicate key {key!r}"))
                    continue
                self.lines[key_path] = key_line
                result[key] = self.build(value_node, key_path, depth + 1)
            return result
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        self.problems.append((line, path, f"unsupported YAML tag {tag!r}"))
        return None


@dataclass(frozen=True, kw_only=True)
class _Document:
    file: str
    line: int  # the line of its first key
    data: dict[str, Any]
    lines: dict[str, int]
    raws: dict[str, str]
    text_lines: dict[str, int] = field(default_factory=dict)


def _read_text(file: str, problems: list[errors.Problem], read: dict[str, bytes]) -> str | None:
    """One file's text; its bytes go into ``read`` (standard input is there already)."""

    def problem(line: int, message: str) -> None:
        problems.append(errors.Problem(file=file, line=line, path="", message=message))

    try:
        if file not in read:
            with open(file, "rb") as stream:
                read[file] = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problem(0, f"cannot read file: {exc.strerror or exc}")
        return None
    data = read[file]
    if len(data) > MAX_FILE_BYTES:
        problem(1, "file is larger than 4 MiB")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        problem(line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column})")
        return None
    return text.removeprefix("\ufeff")


def _read_documents(
    file: str, problems: list[errors.Problem], read: dict[str, bytes]
) -> list[_Document]:
    """Every non-empty document of one file; problems are appended, not raised."""
    text = _read_text(file, problems, read)
    if text is None:
        return []
    import yaml

    documents: list[_Document] = []

    def problem(line: int, path: str, message: str) -> None:
        problems.append(errors.Problem(file=file, line=line, path=path, message=message))

    loader: Any = None
    try:
        loader = _loader_class()(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            builder = _Builder()
            data = builder.build(node)
            for line, path, message in builder.problems:
                problem(line, path, message)
            if builder.problems:
                continue  # schema errors would only repeat them
            if data is None:
                continue  # an empty document ("---" alone)
            start = node.start_mark.line + 1
            if not isinstance(data, dict):
                kind = "a list" if isinstance(data, list) else f"the scalar {data!r}"
                problem(start, "", f"a document must be a mapping, not {kind}")
                continue
            if isinstance(node, yaml.MappingNode) and node.value:
                start = node.value[0][0].start_mark.line + 1
            documents.append(
                _Document(
                    file=file,
                    line=start,
                    data=data,
                    lines=builder.lines,
                    raws=builder.raws,
                    text_lines=builder.text_lines,
                )
            )
    except _LoadAbort as exc:
        problem(exc.line, "", exc.message)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            detail = f"{exc.problem} ({exc.context})"
        problem(line, "", f"invalid YAML: {detail}")
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        problem(line, "", f"invalid YAML: unacceptable character #x{exc.character:04x}")
    except yaml.YAMLError as exc:
        problem(1, "", f"invalid YAML: {exc}")
    except RecursionError:
        problem(1, "", "invalid YAML: nested too deeply")
    finally:
        if loader is not None:
            loader.dispose()
    return documents


# --------------------------------------------------------------------------
# Files


_Rules = list[tuple[str, "pathspec.GitIgnoreSpec"]]


def _gitignore(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    import pathspec  # on first use: most folders have no ignore file and no --exclude

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _manifest_files(
    paths: Sequence[str], problems: list[errors.Problem], exclude: Sequence[str] = ()
) -> list[str]:
    """The files to read, as they will be named in messages, in a stable order.

    Directories are walked recursively in sorted order; hidden files and
    directories (``.git``, ``.github``) are skipped, and so is what a
    ``.virtreconcileignore`` file in a walked folder names (gitignore
    patterns, relative to that folder). A file named directly is read
    whatever its suffix; ``-`` is standard input. ``exclude`` patterns
    (gitignore-like: ``*-old.yaml`` anywhere, ``staging/`` a folder) skip
    files under a given folder (matched relative to it) and files named directly.
    """
    found: list[str] = []
    seen: set[str] = set()
    excluded = _gitignore(exclude) if exclude else None
    real_dirs: dict[str, str] = {}

    def add(display: str, folder: str | None = None) -> None:
        if display == STDIN_NAME:
            real = display
        elif folder is not None and not os.path.islink(display):
            # A file that is no link is where its folder really is (one
            # realpath per folder, not per file: thousands of files).
            if folder not in real_dirs:
                real_dirs[folder] = os.path.realpath(folder)
            real = os.path.join(real_dirs[folder], os.path.basename(display))
        else:
            real = os.path.realpath(display)
        if real not in seen:
            seen.add(real)
            found.append(display)

    for given in paths:
        if given == STDIN:
            add(STDIN_NAME)
        elif os.path.isdir(given):
            # The ignore files in effect in each folder: (their folder, patterns).
            rules: dict[str, _Rules] = {given: []}
            for root, dirs, files in os.walk(given):
                here = rules.pop(root, [])
                if IGNORE_FILE in files:
                    ignore = os.path.join(root, IGNORE_FILE)
                    try:
                        with open(ignore, encoding="utf-8") as stream:
                            here = [*here, (root, _gitignore(stream))]
                    except (OSError, UnicodeDecodeError, ValueError) as exc:
                        problems.append(
                            errors.Problem(file=ignore, line=0, path="", message=f"{exc}")
                        )

                def skipped(
                    name: str, tail: str, given: str = given, root: str = root, here: _Rules = here
                ) -> bool:
                    if excluded is None and not here:
                        return False
                    path = os.path.join(root, name)
                    if excluded is not None and excluded.match_file(
                        os.path.relpath(path, given) + tail
                    ):
                        return True
                    return any(
                        spec.match_file(os.path.relpath(path, base) + tail) for base, spec in here
                    )

                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not skipped(d, "/"))
                rules.update((os.path.join(root, d), here) for d in dirs)
                for name in sorted(files):
                    if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                        continue
                    if not skipped(name, ""):
                        add(os.path.join(root, name), root)
        elif os.path.exists(given):
            if excluded is None or not excluded.match_file(given):
                add(given)
        else:
            problems.append(
                errors.Problem(file=given, line=0, path="", message="no such file or directory")
            )
    return found


# --------------------------------------------------------------------------
# Schema validation


def _is_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer; a vCPU count of 2.0 is a typo.
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def _validator(kind: model.Kind) -> Any:
    # jsonschema loads here, on first use: a folder the cache knows needs none.
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return validator(json.loads(schema_text(kind)))


def schema_text(kind: model.Kind) -> str:
    """The JSON Schema of one kind, read from the installed package (wheel or checkout)."""
    resource = importlib.resources.files(SCHEMA_PACKAGE) / "schemas" / f"{kind.value}.json"
    return resource.read_text(encoding="utf-8")


_TYPE_NAMES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "mapping",
    "array": "list",
    "null": "null",
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _show(value: Any, raw: str | None = None) -> str:
    if raw is not None:
        return repr(raw)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _error_problems(
    err: Any, doc: _Document
) -> Iterator[tuple[str, str]]:  # (dotted path, message)
    keys = [str(p) for p in err.absolute_path]
    path = ".".join(keys)
    schema = err.schema if isinstance(err.schema, dict) else {}
    value = err.instance
    shown = _show(value, doc.raws.get(path))
    custom = schema.get("x-messages", {}).get(err.validator)
    validator = err.validator
    if custom is not None:
        extra = schema.get("x-field")
        message = custom.replace("{value}", shown)
        hint = units.size_hint(value) if schema.get("pattern") == units.SIZE_PATTERN else None
        yield (_join(path, extra) if extra else path), f"{message}; {hint}" if hint else message
    elif validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        for key in value:
            if key in known:
                continue
            message = f"unknown field {key!r}"
            close = difflib.get_close_matches(key, known, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            yield _join(path, key), message
    elif validator == "required":
        for key in err.validator_value:
            if key not in value:
                yield _join(path, key), "required field is missing"
    elif validator == "type":
        wanted = err.validator_value
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted)
        yield path, f"expected {names}, got {_type_name(value)}"
    elif validator == "enum":
        choices = ", ".join(str(c) for c in err.validator_value)
        yield path, f"must be one of: {choices} (got {shown})"
    elif validator == "const":
        yield path, f"must be {_show(err.validator_value)} (got {shown})"
    elif validator == "minimum":
        yield path, f"must be at least {err.validator_value} (got {shown})"
    elif validator == "maximum":
        yield path, f"must be at most {err.validator_value} (got {shown})"
    elif validator == "minItems":
        yield path, f"needs at least {_plural(err.validator_value, 'item')}"
    elif validator == "maxItems":
        yield path, f"takes at most {_plural(err.validator_value, 'item')}"
    elif validator == "uniqueItems":
        yield path, "items must be unique"
    elif validator == "minLength":
        if err.validator_value == 1:
            yield path, "must not be empty"
        else:
            yield path, f"must be at least {_plural(err.validator_value, 'character')}"
    elif validator == "maxLength":
        yield path, f"must be at most {_plural(err.validator_value, 'character')}"
    elif validator == "minProperties":
        yield path, f"needs at least {_plural(err.validator_value, 'field')}"
    elif validator == "maxProperties":
        yield path, f"takes at most {_plural(err.validator_value, 'field')}"
    elif validator == "pattern":
        yield path, f"{shown} does not match {err.validator_value!r}"
    else:
        yield path, str(err.message)


def _line_of(doc: _Document, path: str) -> int:
    """The line of the deepest field of ``path`` that exists in the document."""
    while path:
        if path in doc.lines:
            return doc.lines[path]
        path = path.rpartition(".")[0]
    return doc.line


def _schema_errors(validator: Any, doc: _Document) -> list[Any]:
    """Schema errors left after giving back the text of plain scalars where the
    schema wants a string.

    ``name: 123`` or ``serial: 0042`` read as numbers by the YAML rules; names
    and other string fields are always strings, so the original text is used.
    Repeats because a fixed value may uncover errors below it (never deeper
    than the document, so the loop is short); a valid document is checked once.
    """
    for _ in range(MAX_DEPTH):
        changed = False
        found = list(validator.iter_errors(doc.data))
        for err in found:
            wanted = err.validator_value
            if err.validator != "type" or "string" not in (
                [wanted] if isinstance(wanted, str) else wanted
            ):
                continue
            keys = list(err.absolute_path)
            raw = doc.raws.get(".".join(str(k) for k in keys))
            if raw is None or not keys:
                continue
            parent: Any = doc.data
            for key in keys[:-1]:
                parent = parent[key]
            parent[keys[-1]] = raw
            changed = True
        if not changed:
            return found
    return list(validator.iter_errors(doc.data))


def _validate(
    doc: _Document, problems: list[errors.Problem]
) -> tuple[model.Kind | None, frozenset[str]]:
    """Envelope and schema checks: the kind (None when the envelope is wrong)
    and the paths of the fields the schema refused (empty: the document is valid)."""

    def problem(path: str, message: str) -> None:
        problems.append(
            errors.Problem(file=doc.file, line=_line_of(doc, path), path=path, message=message)
        )

    data = doc.data
    ok = True
    if "apiVersion" not in data:
        problem("apiVersion", f"required field is missing (use {model.API_VERSION!r})")
        ok = False
    elif data["apiVersion"] != model.API_VERSION:
        shown = _show(data["apiVersion"], doc.raws.get("apiVersion"))
        problem("apiVersion", f"unknown apiVersion {shown} (use {model.API_VERSION!r})")
        ok = False
    kind = _KINDS.get(data["kind"]) if isinstance(data.get("kind"), str) else None
    if "kind" not in data:
        problem("kind", f"required field is missing (one of: {', '.join(_KINDS)})")
    elif kind is None:
        shown = _show(data["kind"], doc.raws.get("kind"))
        close = difflib.get_close_matches(str(data["kind"]), list(_KINDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(_KINDS)}"
        problem("kind", f"unknown kind {shown} ({hint})")
    if kind is None or not ok:
        return None, frozenset()
    validator = _validator(kind)
    found: set[tuple[str, str]] = set()
    for err in _schema_errors(validator, doc):
        found.update(_error_problems(err, doc))
    for path, message in sorted(found):
        problem(path, message)
    return kind, frozenset(path for path, _ in found)


def _touches(path: str, broken: frozenset[str]) -> bool:
    """Whether ``path`` is, holds or lies in a field the schema refused."""
    return any(
        path == b or path.startswith(f"{b}.") or b.startswith(f"{path}.") or not b for b in broken
    )


# The fields the checks across documents read: a document whose schema errors
# leave these alone still takes part, so a duplicate name or MAC is reported in
# the same run as the schema errors.
_CROSS_PATHS = (
    "metadata",
    "spec.host",
    "spec.placement",
    "spec.pool",
    "spec.uri",
    "spec.interfaces",
)


# --------------------------------------------------------------------------
# Checks within one valid document


def _check_domain(doc: _Document, problem: Callable[[str, str], None]) -> None:
    spec = doc.data["spec"]
    if "currentMemory" in spec and units.parse_size(spec["currentMemory"]) > units.parse_size(
        spec["memory"]
    ):
        problem(
            "spec.currentMemory",
            f"currentMemory ({spec['currentMemory']}) is more than memory ({spec['memory']})",
        )
    vcpus = spec.get("vcpus", 1)
    if "maxVcpus" in spec and vcpus > spec["maxVcpus"]:
        problem("spec.vcpus", f"vcpus ({vcpus}) is more than maxVcpus ({spec['maxVcpus']})")
    targets: dict[str, int] = {}
    for index, disk in enumerate(spec.get("disks", [])):
        if disk["target"] in targets:
            first = targets[disk["target"]]
            problem(
                f"spec.disks.{index}.target",
                f"target {disk['target']!r} is already used by spec.disks.{first}",
            )
        targets.setdefault(disk["target"], index)
    names: dict[str, int] = {}
    for index, nic in enumerate(spec.get("interfaces", [])):
        name = nic.get("name", f"nic{index}")
        if name in names:
            problem(
                f"spec.interfaces.{index}.name",
                f"interface name {name!r} is already used by spec.interfaces.{names[name]}",
            )
        names.setdefault(name, index)
        mac = nic.get("mac")
        if mac is not None and int(mac[:2], 16) & 1:
            problem(f"spec.interfaces.{index}.mac", f"MAC {mac!r} is a multicast address")


def _check_volume_source(doc: _Document, problem: Callable[[str, str], None]) -> None:
    """A local image (a file, a ``file://`` URL) is read now: it must exist, be
    qcow2 or raw as ``format`` says, and fit in ``capacity``. An http(s) image
    needs a checksum (it is checked after the download, at apply time)."""
    spec = doc.data["spec"]
    source = spec.get("source")
    if source is None:
        return
    if "encryption" in spec:
        problem("spec.encryption", "an encrypted volume starts empty: not with spec.source")
        return
    if "url" in source and images.local_path(source["url"]) is None and "sha256" not in source:
        problem("spec.source.sha256", "required for an http:// or https:// URL")
        return
    if "file" in source:
        path = os.path.join(os.path.dirname(os.path.abspath(doc.file)), source["file"])
        field_name = "spec.source.file"
    elif "url" in source and images.local_path(source["url"]) is not None:
        path, field_name = str(images.local_path(source["url"])), "spec.source.url"
    else:
        return
    if not os.path.isfile(path):
        problem(field_name, f"no such file: {os.path.normpath(path)}")
        return
    try:
        info = images.inspect(path)
    except images.ImageError as e:
        problem(field_name, str(e))
        return
    fmt = spec.get("format")
    if fmt is None and info.format != "raw":
        problem("spec.format", f"the source is a {info.format} image: set format: {info.format}")
    elif fmt is not None and fmt != info.format:
        problem("spec.format", f"{fmt} does not match the source, a {info.format} image")
    if "capacity" in spec and units.parse_size(spec["capacity"]) < info.virtual_size:
        problem(
            "spec.capacity",
            f"{spec['capacity']} is less than the source's virtual size "
            f"({info.virtual_size} bytes)",
        )


# The largest sizes that make sense: memory no host has, or bytes libvirt cannot
# count (a signed 64-bit number), are refused here rather than by the host.
_MAX_SIZES: dict[model.Kind, dict[str, tuple[int, str]]] = {
    model.Kind.DOMAIN: {
        "memory": (64 << 40, "64 TiB (more memory than any host has)"),
        "currentMemory": (64 << 40, "64 TiB (more memory than any host has)"),
    },
    model.Kind.VOLUME: {
        "capacity": ((1 << 63) - 1, "8 EiB (more bytes than libvirt can count)"),
        "allocation": ((1 << 63) - 1, "8 EiB (more bytes than libvirt can count)"),
    },
}


def _check_sizes(doc: _Document, kind: model.Kind, problem: Callable[[str, str], None]) -> None:
    spec = doc.data["spec"]
    for field_name, (limit, why) in _MAX_SIZES.get(kind, {}).items():
        if field_name in spec and units.parse_size(spec[field_name]) > limit:
            problem(f"spec.{field_name}", f"size {spec[field_name]!r} is more than {why}")


# --------------------------------------------------------------------------
# Checks across documents


@dataclass(frozen=True, kw_only=True)
class _Valid:
    doc: _Document
    kind: model.Kind
    # False: the document has problems of its own, but the fields the checks
    # across documents read are sound; it takes part in them, nothing more.
    complete: bool = True

    @property
    def name(self) -> str:
        return str(self.doc.data["metadata"]["name"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.doc.data["spec"]
        return spec

    def where(self, path: str) -> str:
        return f"{self.doc.file}:{_line_of(self.doc, path)}"


def _check_hosts(
    valid: list[_Valid], problem: Callable[[_Valid, str, str], None]
) -> dict[str, model.Host]:
    hosts: dict[str, model.Host] = {}
    first: dict[str, _Valid] = {}
    for item in valid:
        if item.kind is not model.Kind.HOST:
            continue
        if item.name in first:
            other = first[item.name]
            problem(
                item,
                "metadata.name",
                f"Host {item.name!r} is also declared at {other.where('metadata.name')}",
            )
            problem(
                other,
                "metadata.name",
                f"Host {item.name!r} is also declared at {item.where('metadata.name')}",
            )
            continue
        first[item.name] = item
        hosts[item.name] = model.Host(
            name=item.name,
            uri=item.spec["uri"],
            labels=dict(item.doc.data["metadata"].get("labels", {})),
            source=model.Source(file=item.doc.file, line=item.doc.line),
        )
    return hosts


def _candidates(
    item: _Valid, hosts: Mapping[str, model.Host], problem: Callable[[_Valid, str, str], None]
) -> frozenset[str]:
    """The hosts an object may live on; "" is the single default host."""
    spec = item.spec
    if "host" in spec:
        if spec["host"] not in hosts:
            problem(item, "spec.host", f"no Host document declares {spec['host']!r}")
        return frozenset([spec["host"]])
    placement = spec.get("placement")
    if placement is not None:
        if "hosts" in placement:
            for index, name in enumerate(placement["hosts"]):
                if name not in hosts:
                    problem(
                        item, f"spec.placement.hosts.{index}", f"no Host document declares {name!r}"
                    )
            return frozenset(placement["hosts"])
        selector = placement["selector"]
        matched = frozenset(
            h.name for h in hosts.values() if all(h.labels.get(k) == v for k, v in selector.items())
        )
        if not matched:
            problem(item, "spec.placement.selector", "matches no Host document")
        return matched
    if len(hosts) > 1:
        problem(
            item,
            "spec.host",
            f"required when several Host documents exist ({', '.join(sorted(hosts))})",
        )
    return frozenset(hosts) if len(hosts) == 1 else frozenset([""])


def _check_duplicates(
    objects: list[tuple[_Valid, frozenset[str]]], problem: Callable[[_Valid, str, str], None]
) -> None:
    groups: dict[tuple[str, ...], list[tuple[_Valid, frozenset[str]]]] = {}
    for item, candidates in objects:
        key: tuple[str, ...] = (item.kind.value, item.name)
        if item.kind is model.Kind.VOLUME:
            key = (item.kind.value, str(item.spec["pool"]), item.name)
        groups.setdefault(key, []).append((item, candidates))
    for members in groups.values():
        for i, (a, hosts_a) in enumerate(members):
            for b, hosts_b in members[i + 1 :]:
                shared = sorted(hosts_a & hosts_b)
                if not shared:
                    continue
                what = f"{a.kind.value} {a.name!r}"
                if a.kind is model.Kind.VOLUME:
                    what = f"Volume {a.name!r} in pool {a.spec['pool']!r}"
                if shared != [""]:
                    what += f" on host {shared[0]!r}"
                problem(
                    a, "metadata.name", f"{what} is also declared at {b.where('metadata.name')}"
                )
                problem(
                    b, "metadata.name", f"{what} is also declared at {a.where('metadata.name')}"
                )


def interface_macs(domain: str, spec: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    """(index, interface name, MAC) of each interface of a domain: its own, else derived."""
    out = []
    for index, nic in enumerate(spec.get("interfaces", [])):
        name = nic.get("name", f"nic{index}")
        mac = str(nic["mac"]).lower() if "mac" in nic else identity.derive_mac(domain, name)
        out.append((index, name, mac))
    return out


def _check_macs(domains: list[_Valid], problem: Callable[[_Valid, str, str], None]) -> None:
    users: dict[str, list[tuple[_Valid, int, str]]] = {}
    for item in domains:
        for index, name, mac in interface_macs(item.name, item.spec):
            users.setdefault(mac, []).append((item, index, name))
    for mac, group in users.items():
        if len(group) < 2:
            continue
        for item, index, name in group:
            others = ", ".join(
                f"Domain {o.name!r} interface {o_name!r} at {o.where(f'spec.interfaces.{o_index}')}"
                for o, o_index, o_name in group
                if (o, o_index) != (item, index)
            )
            nic = item.spec["interfaces"][index]
            what = (
                f"MAC {mac}" if "mac" in nic else f"MAC {mac} (derived from '{item.name}/{name}')"
            )
            problem(item, f"spec.interfaces.{index}", f"{what} is also used by {others}")


def _check_encryption(items: list[_Valid], problem: Callable[[_Valid, str, str], None]) -> None:
    """An encrypted volume's secret has a volume usage (libvirt looks for one);
    a domain disk on an encrypted volume gets its ``encryption`` (filled in here)."""
    secrets = {i.name: i for i in items if i.kind is model.Kind.SECRET}
    encrypted: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        enc = item.spec.get("encryption") if item.kind is model.Kind.VOLUME else None
        if enc is None:
            continue
        encrypted[(str(item.spec["pool"]), item.name)] = dict(enc)
        secret = secrets.get(enc["secret"])
        if secret is not None and "volume" not in secret.spec["usage"]:
            problem(
                item,
                "spec.encryption.secret",
                f"Secret {enc['secret']!r} has usage {next(iter(secret.spec['usage']))}; the "
                f"passphrase of a volume is a Secret with usage {{volume: PATH}} "
                f"({secret.where('spec.usage')})",
            )
    for item in items:
        if item.kind is not model.Kind.DOMAIN:
            continue
        for disk in item.spec.get("disks", []):
            ref = (disk.get("source") or {}).get("volume")
            if ref is not None and "encryption" not in disk:
                found = encrypted.get((str(ref["pool"]), str(ref["name"])))
                if found is not None:
                    disk["encryption"] = found


def _expand_cloud_init(
    items: list[_Valid], problem: Callable[[_Valid, str, str], None]
) -> dict[str, model.Manifest]:
    """Each complete Domain with ``spec.cloudInit`` gets its seed as a cdrom in
    ``spec.disks`` (changed in place); the seed volumes, by domain name."""
    seeds: dict[str, model.Manifest] = {}
    for item in items:
        if item.kind is not model.Kind.DOMAIN or "cloudInit" not in item.spec:
            continue
        if "placement" in item.spec:
            problem(
                item,
                "spec.cloudInit",
                "a seed is a volume on the domain's host: use spec.host, not spec.placement",
            )
            continue
        base_dir = os.path.dirname(os.path.abspath(item.doc.file))
        try:
            seed = cloudinit.expand(item.name, item.spec, base_dir)
        except cloudinit.SeedError as e:
            problem(item, e.field, e.message)
            continue
        line = _line_of(item.doc, "spec.cloudInit")
        disks = item.spec.setdefault("disks", [])
        item.doc.lines[f"spec.disks.{len(disks)}"] = line
        disks.append(seed.disk)
        seeds[item.name] = model.Manifest(
            kind=model.Kind.VOLUME,
            name=seed.volume,
            # No format: libvirt probes an uploaded ISO as "iso", which no manifest says.
            spec={"pool": seed.pool, "source": {"seed": f"Domain/{item.name}"}},
            source=model.Source(file=item.doc.file, line=line),
            host=item.spec.get("host"),
            labels=dict(item.doc.data["metadata"].get("labels", {})),
            lines={"spec": line, "spec.pool": _line_of(item.doc, "spec.cloudInit.pool")},
            content=seed.image,
            owner=f"Domain/{item.name}",
        )
    return seeds


# --------------------------------------------------------------------------
# Public API


def _sorted(problems: list[errors.Problem]) -> list[errors.Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.path, p.message))


def _valid_documents(
    files: Sequence[str],
    problems: list[errors.Problem],
    read: dict[str, bytes] | None = None,
    store: cache.Store | None = None,
    digests: dict[str, str] | None = None,
) -> list[_Valid]:
    """The documents of known kind that the checks across documents can use.

    The checks within one document also run on a document the schema refused,
    on the fields it did not refuse, so every problem shows in one run.
    """
    valid: list[_Valid] = []
    read = {} if read is None else read
    store = cache.Store.memory() if store is None else store
    digests = {} if digests is None else digests
    for file in files:
        for doc, kind, broken in _checked_documents(file, problems, read, store, digests):
            if kind is None:
                continue
            before = len(problems)

            def problem(
                path: str, message: str, doc: _Document = doc, broken: frozenset[str] = broken
            ) -> None:
                if _touches(path, broken):
                    return  # read off a refused field: the schema error says it
                problems.append(
                    errors.Problem(
                        file=doc.file, line=_line_of(doc, path), path=path, message=message
                    )
                )

            for check in _document_checks(kind):
                if not broken:
                    check(doc, problem)
                    continue
                # A refused field may have any shape: a check that trips over
                # one has nothing to add to the schema error.
                with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                    check(doc, problem)
            if any(_touches(p, broken) for p in _CROSS_PATHS):
                continue
            valid.append(
                _Valid(doc=doc, kind=kind, complete=not broken and len(problems) == before)
            )
    return valid


def _checked_documents(
    file: str,
    problems: list[errors.Problem],
    read: dict[str, bytes],
    store: cache.Store,
    digests: dict[str, str],
) -> list[tuple[_Document, model.Kind | None, frozenset[str]]]:
    """The documents of one file, each with ``_validate``'s verdict.

    A file whose every document is valid is cached on disk (in ``store``, keyed
    by its bytes alone), so an unchanged folder is neither composed nor
    schema-checked again: both cost milliseconds per document. A file with a
    problem is never cached (its errors come from the full checks every time).
    """
    data = read.get(file)
    if data is None:
        with contextlib.suppress(OSError), open(file, "rb") as stream:
            data = read[file] = stream.read(MAX_FILE_BYTES + 1)
    # Keyed by the bytes alone (nothing cached depends on where the file is): a new
    # git checkout, a folder elsewhere, reads its unchanged files from the cache.
    if data is not None and file not in digests:
        digests[file] = cache.digest(data)
    entry = "file:" + digests[file] if data is not None else None
    cached = store.get(entry) if entry is not None else None
    if isinstance(cached, list):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return [
                (
                    _Document(
                        file=file,
                        line=d["line"],
                        data=d["data"],
                        lines=d["lines"],
                        raws=d["raws"],
                        text_lines=d["text_lines"],
                    ),
                    _KINDS[d["kind"]],
                    frozenset(),
                )
                for d in cached
            ]
    before = len(problems)
    checked = [(doc, *_validate(doc, problems)) for doc in _read_documents(file, problems, read)]
    # A Secret document may hold its value: never written to the cache.
    secret = any(kind is model.Kind.SECRET for _, kind, _ in checked)
    if entry is not None and len(problems) == before and not secret:
        stored = [
            {
                "line": doc.line,
                "data": doc.data,
                "lines": doc.lines,
                "raws": doc.raws,
                "text_lines": doc.text_lines,
                "kind": kind.value,
            }
            for doc, kind, _ in checked
            if kind is not None
        ]
        store.put(entry, stored)
    return checked


def _check_name(doc: _Document, problem: Callable[[str, str], None]) -> None:
    name_bytes = len(str(doc.data["metadata"]["name"]).encode("utf-8"))
    if name_bytes > MAX_NAME_BYTES:
        # libvirt keeps objects in files named after them (NAME.xml, a
        # volume's own file): a longer name fails at the host, mid-run.
        problem(
            "metadata.name",
            f"name is {name_bytes} bytes in UTF-8, more than {MAX_NAME_BYTES}",
        )


def _document_checks(
    kind: model.Kind,
) -> list[Callable[[_Document, Callable[[str, str], None]], None]]:
    checks: list[Callable[[_Document, Callable[[str, str], None]], None]] = []
    if kind is model.Kind.DOMAIN:
        checks.append(_check_domain)
    if kind is model.Kind.VOLUME:
        checks.append(_check_volume_source)
    checks.append(lambda doc, problem: _check_sizes(doc, kind, problem))
    checks.append(_check_name)
    return checks


def _check_render(
    item: _Valid, manifest: model.Manifest, store: cache.Store
) -> model.Manifest | errors.Problem:
    """Render once now, so a bad ``spec.xml`` overlay fails validation, not a host run.

    The overlay is parsed with no DTD, no entities, no network and a 1 MiB cap
    (``xmlutil.parse_xml``); a line inside it is reported as a line of the file.
    """
    doc = item.doc
    path = "spec.xml" if "xml" in item.spec else "spec"
    line = _line_of(doc, path)
    entry = _render_entry(manifest)
    cached = store.get(entry) if entry is not None else None
    if isinstance(cached, str):
        return replace(manifest, rendered=cached)
    try:
        xml = render.render(manifest)
    except render.XMLInputError as e:
        message = str(e).removeprefix("spec.xml: ")
        if path == "spec.xml" and e.line is not None:
            message = message.removeprefix(f"line {e.line}: ")
            line = doc.text_lines.get(path, line) + e.line - 1
        return errors.Problem(file=doc.file, line=line, path=path, message=message)
    except ValueError as e:
        field, sep, rest = str(e).partition(": ")
        if sep and field.startswith("spec.") and " " not in field:
            return errors.Problem(
                file=doc.file, line=_line_of(doc, field), path=field, message=rest
            )
        return errors.Problem(file=doc.file, line=line, path=path, message=str(e))
    text = etree.tostring(xml, encoding="unicode")
    if entry is not None:
        store.put(entry, text)
    return replace(manifest, rendered=text)


def _render_entry(manifest: model.Manifest) -> str | None:
    """Where the XML of ``manifest`` is cached (``render`` is a function of its
    kind, name and spec); None for a Secret (its spec may hold the value)."""
    if manifest.kind is model.Kind.SECRET:
        return None
    if manifest.origin:  # the same file bytes and line: the same kind, name and spec
        return "rendered:" + manifest.origin.partition(":")[2]  # not where the file is
    try:
        spec = json.dumps(manifest.spec)
    except (TypeError, ValueError):
        return None
    return "rendered:" + cache.digest(manifest.kind.value, manifest.name, spec)


def load(
    paths: Sequence[str], *, default_uri: str | None = None, exclude: Sequence[str] = ()
) -> model.ManifestSet:
    """Read, validate and cross-check every manifest under ``paths``.

    Raises ``errors.ManifestError`` listing every problem, sorted by file and
    line. Without Host documents, ``default_uri`` (from ``-c`` or
    ``$LIBVIRT_DEFAULT_URI``) becomes the single host named ``"default"``;
    with Host documents it is ignored (the caller rejects ``-c``). ``-`` reads
    standard input (named ``<stdin>`` in messages); ``exclude`` holds
    gitignore-like patterns of files to skip (``_manifest_files``).
    """
    problems: list[errors.Problem] = []
    read: dict[str, bytes] = {}
    if STDIN in paths:
        read[STDIN_NAME] = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    files = _manifest_files(paths, problems, exclude)
    scope = [os.path.abspath(p).encode() for p in paths]
    digests: dict[str, str] = {}  # of each file's bytes
    # Stat before reading: a file changed meanwhile then has other stats next time.
    looked = _looked(files) if not problems and STDIN not in paths else None
    sets = cache.Store.open("manifest-sets", *scope) if not problems else None
    if sets is not None and looked is not None:
        found = _unchanged_set(sets, looked, files, default_uri)
        if found is not None:
            return found
    whole = _whole_key(files, read, digests, default_uri) if not problems else None
    if sets is not None and whole is not None:
        found = _set_from_json(sets.get(whole), files, _files_digest(files, read))
        if found is not None:
            _remember_looked(sets, looked, default_uri, whole, found.digest)
            return found
    # One store for the folder (or files) given: the entries of every file and
    # rendering in one read (``cache.Store``), not one cache file each.
    # One store for every folder (its entries are keyed by bytes alone).
    store = cache.Store.open("manifests")
    valid = _valid_documents(files, problems, read, store, digests)

    def problem(item: _Valid, path: str, message: str) -> None:
        problems.append(
            errors.Problem(
                file=item.doc.file, line=_line_of(item.doc, path), path=path, message=message
            )
        )

    hosts = _check_hosts(valid, problem)
    placed = [
        (item, _candidates(item, hosts, problem))
        for item in valid
        if item.kind is not model.Kind.HOST
    ]
    _check_duplicates(placed, problem)
    _check_macs([item for item, _ in placed if item.kind is model.Kind.DOMAIN], problem)
    _check_encryption([item for item, _ in placed if item.complete], problem)
    seeds = _expand_cloud_init([item for item, _ in placed if item.complete], problem)

    objects = []
    for item, _ in placed:
        if not item.complete:
            continue
        metadata = item.doc.data["metadata"]
        manifest = model.Manifest(
            kind=item.kind,
            name=item.name,
            spec=item.spec,
            source=model.Source(file=item.doc.file, line=item.doc.line),
            host=item.spec.get("host"),
            labels=dict(metadata.get("labels", {})),
            annotations=dict(metadata.get("annotations", {})),
            lines=dict(item.doc.lines),
            # A seed's cdrom came from elsewhere (user data in another file).
            origin=""
            if item.name in seeds and item.kind is model.Kind.DOMAIN
            else f"{cache.digest(item.doc.file)}:{digests[item.doc.file]}:{item.doc.line}",
        )
        rendered = _check_render(item, manifest, store)
        if isinstance(rendered, errors.Problem):
            problems.append(rendered)
        else:
            manifest = rendered
        objects.append(manifest)
        if item.kind is model.Kind.DOMAIN and item.name in seeds:
            objects.append(seeds[item.name])
    store.save()
    if problems:
        raise errors.ManifestError(_sorted(problems))
    objects.sort(key=lambda m: (m.kind.order, m.host or "", m.name, str(m.spec.get("pool", ""))))
    host_list = sorted(hosts.values(), key=lambda h: h.name)
    if not host_list and default_uri:
        host_list = [model.Host(name=DEFAULT_HOST_NAME, uri=default_uri)]
    loaded = model.ManifestSet(
        objects=tuple(objects),
        hosts=tuple(host_list),
        files=tuple(files),
        digest=_files_digest(files, read),
    )
    # A seed's content comes from files besides these; a Secret's spec may hold
    # its value: neither is kept whole.
    secret = any(m.kind is model.Kind.SECRET for m in objects)
    if sets is not None and whole is not None and not seeds and not secret:
        sets.put(whole, _set_to_json(loaded))
        _remember_looked(sets, looked, default_uri, whole, loaded.digest)
        # A folder changes: what it was before is seldom read again (two kept:
        # runs that alternate between default URIs or folder states).
        sets.save(unused=2)
    return loaded


def _files_digest(files: Sequence[str], read: Mapping[str, bytes]) -> str:
    """What a saved plan was made from: the files' names and bytes, in reading order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{len(file)}:{file}:{len(read[file])}:".encode() + read[file])
    return digest.hexdigest()


# --- a whole folder, loaded before -------------------------------------------------
#
# An unchanged folder loads to the same ManifestSet: ``load`` keeps it whole
# (``manifest-sets``), keyed by every file's name and bytes and the default
# URI, and rebuilds it from one entry, without checking a document again.


def _whole_key(
    files: Sequence[str], read: dict[str, bytes], digests: dict[str, str], default_uri: str | None
) -> str | None:
    """The key of the whole set (None: a file cannot be read, or is too big)."""
    for file in files:
        if file not in read:
            try:
                with open(file, "rb") as stream:
                    read[file] = stream.read(MAX_FILE_BYTES + 1)
            except OSError:
                return None
        if len(read[file]) > MAX_FILE_BYTES:
            return None
        digests[file] = cache.digest(read[file])
    return "set:" + cache.digest(default_uri or "", *(f"{f}\0{digests[f]}" for f in files))


# --- an unchanged folder, not read at all --------------------------------------------
#
# Like git's index: each file's (size, mtime, ctime, inode, device) as stat gave
# them before the files were read last, with the whole set's key they had then.
# Equal stats mean the same bytes, except for a file changed too close to that
# read for its timestamps to tell (the "racy git" problem: a same-size edit
# within the timestamps' granularity); such a file is read and hashed again.


@dataclass(frozen=True)
class _Looked:
    at: int  # time.time_ns() before the first stat
    stats: tuple[tuple[str, int, int, int, int, int], ...]  # file, size, mtime, ctime, ino, dev


# A file whose last change (mtime or ctime) is not this much older than the
# stats were taken is read whatever its stats say.
_RACY_NS = 1_000_000_000


def _looked(files: Sequence[str]) -> _Looked | None:
    """The stats of ``files`` now (None: one cannot be stat'ed)."""
    at = time.time_ns()
    stats = []
    for file in files:
        try:
            st = os.stat(file)
        except OSError:
            return None
        stats.append((file, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
    return _Looked(at, tuple(stats))


def _looked_key(looked: _Looked, default_uri: str | None) -> str:
    return "stat:" + cache.digest(
        default_uri or "", *("\0".join(map(str, s)) for s in looked.stats)
    )


def _unchanged_set(
    sets: cache.Store, looked: _Looked, files: Sequence[str], default_uri: str | None
) -> model.ManifestSet | None:
    """The set loaded before from these files with these stats, when none of
    them changed near that time (None: they must be read)."""
    known = sets.get(_looked_key(looked, default_uri))
    if not isinstance(known, dict):
        return None
    whole, digest, at = known.get("set"), known.get("digest"), known.get("at")
    if not (isinstance(whole, str) and isinstance(digest, str) and isinstance(at, int)):
        return None
    if _racy(looked.stats, at):
        return None
    return _set_from_json(sets.get(whole), files, digest)


def _racy(stats: Sequence[tuple[str, int, int, int, int, int]], at: int) -> bool:
    return any(max(s[2], s[3]) > at - _RACY_NS for s in stats)


def _remember_looked(
    sets: cache.Store, looked: _Looked | None, default_uri: str | None, whole: str, digest: str
) -> None:
    """Remember which set these stats were of; not while a file is racy (its
    stats could not vouch for its bytes: a later run reads it and remembers)."""
    if looked is None or _racy(looked.stats, looked.at):
        return
    sets.put(_looked_key(looked, default_uri), {"set": whole, "digest": digest, "at": looked.at})
    sets.save(unused=2)


def _set_to_json(loaded: model.ManifestSet) -> dict[str, Any]:
    return {
        "objects": [
            [
                m.kind.value,
                m.name,
                m.spec,
                m.source.file,
                m.source.line,
                m.host,
                m.labels,
                m.annotations,
                m.lines,
                m.owner,
                m.origin,
                m.rendered,
            ]
            for m in loaded.objects
        ],
        "hosts": [
            [
                h.name,
                h.uri,
                h.labels,
                h.source.file if h.source else None,
                h.source.line if h.source else 0,
            ]
            for h in loaded.hosts
        ],
    }


def _manifest_from(row: list[Any]) -> model.Manifest:
    kind, name, spec, file, line, host, labels, annotations, lines, owner, origin, rendered = row
    return model.Manifest(
        kind=_KINDS[kind],
        name=name,
        spec=spec,
        source=model.Source(file=file, line=line),
        host=host,
        labels=labels,
        annotations=annotations,
        lines=lines,
        owner=owner,
        origin=origin,
        rendered=rendered,
    )


def _set_from_json(data: object, files: Sequence[str], digest: str) -> model.ManifestSet | None:
    """``_set_to_json``'s set again (None: no entry, or not of its shape)."""
    if not isinstance(data, dict):
        return None
    try:
        objects = tuple(_manifest_from(row) for row in data["objects"])
        hosts = tuple(
            model.Host(
                name=name,
                uri=uri,
                labels=labels,
                source=model.Source(file=file, line=line) if file is not None else None,
            )
            for name, uri, labels, file, line in data["hosts"]
        )
    except (KeyError, TypeError, ValueError):
        return None
    return model.ManifestSet(objects=objects, hosts=hosts, files=tuple(files), digest=digest)


def schema_valid(kind: model.Kind, document: Mapping[str, Any]) -> bool:
    """Whether one document (plain data) is valid against its kind's schema."""
    return bool(_validator(kind).is_valid(document))


def load_hosts_override(path: str) -> dict[str, str]:
    """A ``--hosts-override`` file of Host documents -> {host name: URI}."""
    problems: list[errors.Problem] = []
    files = _manifest_files([path], problems)
    valid = _valid_documents(files, problems)

    def problem(item: _Valid, path: str, message: str) -> None:
        problems.append(
            errors.Problem(
                file=item.doc.file, line=_line_of(item.doc, path), path=path, message=message
            )
        )

    for item in valid:
        if item.kind is not model.Kind.HOST:
            problem(item, "kind", "a hosts override file holds only Host documents")
    hosts = _check_hosts(valid, problem)
    if problems:
        raise errors.ManifestError(_sorted(problems))
    return {name: host.uri for name, host in sorted(hosts.items())}
