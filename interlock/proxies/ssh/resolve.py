"""The paths of a command as the target resolves them, symbolic links followed.

The shell classifier reads a command's paths from its text (`reads`, `writes`, `trees`,
`link_targets`: absolute and normalised, but not followed through links: links live on
the target, not in the text). A link already on the target (made by another process, by
an earlier command, or moved so that a relative target now points elsewhere) would take
`cat share/l` to `/etc/shadow` while the decision saw `share/l`. So before a command is
decided, each of its paths is resolved by the target itself (its SFTP server's
`realpath`, which follows every link) and, where that differs, the resolved path joins
the same list: the policy decides on both, as it does for SFTP operations.

A path the target cannot resolve (it does not exist, or the login user may not look
there) leads nowhere that a link could hide; an SFTP channel that cannot be had at all
leaves the command's paths unknown, and it is flagged `unresolved` (refused by the
bundled policy) with the reason.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from interlock.core.model import Action

FIELDS = ("reads", "writes", "trees", "link_targets")
"""The details that hold paths a command touches (`docs/ssh.md`, "Paths")."""
MAX_RESOLVED = 512
"""Paths resolved for one command; a command naming more is flagged `unresolved`."""

Realpath = Callable[[str], Awaitable[str | None]]
"""The target's reading of a path: the resolved absolute path, or None when it cannot
be resolved there (no such file, permission denied)."""


class ResolveError(Exception):
    """The target could not be asked at all (no SFTP channel, the connection failed)."""


def _paths(details: Any) -> list[str]:
    found: dict[str, None] = {}
    for field in FIELDS:
        for path in details.get(field, ()):
            if isinstance(path, str) and path.startswith("/"):
                found[path] = None
    return list(found)


def _unresolved(action: Action, why: str) -> Action:
    details = dict(action.details)
    details["flags"] = list(dict.fromkeys([*details.get("flags", ()), "unresolved"]))
    details["resolve_error"] = why[:300]
    return replace(action, details=details)


async def _deepest(path: str, realpath: Realpath) -> str | None:
    """`path` as the target resolves it, or, where it does not exist yet, its deepest
    existing ancestor resolved with the rest appended: `l/x/y/f` with `l` a link to a
    directory outside is written there once `mkdir -p l/x/y` ran, though the target
    cannot resolve it before. None: nothing of it resolves."""
    rest: list[str] = []
    current = path
    while True:
        real = await realpath(current)
        if real is not None:
            return posixpath.join(real, *reversed(rest)) if rest else real
        parent, name = posixpath.split(current)
        if not name or parent == current:
            return None
        rest.append(name)
        current = parent


async def resolved(action: Action, realpath: Realpath) -> Action:
    """`action` with what each of its paths resolves to on the target added next to it
    (or flagged `unresolved` when the target could not be asked)."""
    paths = _paths(action.details)
    if not paths:
        return action
    if len(paths) > MAX_RESOLVED:
        return _unresolved(action, f"more than {MAX_RESOLVED} paths to resolve on the target")
    try:
        answers = await asyncio.gather(*(_deepest(p, realpath) for p in paths))
    except ResolveError as exc:
        return _unresolved(action, f"paths not resolved on the target: {exc}")
    real = {p: r for p, r in zip(paths, answers, strict=True) if r is not None and r != p}
    if not real:
        return action
    details = dict(action.details)
    for field in FIELDS:
        listed = list(details.get(field, ()))
        more = [real[p] for p in listed if isinstance(p, str) and p in real]
        if more:
            details[field] = list(dict.fromkeys([*listed, *more]))
    details["resolved"] = {p: real[p] for p in sorted(real)}
    return replace(action, details=details)
