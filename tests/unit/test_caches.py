"""The on-disk caches change how fast a run is, never what it finds."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from reconciler import cache, errors, manifests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    return folder


def _entries(folder: Path) -> list[str]:
    """The files cached in the manifests' stores (``cache.Store``)."""
    return sorted(
        key
        for p in (folder / "manifests").rglob("*")
        if p.is_file()
        for key in json.loads(p.read_bytes())
        if key.startswith("file:")
    )


def test_an_unchanged_folder_loads_the_same_from_the_cache(cache_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(EXAMPLES, folder)
    (folder / "virt-reconcile.schema.json").unlink()
    first = manifests.load([str(folder)])
    assert len(_entries(cache_dir)) == len(first.files)  # one entry per valid file
    second = manifests.load([str(folder)])
    assert second == first
    assert [m.lines for m in second.objects] == [m.lines for m in first.objects]


def test_a_copy_elsewhere_reads_the_cache_and_names_its_own_files(
    cache_dir: Path, tmp_path: Path
) -> None:
    # A new git checkout is such a copy: its unchanged files are not parsed again.
    first_dir, copy_dir = tmp_path / "rev-1", tmp_path / "rev-2"
    shutil.copytree(EXAMPLES, first_dir)
    (first_dir / "virt-reconcile.schema.json").unlink()
    first = manifests.load([str(first_dir)])
    before = _entries(cache_dir)
    shutil.copytree(first_dir, copy_dir)
    copy = manifests.load([str(copy_dir)])
    assert _entries(cache_dir) == before
    assert all(m.source.file.startswith(str(copy_dir)) for m in copy.objects)
    assert [(m.kind, m.name, m.spec, m.lines) for m in copy.objects] == [
        (m.kind, m.name, m.spec, m.lines) for m in first.objects
    ]


def test_a_quoted_number_is_restored_the_same_way_from_the_cache(
    cache_dir: Path, tmp_path: Path
) -> None:
    # ``name: 0042`` reads as a number; the schema wants a string, so the text is kept.
    doc = "apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: 0042}\nspec: {}\n"
    (tmp_path / "n.yaml").write_text(doc)
    first = manifests.load([str(tmp_path / "n.yaml")])
    second = manifests.load([str(tmp_path / "n.yaml")])
    assert first.objects[0].name == second.objects[0].name == "0042"


def test_a_file_with_an_error_is_not_cached_and_an_edit_is_read_again(
    cache_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "n.yaml"
    good = "apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: n1}\nspec: {}\n"
    path.write_text(good)
    manifests.load([str(path)])
    assert len(_entries(cache_dir)) == 1
    path.write_text(good.replace("spec: {}", "spec: {forward: sideways}"))
    for _ in range(2):  # the second time too: nothing cached the bad file
        with pytest.raises(errors.ManifestError) as e:
            manifests.load([str(path)])
        assert [(p.line, p.path) for p in e.value.problems] == [(4, "spec.forward")]
    assert len(_entries(cache_dir)) == 1


def test_a_flat_read_from_the_cache_finds_the_same_elements(cache_dir: Path) -> None:
    from lxml import etree

    from reconciler import canonical
    from reconciler.model import Kind

    text = (
        "<domain type='qemu'><name>c1</name><memory unit='MiB'>256</memory>"
        "<devices><disk type='file' device='disk'><source file='/a.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk><interface type='network'>"
        "<source network='n'/><mac address='52:54:00:AA:00:01'/></interface></devices></domain>"
    )
    fresh = canonical.flatten(etree.fromstring(text), Kind.DOMAIN)
    first = canonical.flatten_text(text, etree.fromstring(text), Kind.DOMAIN)
    again = canonical.flatten_text(text, etree.fromstring(text), Kind.DOMAIN)
    assert first.values == again.values == fresh.values
    assert list(again.values) == list(fresh.values)  # the same order: changes list in it
    assert again.implied == fresh.implied
    assert {p: etree.tostring(e) for p, e in again.elements.items()} == {
        p: etree.tostring(e) for p, e in fresh.elements.items()
    }
    ignored = canonical.flatten_text(
        text, etree.fromstring(text), Kind.DOMAIN, ignore=["/domain/memory"]
    )
    assert "memory" not in ignored.values and "memory" in again.values


def test_a_file_with_a_secret_is_not_cached(cache_dir: Path, tmp_path: Path) -> None:
    # Manifests name a secret's value by file or env, never inline; a file with
    # a Secret stays out of the cache all the same (belt and braces).
    secret = (
        "apiVersion: virt-reconcile/v1\nkind: Secret\nmetadata: {name: s1}\n"
        "spec:\n  usage: {ceph: client.s1}\n  value: {env: VR_CACHE_PROBE}\n"
    )
    network = "apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: n1}\nspec: {}\n"
    (tmp_path / "s.yaml").write_text(secret + "---\n" + network)
    (tmp_path / "n.yaml").write_text(network.replace("n1", "n2"))
    for _ in range(2):
        loaded = manifests.load([str(tmp_path / "s.yaml"), str(tmp_path / "n.yaml")])
        assert sorted(m.name for m in loaded.objects) == ["n1", "n2", "s1"]
    assert len(_entries(cache_dir)) == 1  # n.yaml only


def test_a_rendered_manifest_comes_back_the_same_from_the_cache(
    cache_dir: Path, tmp_path: Path
) -> None:
    from lxml import etree

    from reconciler import render

    folder = tmp_path / "m"
    shutil.copytree(EXAMPLES, folder)
    (folder / "virt-reconcile.schema.json").unlink()
    for _ in range(2):  # cold, then warm
        for m in manifests.load([str(folder)]).objects:
            assert m.rendered == etree.tostring(render.render(m), encoding="unicode")


def test_a_value_from_a_store_is_the_callers_to_change(cache_dir: Path) -> None:
    # manifests.load adds a cloud-init seed's cdrom to the spec it read: a store
    # that handed out its own value would save the cdrom, and add it twice next time.
    store = cache.Store.open("test", b"one")
    store.put("k", {"disks": []})
    got = store.get("k")
    assert isinstance(got, dict)
    got["disks"].append("cdrom")
    store.save()
    assert cache.Store.open("test", b"one").get("k") == {"disks": []}
    assert store.get("k") == {"disks": []}
    assert cache.Store.open("test", b"other").get("k") is None


def test_a_folder_kept_whole_is_loaded_again_when_anything_it_was_made_of_changes(
    cache_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(EXAMPLES, folder)
    (folder / "virt-reconcile.schema.json").unlink()
    first = manifests.load([str(folder)], default_uri="test:///a")
    again = manifests.load([str(folder)], default_uri="test:///a")
    assert again == first and [m.rendered for m in again.objects] == [
        m.rendered for m in first.objects
    ]
    # Another default URI, a file edited, added, removed: each reads anew.
    assert manifests.load([str(folder)], default_uri="test:///b").hosts[0].uri == "test:///b"
    web = folder / "web.yaml"
    web.write_text(web.read_text().replace("memory: 256MiB", "memory: 384MiB", 1))
    edited = manifests.load([str(folder)], default_uri="test:///a")
    assert {m.name: m.spec.get("memory") for m in edited.objects}["vr-web-1"] == "384MiB"
    (folder / "extra.yaml").write_text(
        "apiVersion: virt-reconcile/v1\nkind: Network\nmetadata: {name: extra}\nspec: {}\n"
    )
    added = manifests.load([str(folder)], default_uri="test:///a")
    assert "extra" in {m.name for m in added.objects}
    (folder / "extra.yaml").unlink()
    removed = manifests.load([str(folder)], default_uri="test:///a")
    assert "extra" not in {m.name for m in removed.objects}
    assert removed.digest == edited.digest
    # A file that no longer parses is an error, though the folder was kept before.
    web.write_text("apiVersion: virt-reconcile/v1\nkind: Nope\n")
    with pytest.raises(errors.ManifestError):
        manifests.load([str(folder)], default_uri="test:///a")


def test_a_store_keeps_what_it_is_told_of_the_unused_entries(cache_dir: Path) -> None:
    store = cache.Store.open("test", b"keep")
    for key in "abcd":
        store.put(key, key)
    store.save()
    again = cache.Store.open("test", b"keep")
    again.put("e", "e")
    again.save(unused=2)  # a to d unused: the latest two stay
    kept = cache.Store.open("test", b"keep")
    assert [kept.get(k) for k in "abcde"] == [None, None, "c", "d", "e"]


# --- an unchanged folder is not read at all: its files' stats vouch for their bytes ---


def _net(name: str, bridge: str = "br0") -> str:
    return (
        "apiVersion: virt-reconcile/v1\nkind: Network\n"
        f"metadata: {{name: {name}}}\nspec: {{bridge: {bridge}}}\n"
    )


def _small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    for name in ("alpha", "beta", "gamma"):
        (folder / f"{name}.yaml").write_text(_net(name))
    return folder


def _bridges(loaded: manifests.model.ManifestSet) -> dict[str, object]:
    return {m.name: m.spec["bridge"] for m in loaded.objects}


@pytest.fixture
def not_racy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written a moment ago count as old (else their stats vouch for
    nothing for a second: see the racy test below)."""
    monkeypatch.setattr(manifests, "_RACY_NS", 0)


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the loads that read and hashed the files."""
    calls: list[int] = []
    whole_key = manifests._whole_key

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return whole_key(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manifests, "_whole_key", counted)
    return calls


def test_an_unchanged_folder_is_not_read_again(
    cache_dir: Path, tmp_path: Path, not_racy: None, no_reads: list[int]
) -> None:
    folder = _small_folder(tmp_path)
    first = manifests.load([str(folder)])  # read: remembers the stats with the set
    assert len(no_reads) == 1
    again = manifests.load([str(folder)])
    assert len(no_reads) == 1  # not read
    assert again == first and again.digest == first.digest


def test_every_change_to_the_folder_is_read(
    cache_dir: Path, tmp_path: Path, not_racy: None, no_reads: list[int]
) -> None:
    folder = _small_folder(tmp_path)
    for _ in range(2):
        manifests.load([str(folder)])
    beta = folder / "beta.yaml"
    before = beta.stat()
    time.sleep(0.05)  # past the kernel's timestamp tick: the ctime moves
    # The same size, the mtime put back: the ctime (which no one can set) tells.
    beta.write_text(_net("beta", "br1"))
    os.utime(beta, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert beta.stat().st_size == before.st_size
    assert _bridges(manifests.load([str(folder)]))["beta"] == "br1"
    # Renamed: the set names the new file.
    beta.rename(folder / "beta2.yaml")
    renamed = manifests.load([str(folder)])
    assert str(folder / "beta2.yaml") in renamed.files
    assert {m.source.file for m in renamed.objects} == set(renamed.files)
    # Added, deleted.
    (folder / "delta.yaml").write_text(_net("delta"))
    assert "delta" in _bridges(manifests.load([str(folder)]))
    (folder / "alpha.yaml").unlink()
    assert set(_bridges(manifests.load([str(folder)]))) == {"beta", "delta", "gamma"}
    # The same file list and bytes as before the last change: the set made of them.
    (folder / "alpha.yaml").write_text(_net("alpha"))
    assert set(_bridges(manifests.load([str(folder)]))) == {"alpha", "beta", "delta", "gamma"}
    reads = len(no_reads)
    again = manifests.load([str(folder)])
    assert len(no_reads) == reads  # the stats remembered by the last load vouch
    assert set(_bridges(again)) == {"alpha", "beta", "delta", "gamma"}


def test_an_edit_the_stats_do_not_show_is_read_while_the_file_is_racy(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A filesystem whose timestamps are coarse (or an edit in the same tick) can
    # leave a same-size edit with the stats of the bytes read before: such a file,
    # changed within a second of when the stats were taken, is read again.
    folder = _small_folder(tmp_path)
    looked = manifests._looked([str(p) for p in sorted(folder.iterdir())])
    assert looked is not None
    monkeypatch.setattr(manifests, "_looked", lambda files: looked)  # stats frozen
    manifests.load([str(folder)])
    manifests.load([str(folder)])
    (folder / "gamma.yaml").write_text(_net("gamma", "br9"))  # the same size
    assert _bridges(manifests.load([str(folder)]))["gamma"] == "br9"
    # What the rule guards against: stats that vouch for bytes they were not taken of.
    monkeypatch.setattr(manifests, "_RACY_NS", -(10**12))  # "racy" never
    manifests.load([str(folder)])  # remembers the frozen stats with the new set
    (folder / "gamma.yaml").write_text(_net("gamma", "br8"))
    assert _bridges(manifests.load([str(folder)]))["gamma"] == "br9"  # hidden edit


def test_stats_are_not_remembered_for_racy_files(cache_dir: Path, tmp_path: Path) -> None:
    folder = _small_folder(tmp_path)  # written just now: racy for a second
    for _ in range(2):
        manifests.load([str(folder)])
    stores = list((cache_dir / "manifest-sets").rglob("*"))
    keys = [k for p in stores if p.is_file() for k in json.loads(p.read_bytes())]
    assert keys and not [k for k in keys if k.startswith("stat:")]
