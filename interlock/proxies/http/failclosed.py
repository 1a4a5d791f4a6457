"""Fail closed: an addon that raises answers the flow locally; nothing goes upstream.

mitmproxy logs an addon's exception and carries on with the flow, which for a security
proxy would mean "allow on error". Every interlock hook is wrapped so an exception turns
into a 502 (or a killed connection, for server hooks).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import http

from interlock.proxies.http.answer import refuse

log = logging.getLogger(__name__)


def guarded[A](hook: Callable[[A, Any], Awaitable[None]]) -> Callable[[A, Any], Awaitable[None]]:
    @functools.wraps(hook)
    async def wrapper(self: A, arg: Any) -> None:
        try:
            await hook(self, arg)
        except Exception as exc:
            log.exception("interlock addon %s.%s failed", type(self).__name__, hook.__name__)
            if isinstance(arg, http.HTTPFlow):
                refuse(
                    arg,
                    502,
                    {"error": "interlock internal error", "reason": type(exc).__name__},
                    {"Content-Type": "application/json"},
                )
            elif hasattr(arg, "server"):
                arg.server.error = f"interlock internal error: {type(exc).__name__}"

    return wrapper


def guard_all[T](addon: T) -> T:
    """Wrap every async hook of `addon` in `guarded`, in place."""
    for name in (
        "http_connect",
        "requestheaders",
        "request",
        "responseheaders",
        "response",
        "server_connect",
    ):
        method = getattr(type(addon), name, None)
        if method is not None:
            setattr(addon, name, guarded(method).__get__(addon))
    return addon
