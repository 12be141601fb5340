"""Fixtures shared by the tests; plain helpers live in tests/helpers.py."""

from __future__ import annotations

import pytest

from tests.helpers import TINY


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
