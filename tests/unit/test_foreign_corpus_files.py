"""The foreign corpus itself: big enough, every source present, names safe on a shared daemon."""

from __future__ import annotations

from collections import Counter

from tests import foreign


def test_corpus_has_150_documents_from_every_source() -> None:
    docs = foreign.load()
    assert len(docs) >= 150
    per_source = Counter(d.source for d in docs)
    assert set(per_source) == set(foreign.SOURCES)
    assert per_source["virt-install"] >= 100


def test_names_are_unique_prefixed_and_match_the_file() -> None:
    docs = foreign.load()
    names = [(d.kind, d.name) for d in docs]
    assert len(set(names)) == len(names)
    for d in docs:
        assert d.name.startswith(foreign.PREFIX), d.path
        assert d.path.stem == d.name, d.path


def test_every_document_has_an_edit_and_every_domain_an_override() -> None:
    for d in foreign.load():
        assert foreign.edits(d), d.id
        if d.kind == "Domain":
            assert foreign.override(d) is not None, d.id


def test_edits_change_one_value_and_keep_the_rest_verbatim() -> None:
    doc = next(d for d in foreign.load() if d.name == "vrf-tf-web-0")
    by_label = {e.label: e for e in foreign.edits(doc)}
    assert set(by_label) == {"memory", "mac", "disk-target"}
    assert '<memory unit="MiB">2048</memory>' in by_label["memory"].xml
    assert '<target dev="vdb" bus="virtio"></target>' in by_label["disk-target"].xml
    for e in by_label.values():
        changed = [
            (a, b) for a, b in zip(doc.xml.splitlines(), e.xml.splitlines(), strict=True) if a != b
        ]
        assert len(changed) == 1, (e.label, changed)


def test_memory_is_read_in_kib_whatever_the_unit() -> None:
    assert foreign.memory_kib("<memory unit='GiB'>2</memory>") == 2 * 1024 * 1024
    assert foreign.memory_kib('<memory unit="MiB">512</memory>') == 512 * 1024
    assert foreign.memory_kib("<memory>2097152</memory>") == 2097152


def test_manifest_is_the_complete_document_and_nothing_else() -> None:
    doc = next(d for d in foreign.load() if d.kind == "Domain")
    m = foreign.manifest(doc)
    assert m["kind"] == "Domain"
    assert m["metadata"] == {"name": doc.name}
    assert m["spec"] == {"xml": doc.xml}
