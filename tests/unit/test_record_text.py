"""``ownership.record_in`` reads a record off a document's text as parsing it would."""

from __future__ import annotations

import pytest
from lxml import etree

from reconciler import ownership

RECORD = ownership.Record(applied=frozenset({"memory", "vcpu"}), host="h", labels=(("a", "b"),))
OWNER = ownership.record_element(RECORD)


def _doc(metadata: str) -> str:
    return f"<domain type='kvm'>\n  <name>d</name>\n{metadata}  <memory>1</memory>\n</domain>"


def _owner(text: str | None = None) -> str:
    el = ownership.record_element(RECORD)
    if text is not None:
        el.text = text
    return etree.tostring(el, encoding="unicode")


CASES = {
    "first child": _doc(f"  <metadata>\n    {_owner()}\n  </metadata>\n"),
    "after other metadata": _doc(
        f"  <metadata>\n    <x:app xmlns:x='urn:x'>1</x:app>\n    {_owner()}\n  </metadata>\n"
    ),
    "escaped character": _doc(
        "  <metadata>" + _owner('{"host":"a&b","managed":true}') + "</metadata>\n"
    ),
    "empty": _doc("  <metadata>" + _owner("  ") + "</metadata>\n"),
    "not JSON": _doc("  <metadata>" + _owner("{nope") + "</metadata>\n"),
    "JSON of another shape": _doc("  <metadata>" + _owner("[1, 2]") + "</metadata>\n"),
    "another prefix": _doc(
        f"  <metadata><o:owner xmlns:o='{ownership.NAMESPACE}'>"
        '{"host":"other"}</o:owner></metadata>\n'
    ),
    "no metadata": _doc(""),
    "not XML": "<domain><name>d</name>",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_text_gives_the_record_parsing_gives(case: str) -> None:
    xml = CASES[case]
    try:
        parsed = ownership.read_record(etree.fromstring(xml.encode()))
    except etree.XMLSyntaxError:
        parsed = None
    assert ownership.record_in(xml) == parsed


def test_the_usual_form_is_read() -> None:
    assert ownership.record_in(CASES["first child"]) == RECORD
    escaped = ownership.record_in(CASES["escaped character"])
    assert escaped is not None and escaped.host == "a&b"
