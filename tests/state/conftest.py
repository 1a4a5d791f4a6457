"""A real Redis per test (started and stopped by the fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from interlock.testing.services import Redis
from tests.services import redis_server


@pytest.fixture
def redis() -> Iterator[Redis]:
    with redis_server() as server:
        yield server
