"""Fixtures shared by the test modules (the plugin's own fixtures come from
the installed package through its pytest11 entry point)."""

from __future__ import annotations

import pytest

from helpers import require_loopback_only


@pytest.fixture
def loopback_only() -> None:
    """Skips (or, in CI, fails) unless loopback is the only interface."""
    require_loopback_only()
