"""Fixtures shared by the engine tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.embedded import EmbeddedEngine


@pytest.fixture
async def engine() -> AsyncIterator[EmbeddedEngine]:
    """A started embedded engine (the bundled voice), closed after the test."""
    e = EmbeddedEngine()
    await e.start()
    yield e
    await e.close()
