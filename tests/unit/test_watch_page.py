"""The status page's time spans: short, two units at most."""

from __future__ import annotations

import pytest

from reconciler.watch.page import _span_of


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (59.4, "59s"),
        (61, "1m 1s"),
        (3600, "1h"),
        (3661, "1h 1m"),
        (90061, "1d 1h"),
    ],
)
def test_span_of(seconds: float, text: str) -> None:
    assert _span_of(seconds) == text
