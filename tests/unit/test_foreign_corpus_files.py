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


def _result(adopt: list[foreign.Change], **edited: list[foreign.Change]) -> foreign.DocResult:
    doc = next(d for d in foreign.load() if d.name == "vrf-tf-web-0")
    r = foreign.DocResult(doc, adopt=foreign.Outcome(action="adopt", changes=adopt))
    for label, changes in edited.items():
        edit = foreign.Edit(label.replace("_", "-"), doc.xml, label)
        r.edits[edit.label] = (edit, foreign.Outcome(action="update", changes=changes))
    return r


def test_verdicts_count_an_edit_beside_false_diffs_once() -> None:
    noise = foreign.Change("devices/graphics[#0]/@port", None, "-1")
    memory = foreign.Change("memory", "1048576", "2097152")
    r = _result([noise], memory=[noise, memory])
    assert r.false_diff
    assert not r.edit_missed("memory") and r.edit_exact("memory")
    assert not r.edit_ok("memory")  # the test wants the edit and nothing else
    assert _result([], memory=[memory]).edit_ok("memory")
    assert _result([noise], memory=[noise]).edit_missed("memory")


def test_a_changed_identity_is_the_old_device_out_and_the_new_in() -> None:
    out = foreign.Change("devices/interface[mac=52:54:00:7f:00:11]", "<interface/>", None)
    new = foreign.Change("devices/interface[mac=52:54:00:7f:00:66]", None, "<interface/>")
    assert _result([], mac=[out, new]).edit_ok("mac")
    assert not _result([], mac=[out, out]).edit_ok("mac")
    assert not _result([], memory=[out, new]).edit_ok("memory")
