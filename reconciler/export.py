"""Export: what a host has -> manifests that describe it exactly (pure).

The reverse of the pipeline, for adopting an existing host::

    observed XML -> leave out what libvirt fills in (canonical.FILLED)
    -> friendly fields where they say exactly what the XML says (each
       kind's exporter, ``kinds.KINDS[kind].export``)
    -> an ``xml`` overlay with the rest -> check: render(manifest) == the XML

Every exported manifest is checked by rendering it (``render``) and flattening
both sides (``canonical.flatten``): the manifest must produce exactly the
object's definition, minus what libvirt fills in. When the friendly fields and
an overlay cannot say it exactly (an odd device layout), the manifest falls
back to a complete ``<domain>``/``<network>``/... document in ``xml`` beside
the friendly fields, and finally to the document alone. Nothing here talks to
libvirt: ``hosts`` observes; ``write`` puts the files in place.
"""

from __future__ import annotations

import copy
import os
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from reconciler import canonical, manifests, ownership, render, schema
from reconciler.kinds import KINDS
from reconciler.model import API_VERSION, Kind, Manifest, Source, object_ref
from reconciler.observed import HostState, Observed
from reconciler.render import identity, xmlutil

Spec = dict[str, Any]

# Pools whose volumes are LUNs the storage presents: libvirt lists them but
# cannot create them, so a Volume manifest for one could never be applied.
LUN_POOLS = frozenset({"scsi", "mpath", "iscsi", "iscsi-direct"})


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    """Which object: kind, name and (volumes) pool."""

    kind: Kind
    name: str
    pool: str | None = None

    @property
    def ref(self) -> str:
        """``KIND/NAME``, volumes ``Volume/POOL/NAME``, as in plans."""
        return object_ref(self.kind, self.name, self.pool)


@dataclass(frozen=True, kw_only=True)
class Exported(ObjectRef):
    """One exported object: its manifest document and where it goes under the folder.

    ``form``: ``overlay`` (friendly fields and an overlay), ``document`` (friendly
    fields beside a complete document), ``document-only``, ``fields`` (a kind
    without ``spec.xml``: the friendly fields only) or ``inexact``.
    """

    document: dict[str, Any]
    path: str
    form: str = "overlay"


@dataclass(frozen=True, kw_only=True)
class Skipped(ObjectRef):
    """An object not exported, and why."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class HostExport:
    """Everything exported from one host."""

    host: str
    objects: tuple[Exported, ...] = ()
    skipped: tuple[Skipped, ...] = ()


# --- the host --------------------------------------------------------------------


def export_host(
    state: HostState,
    *,
    host_field: str | None = None,
    kinds: Collection[Kind] = (),
    names: Collection[str] = (),
) -> HostExport:
    """Manifests for the objects of one observed host.

    ``host_field``: the ``spec.host`` to write (a Host document's name), or None
    for a host given with ``-c``. ``kinds``/``names`` select objects (empty: all);
    volumes follow their pool when only pools are named.
    """
    host = state.host.name
    chosen = [o for o in state.objects.values() if _selected(o, kinds, names)]
    shared = _shared_macs(o for o in chosen if o.kind is Kind.DOMAIN)
    objects: list[Exported] = []
    skipped: list[Skipped] = []
    pool_types = {
        o.name: _parse(o.xml).get("type")
        for o in state.objects.values()
        if o.kind is Kind.STORAGE_POOL
    }
    for obs in sorted(chosen, key=lambda o: (o.kind.order, o.pool or "", o.name)):
        reason = _skip_reason(obs, pool_types)
        if reason is not None:
            skipped.append(Skipped(kind=obs.kind, name=obs.name, pool=obs.pool, reason=reason))
            continue
        spec, form = export_object(obs, shared_macs=shared)
        if host_field is not None:
            spec = _ordered({"host": host_field, **spec})
        objects.append(
            Exported(
                kind=obs.kind,
                name=obs.name,
                pool=obs.pool,
                document=_document(obs.kind, obs.name, spec, _labels(obs, state)),
                path=file_path(host, obs.kind, obs.name, obs.pool),
                form=form,
            )
        )
    return HostExport(host=host, objects=tuple(objects), skipped=tuple(skipped))


def _skip_reason(obs: Observed, pool_types: Mapping[str, str | None]) -> str | None:
    """Why an object gets no manifest (None: it gets one)."""
    lun_pool = pool_types.get(obs.pool or "") if obs.kind is Kind.VOLUME else None
    if lun_pool in LUN_POOLS:
        return f"a LUN of a {lun_pool} pool: the storage presents it, libvirt cannot create it"
    if not obs.persistent:
        return "transient (no persistent definition to manage)"
    return None


def _selected(obs: Observed, kinds: Collection[Kind], names: Collection[str]) -> bool:
    """Chosen by ``--kind``/``--name``; volumes also come along with their pool."""

    def chosen(kind: Kind, name: str) -> bool:
        return (not kinds or kind in kinds) and (not names or name in names)

    if chosen(obs.kind, obs.name):
        return True
    return obs.kind is Kind.VOLUME and chosen(Kind.STORAGE_POOL, obs.pool or "")


def _shared_macs(domains: Iterable[Observed]) -> set[str]:
    """MACs used by more than one interface on the host: those stay in the overlay
    (a friendly ``mac`` must be unique across manifests)."""
    seen: dict[str, int] = {}
    for obs in domains:
        for mac in _parse(obs.xml).iterfind("devices/interface/mac"):
            address = (mac.get("address") or "").lower()
            seen[address] = seen.get(address, 0) + 1
    return {mac for mac, n in seen.items() if n > 1}


def _document(
    kind: Kind, name: str, spec: Spec, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": kind.value, "metadata": metadata, "spec": spec}


def _labels(obs: Observed, state: HostState) -> dict[str, str]:
    """The labels a managed object's ownership record holds (what its manifest said)."""
    record = KINDS[obs.kind].delete(obs, state.registry)[0]
    return dict(record.labels) if record is not None and record.managed else {}


def host_folder(host: str) -> str:
    """The folder of one host's manifests (its name, made safe for a file name)."""
    return _safe(host)


def file_path(host: str, kind: Kind, name: str, pool: str | None = None) -> str:
    """``HOST/KIND/NAME.yaml`` (volumes: ``HOST/volume/POOL/NAME.yaml``), safe names."""
    parts = [host_folder(host), kind.value.lower()]
    if kind is Kind.VOLUME:
        parts.append(_safe(pool or ""))
    parts.append(_safe(name) + ".yaml")
    return "/".join(parts)


def _safe(name: str) -> str:
    quoted = urllib.parse.quote(name, safe="-_.+=@,")
    # A leading dot would make a hidden file, which manifest loading skips.
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


# --- one object ------------------------------------------------------------------


def export_object(obs: Observed, *, shared_macs: Collection[str] = ()) -> tuple[Spec, str]:
    """The spec of one object and its form (``overlay``, ``document``, ``document-only``)."""
    xml = obs.xml
    cleaned = clean(_parse(xml), obs.kind)
    handler = KINDS[obs.kind]
    friendly = handler.export(cleaned, shared_macs)
    extra = handler.export_state(obs)
    if not handler.overlay:
        return _ordered({**friendly, **extra}), "fields"
    want = canonical.flatten(cleaned, obs.kind).values
    spec: Spec = {}
    for form, spec in _candidates(obs.kind, cleaned, friendly):
        if _renders_exactly(obs, {**spec, **extra}, want):
            return _ordered({**spec, **extra}), form
    # Not even the complete document renders back (a bug in render or here):
    # export it anyway; plan shows the difference.
    return _ordered({**spec, **extra}), "inexact"


def _ordered(spec: Spec) -> Spec:
    """Where the object lives first, the overlay last: how a person writes a manifest."""
    first = [k for k in ("host", "pool") if k in spec]
    last = [k for k in ("state", "autostart", "xml") if k in spec]
    middle = [k for k in spec if k not in first and k not in last]
    return {k: spec[k] for k in [*first, *middle, *last]}


def _candidates(kind: Kind, cleaned: etree._Element, friendly: Spec) -> Iterable[tuple[str, Spec]]:
    overlay = copy.deepcopy(cleaned)
    rendered = _render(kind, _name(cleaned), friendly)
    _minimise(overlay, rendered, devices=False)
    spec = dict(friendly)
    if len(overlay) or overlay.attrib:
        spec["xml"] = xmlutil.to_string(overlay)
    yield "overlay", spec
    document = xmlutil.to_string(cleaned)
    yield "document", {**friendly, "xml": document}
    yield "document-only", {**_required(kind, friendly), "xml": document}


def _required(kind: Kind, friendly: Spec) -> Spec:
    return {k: friendly[k] for k in KINDS[kind].export_required if k in friendly}


def _name(root: etree._Element) -> str:
    return root.findtext("name") or ""


def _render(kind: Kind, name: str, spec: Spec) -> etree._Element:
    manifest = Manifest(kind=kind, name=name, spec=spec, source=Source(file="<export>", line=0))
    return render.render(manifest)


def _renders_exactly(obs: Observed, spec: Spec, want: Mapping[str, str]) -> bool:
    """Whether ``spec`` renders to exactly the fields ``want`` (the cleaned object)."""
    document = _document(obs.kind, obs.name, spec)
    if not manifests.schema_valid(obs.kind, document):
        return False
    try:
        rendered = _render(obs.kind, obs.name, spec)
    except ValueError:
        return False
    # Both sides without what libvirt fills in: render writes some of it out
    # (currentMemory equal to memory), the cleaned object leaves it out.
    return canonical.flatten(clean(rendered, obs.kind), obs.kind).values == want


# --- leaving out what libvirt fills in ---------------------------------------------


def clean(root: etree._Element, kind: Kind) -> etree._Element:
    """A copy of ``root`` without ownership records and ``canonical.FILLED`` values."""
    root = copy.deepcopy(root)
    metadata = root.find("metadata")
    if metadata is not None:
        ownership.write_record(root, None)
        for registry in metadata.findall(f"{{{ownership.NAMESPACE}}}registry"):
            metadata.remove(registry)
        if len(metadata) == 0 and metadata.getparent() is not None:
            root.remove(metadata)
    flat = canonical.flatten(root, kind)
    # Every verdict is taken on the document as libvirt wrote it; only then is
    # anything removed (a rule may look at a sibling another rule removes).
    touched: list[etree._Element] = []
    for path in sorted(canonical.filled_paths(flat, kind), key=lambda p: -p.count("/")):
        el_path, _, attr = path.rpartition("/@") if "/@" in path else (path, "", "")
        if path.startswith("@"):
            root.attrib.pop(path[1:], "")
        elif attr:
            owner = flat.elements.get(el_path)
            if owner is not None:
                owner.attrib.pop(attr, "")
                touched.append(owner)
        else:
            el = flat.elements.get(path)
            parent = el.getparent() if el is not None else None
            if el is not None and parent is not None:
                parent.remove(el)
                touched.append(parent)
    if canonical.rules(kind).drop_emptied:
        _drop_emptied(root, touched)
    return root


def _drop_emptied(root: etree._Element, touched: list[etree._Element]) -> None:
    """An element left empty by leaving out filled values held only filled values
    (a console's ``<target type='serial' port='0'/>``): libvirt writes it back
    with them, so it goes too."""
    while touched:
        el = touched.pop()
        parent = el.getparent()
        if el is root or parent is None or not _is_empty(el):
            continue
        parent.remove(el)
        touched.append(parent)


# --- the overlay: what the friendly fields do not already say -----------------------


def _same(a: etree._Element, b: etree._Element) -> bool:
    """Equal subtrees (attributes, text, children in any order)."""
    return _signature(a) == _signature(b)


def _signature(el: etree._Element) -> str:
    children = sorted(_signature(c) for c in el if isinstance(c.tag, str))
    attrs = sorted((str(k), str(v)) for k, v in el.attrib.items())
    return repr((str(el.tag), attrs, (el.text or "").strip(), children))


def _is_empty(el: etree._Element) -> bool:
    return not el.attrib and not (el.text or "").strip() and not len(el)


# Attributes an overlay device keeps even when the friendly fields render them:
# they are how the merge finds the device (render.identity).
_IDENTITY_ATTRS = {("controller", "type"), ("controller", "index"), ("target", "dev")}
_IDENTITY_PATHS = {"interface/mac"}
_IDENTITY_CHILDREN = {("disk", "target"), ("interface", "mac")}


def _groups(parent: etree._Element, *, devices: bool) -> dict[str, list[etree._Element]]:
    out: dict[str, list[etree._Element]] = {}
    if devices:
        for key, el in identity.device_keys(parent):
            group = key if "[#" not in key else str(el.tag)
            out.setdefault(group, []).append(el)
        return out
    for el in parent:
        if isinstance(el.tag, str):
            out.setdefault(str(el.tag), []).append(el)
    return out


def _minimise(
    over: etree._Element, friendly: etree._Element, *, devices: bool, path: str = ""
) -> None:
    """Remove from ``over`` what merging it over ``friendly`` would not change.

    Positional siblings (the N-th ``<boot>``) are matched pairwise and removed
    only all together, so the remaining ones keep their positions.
    """
    tag = str(over.tag)
    here = f"{path}/{tag}"
    for name, value in list(over.attrib.items()):
        protected = (tag, str(name)) in _IDENTITY_ATTRS or here.endswith(tuple(_IDENTITY_PATHS))
        if friendly.get(name) == value and not protected:
            del over.attrib[name]
    if (over.text or "").strip() and (over.text or "").strip() == (friendly.text or "").strip():
        over.text = None
    mine = _groups(over, devices=devices)
    theirs = _groups(friendly, devices=devices)
    for key, elements in mine.items():
        others = theirs.get(key, [])
        if len(others) != len(elements):
            continue
        keep = (tag, key) in _IDENTITY_CHILDREN
        if not keep and all(_same(a, b) for a, b in zip(elements, others, strict=True)):
            for el in elements:
                over.remove(el)
            continue
        for a, b in zip(elements, others, strict=True):
            _minimise(a, b, devices=a.tag == "devices", path=here)
        if not keep and all(_is_empty(el) for el in elements):
            for el in elements:
                over.remove(el)


def _parse(xml: str) -> etree._Element:
    return xmlutil.parse_xml(xml, what="libvirt XML", max_bytes=64 << 20)


# --- YAML ------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (XML) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _str)


def to_yaml(document: Mapping[str, Any]) -> str:
    """One manifest as YAML that loads back to the same strings (MACs, ``no``, ``0042``
    quoted: PyYAML quotes everything its YAML 1.1 rules would read as another type)."""
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
        width=100,
    )  # fmt: skip


def write(host_export: HostExport, directory: Path) -> list[Path]:
    """Write every manifest of one host under ``directory``; returns the files written.

    ``directory`` also gets the combined JSON Schema, and each manifest a
    yaml-language-server modeline pointing to it (a relative path, so it works offline).
    """
    written = []
    directory.mkdir(parents=True, exist_ok=True)
    (directory / schema.FILE_NAME).write_text(schema.text(), encoding="utf-8")
    for obj in host_export.objects:
        path = directory / obj.path
        path.parent.mkdir(parents=True, exist_ok=True)
        where = os.path.relpath(directory / schema.FILE_NAME, path.parent)
        path.write_text(schema.modeline(where) + to_yaml(obj.document), encoding="utf-8")
        written.append(path)
    return written
