"""Shared fixtures: real services and the interlock test helpers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.core.bundle import bundled_policy_dir
from interlock.testing import CaptureSink, FakeClock
from tests.services import Postgres, postgres_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--differential-examples",
        type=int,
        default=40,
        help="examples per differential property test against the real PostgreSQL",
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL cluster (initdb into a temp dir, SCRAM auth) for the session."""
    with postgres_server() as pg:
        yield pg


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled policy."""
    target = tmp_path / "bundle"
    shutil.copytree(
        bundled_policy_dir(), target, ignore=shutil.ignore_patterns("__init__.py", "__pycache__")
    )
    return target
