"""Cached verdicts of stage 6: an object planned "unchanged" before, with every
input of that verdict the same, is unchanged now (pure but for the cache).

A no-op plan is the common case (``watch`` and CI run one every few minutes),
and planning an unchanged domain costs a desired and a live flattening, a
field diff and the planner's checks, where its verdict's inputs hash in a few
microseconds. ``Verdicts`` keys each verdict by a digest of everything the
kind's planner, ``plan._relabel`` and ``plan._in_manifest_terms`` read:

* the code (``cache.fingerprint``, through ``cache.entry``) and the XML libraries,
* the host-wide part (``Verdicts.open``): the host, its driver, domain
  capabilities and registry records, the libvirt parser that normalises
  desired XML (``HostState.parser``), the options (``--prune``, ``--replace``,
  selection, prune guard), and the host facts a planner may consult
  (``kinds.base.Context``: network and volume users, running domains, volume
  files); any change there plans every object of the host afresh,
* the object's part (``key``): its manifest (spec, labels, annotations,
  source lines, derived content), the desired XML as rendered for this host,
  everything observed of it (inactive and live XML, state and reason,
  autostart, persistence, ownership record) and its placement.

Only a plain "unchanged" (no note, error, step or change) is remembered, and
only for kinds whose verdict depends on nothing else: a Secret's depends on
its value (a file or an environment variable), so it is always planned.
Checks that read other objects (references to pools, volumes and networks,
prune guards, old seeds) run every time, outside this cache.

The entries live in one ``cache.Store`` per host (one read, at most one
write per plan); a store that cannot be read or written only makes the plan
slower (``reconciler.cache``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from reconciler import cache
from reconciler.actions import Action, ActionType, Options
from reconciler.kinds import Context
from reconciler.model import Kind, Manifest
from reconciler.observed import HostState, Observed
from reconciler.placement import Placement

# The XML libraries that parse and flatten the documents (``canonical``).
_XML_LIBRARIES = f"{etree.LXML_VERSION}\0{etree.LIBXML_VERSION}"
# Kinds whose verdict is a function of the inputs above (a Secret's is not).
CACHED = frozenset({Kind.DOMAIN, Kind.NETWORK, Kind.STORAGE_POOL, Kind.VOLUME})
# Never part of a key, even hashed: the host's key for secret value digests.
_PRIVATE = frozenset({"secret_key"})
_FIELDS: dict[type, tuple[str, ...]] = {}
# Parts of a manifest and an observation that go into a key as they are, not as JSON
# (a manifest's rendered XML is in it as the desired document, its content by digest).
# An observed record is read from the object's XML or from the host's registry
# (``hosts.observe``), both in the key already.
_RENDERED = frozenset({"rendered", "origin"})
_DOCUMENTS = frozenset({"xml", "live_xml", "record"})


def canon(value: object) -> object:
    """``value`` as JSON data that is the same in every process (sets and mappings
    sorted, dataclasses by field, bytes by digest), for a key."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, enum.Enum):
        return canon(value.value)
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [canon(v) for v in _field_values(value)]
    if isinstance(value, Mapping):
        items = [(canon(k), canon(v)) for k, v in value.items()]
        return ["{}", *sorted(items, key=lambda kv: json.dumps(kv[0]))]
    if isinstance(value, set | frozenset):
        return ["set", *sorted((canon(v) for v in value), key=json.dumps)]
    if isinstance(value, list | tuple):
        return [canon(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def _json(value: object) -> str:
    return json.dumps(canon(value), separators=(",", ":"), ensure_ascii=False)


def _field_values(value: Any, skip: frozenset[str] = frozenset()) -> list[object]:
    """A dataclass as its type's name and its fields' values (but ``skip``)."""
    names = _FIELDS.get(type(value))
    if names is None:
        names = _FIELDS[type(value)] = tuple(
            f.name for f in dataclasses.fields(value) if f.name not in _PRIVATE
        )
    return [type(value).__name__, *(getattr(value, n) for n in names if n not in skip)]


def _default(value: object) -> object:
    """``json.dumps``'s fallback in ``_fast``: the values the C encoder does not know."""
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=repr)
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _field_values(value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


_ENCODER = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False)


def _fast(value: object) -> str:
    """``_json`` for values whose mappings have string keys (an object's part of a
    key, per object: the C encoder, with ``_default`` for the rest). Mappings
    keep their order (a manifest's is its file's): another order is only a miss."""
    return _ENCODER.encode(value)


class Verdicts:
    """The cached verdicts of one host's plan (``open`` once per plan, ``save`` at its end)."""

    def __init__(self, store: cache.Store, host_part: str) -> None:
        self._store = store
        self._host = host_part

    @classmethod
    def open(
        cls, store: cache.Store, state: HostState, options: Options, context: Context
    ) -> Verdicts:
        """The verdicts of ``state``'s host, kept in ``store`` (one per host)."""
        host_part = cache.digest(
            _XML_LIBRARIES,
            _json(state.host),
            state.driver,
            state.parser,
            _json(state.capabilities),
            _json(state.registry),
            _json(options),
            "normalised" if context.normalise is not None else "as written",
            _json(dataclasses.replace(context, placement=None, normalise=None)),
        )
        return cls(store, host_part)

    def key(
        self,
        m: Manifest,
        desired: etree._Element | str,
        obs: Observed | None,
        placed: Placement | None,
    ) -> str | None:
        """The key of ``m``'s verdict (None: this kind's verdict is never cached)."""
        if m.kind not in CACHED or obs is None:
            return None
        try:
            # The documents go in whole, beside: not escaped into JSON.
            manifest = m.origin or _fast(_field_values(m, _RENDERED))
            observed = _fast(_field_values(obs, _DOCUMENTS))
            placement = _fast(placed)
        except (TypeError, ValueError):
            return None  # not plain data: planned every time
        return "v:" + cache.digest(
            self._host,
            manifest,
            desired if isinstance(desired, str) else etree.tostring(desired),
            observed,
            obs.xml,
            "\0" if obs.live_xml is None else obs.live_xml,
            placement,
        )

    def unchanged(self, key: str) -> bool:
        return self._store.get(key) is True

    def remember(self, key: str, action: Action, plain: Action) -> None:
        """Remember ``key`` as unchanged when ``action`` is exactly ``plain`` (the
        bare unchanged action that a hit will stand in for)."""
        if action == plain and action.type is ActionType.UNCHANGED:
            self._store.put(key, True)

    def memo(self, name: str, text: str, compute: Callable[[], list[str]]) -> list[str]:
        """``compute()``, a pure function of ``text`` named ``name``, kept in the store."""
        key = f"{name}:" + cache.digest(text)
        found = self._store.get(key)
        if isinstance(found, list) and all(isinstance(x, str) for x in found):
            return found
        value = compute()
        self._store.put(key, value)
        return value

    def save(self, *, narrowed: bool) -> None:
        """Write the verdicts; a ``narrowed`` plan (some objects of the host: a
        selection, a scoped ``watch`` pass, apply's check of what it wrote) keeps
        every entry it did not use, for the next plan of the whole host."""
        self._store.save(narrowed=narrowed)


def bare(base: Mapping[str, Any]) -> Action:
    """The plain unchanged action of an object (``base``: its kind, name, pool,
    source and placement)."""
    return Action(**base, type=ActionType.UNCHANGED)
