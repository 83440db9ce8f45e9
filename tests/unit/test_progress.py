"""Transfer progress on a terminal: bytes, rate and time left, a few lines a second."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from reconciler import cli

pytestmark = pytest.mark.unit


def test_progress_lines_show_bytes_rate_and_time_left() -> None:
    buffer = io.StringIO()
    shown = cli._Progress(
        Console(file=buffer, force_terminal=True, color_system=None, highlight=False, width=200)
    )
    total = 64 << 20
    shown("Volume/p/v: upload", 1 << 20, total)
    # Within a quarter second: not printed again, except when the transfer ends.
    shown("Volume/p/v: upload", 2 << 20, total)
    shown("Volume/p/v: upload", total, total)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Volume/p/v: upload: 1.0 MiB of 64.0 MiB, ")
    assert "/s, " in lines[0] and lines[0].endswith("s left")
    assert lines[1].startswith("Volume/p/v: upload: 64.0 MiB of 64.0 MiB, ")
    assert "left" not in lines[1]
