"""Shared pytest configuration for all test tiers."""

from __future__ import annotations

import pytest

# --- golden files (tests/data/render) -----------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite the expected XML of golden tests instead of comparing",
    )


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """True when run with ``--regen-golden``."""
    return bool(request.config.getoption("--regen-golden"))


# --- end golden files ----------------------------------------------------------
