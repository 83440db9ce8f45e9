"""Headless Chromium for the status page tests: the DOM a page builds, and screenshots.

Screenshots are kept as test artifacts: copied to ``$VIRT_RECONCILE_ARTIFACTS``
(default ``artifacts/`` in the repository when ``$CI`` is set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is missing: bash scripts/install.sh installs it (Debian 'chromium')")
    return found


def headless(url: str, tmp: Path, *args: str) -> str:
    """Run headless Chromium on ``url`` with ``args`` (e.g. ``--dump-dom``); its stdout."""
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--window-size=1100,900",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout


def dom(url: str, tmp: Path) -> str:
    """The page's DOM after Chromium loaded it, serialised."""
    return headless(url, tmp, "--dump-dom")


def screenshot(url: str, tmp: Path, name: str) -> Path:
    """A PNG of the page, kept as an artifact; returns its path under ``tmp``."""
    shot = tmp / name
    headless(url, tmp, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, "not a real screenshot"
    where = os.environ.get("VIRT_RECONCILE_ARTIFACTS") or (
        str(REPO / "artifacts") if os.environ.get("CI") else ""
    )
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(where) / name)
    return shot
