"""The event loop interlock runs on: uvloop where asked for and installed, else asyncio's."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

from interlock.errors import ConfigError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: Literal["asyncio", "uvloop", "auto"]) -> LoopFactory:
    """What `asyncio.run(..., loop_factory=)` should use. uvloop's libuv transports cost
    a fraction of the selector loop's per read and write, which is most of what a relay
    does (docs/benchmarks.md, issue 21)."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                'event_loop = "uvloop" but uvloop is not installed '
                "(pip install 'interlock[fast]')"
            ) from None
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory
