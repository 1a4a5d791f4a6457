"""Choosing the event loop: asyncio's by default, uvloop only where asked and installed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from interlock.config import Config
from interlock.errors import ConfigError
from interlock.eventloop import loop_factory


def test_asyncio_is_the_default() -> None:
    assert Config().event_loop == "asyncio"
    assert loop_factory("asyncio") is asyncio.new_event_loop


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert loop_factory("auto") is asyncio.new_event_loop


def test_asking_for_uvloop_without_it_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(ConfigError, match="fast"):
        loop_factory("uvloop")


def test_uvloop_runs_the_loop_where_installed() -> None:
    import uvloop  # in the test extra: the suite runs it, never skips it

    for choice in ("uvloop", "auto"):
        loop = loop_factory(choice)()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
