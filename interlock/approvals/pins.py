"""Pinned MCP tools: what a server first offered an owner, and every later change held.

A tool server can change a tool's description or schema after the owner started relying
on it (a "rug pull"), or describe a tool in words written for the model ("tool
poisoning"). The first `tools/list` a server answers for an owner pins each tool (name,
description hash, schema hash); a later listing that differs holds that tool until the
owner accepts the change (`interlock mcp approve-tool`). A tool flagged on first sight, or
whose name shadows a tool another server of the same owner already offers, starts held.

SQLite, because every process on the machine shares the pins: each stdio gateway (one
per server the host starts), `interlock up` (MCP over HTTP) and the CLI.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.classify.mcp import tool_hashes, tool_poisoning
from interlock.core.model import Action, Agent, Operation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    server TEXT NOT NULL,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    description_sha256 TEXT NOT NULL,
    schema_sha256 TEXT NOT NULL,
    held TEXT NOT NULL,
    pending_description_sha256 TEXT NOT NULL,
    pending_schema_sha256 TEXT NOT NULL,
    pending_description TEXT NOT NULL,
    first_seen REAL NOT NULL,
    changed REAL NOT NULL,
    PRIMARY KEY (server, owner, name)
)
"""
_COLUMNS = (
    "server, owner, name, description_sha256, schema_sha256, held, "
    "pending_description_sha256, pending_schema_sha256, pending_description, first_seen, changed"
)
_MARKS = ",".join("?" * len(_COLUMNS.split(",")))
BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process's lock (listings are rare and small)."""
MAX_DESCRIPTION = 4096
"""Characters of a held description kept for the owner to read before approving."""


@dataclass(frozen=True)
class Pin:
    """One pinned tool. `held` is empty when the tool is usable, else why it is held;
    the pending hashes are what the server offers now and approval would accept."""

    server: str
    owner: str
    name: str
    description_sha256: str
    schema_sha256: str
    held: str
    pending_description_sha256: str
    pending_schema_sha256: str
    pending_description: str
    first_seen: float
    changed: float

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Change:
    """A tool that became held in this listing: audited once, with old and new hashes
    (old empty for a tool held on first sight)."""

    name: str
    reason: str
    old: tuple[str, str]
    new: tuple[str, str]


def owner_of(agent: Agent) -> str:
    """Whose pins: the agent's owner (pins are the owner's trust), else the agent."""
    return agent.owner or f"agent:{agent.id}"


def change_action(agent: Agent, server: str, change: Change) -> Action:
    """What the audit log records of a tool becoming held: its old and new hashes."""
    pin = {
        "old_description_sha256": change.old[0],
        "old_schema_sha256": change.old[1],
        "new_description_sha256": change.new[0],
        "new_schema_sha256": change.new[1],
    }
    details = {"mcp_server": server, "method": "tools/list", "pin": pin}
    return Action(agent, "mcp", Operation.TOOL_CALL, change.name, details)


class PinStore:
    """The pins of one machine; safe to share between threads and processes."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        self._db.close()

    def check(
        self, server: str, owner: str, tools: Iterable[dict[str, Any]]
    ) -> tuple[list[Change], set[str]]:
        """Pin what is new, compare what is pinned: the tools that became held now (to
        audit), and every listed tool that is held (to withhold). One transaction, so
        two gateways listing the same server pin it once."""
        now = self._clock()
        changes: list[Change] = []
        held: set[str] = set()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for tool in tools:
                    name = str(tool.get("name", ""))
                    change = self._check_one(server, owner, name, tool, now)
                    if change is not None:
                        changes.append(change)
                    pin = self._get(server, owner, name)
                    if pin is not None and pin.held:
                        held.add(name)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return changes, held

    def _check_one(
        self, server: str, owner: str, name: str, tool: dict[str, Any], now: float
    ) -> Change | None:
        new = tool_hashes(tool)
        description = str(tool.get("description") or "")[:MAX_DESCRIPTION]
        pin = self._get(server, owner, name)
        if pin is None:
            reasons = tool_poisoning(tool)
            shadowed = self._shadowed(server, owner, name)
            held = "; ".join(
                [*(["description flagged: " + ", ".join(reasons)] if reasons else []),
                 *([f"shadows a tool of {shadowed}"] if shadowed else [])]
            )  # fmt: skip
            approved = ("", "") if held else new
            row = (server, owner, name, *approved, held, *new, description, now, now)
            self._db.execute(f"INSERT INTO pins ({_COLUMNS}) VALUES ({_MARKS})", row)  # noqa: S608
            return Change(name, held, ("", ""), new) if held else None
        old = (pin.description_sha256, pin.schema_sha256)
        if new == old:
            if pin.held:
                self._db.execute(
                    "UPDATE pins SET held='', changed=? WHERE server=? AND owner=? AND name=?",
                    (now, server, owner, name),
                )
            return None
        if new == (pin.pending_description_sha256, pin.pending_schema_sha256) and pin.held:
            return None  # held already, for this very change
        what = [
            w for w, a, b in (("description", old[0], new[0]), ("schema", old[1], new[1])) if a != b
        ]
        held = (
            pin.held if not pin.description_sha256 else f"changed since pinned: {', '.join(what)}"
        )
        self._db.execute(
            "UPDATE pins SET held=?, pending_description_sha256=?, pending_schema_sha256=?,"
            " pending_description=?, changed=? WHERE server=? AND owner=? AND name=?",
            (held, *new, description, now, server, owner, name),
        )
        return Change(name, held, old, new)

    def _shadowed(self, server: str, owner: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT server FROM pins WHERE owner=? AND name=? AND server<>? LIMIT 1",
            (owner, name, server),
        ).fetchone()
        return str(row[0]) if row else None

    def _get(self, server: str, owner: str, name: str) -> Pin | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM pins WHERE server=? AND owner=? AND name=?",  # noqa: S608
            (server, owner, name),
        ).fetchone()
        return Pin(*row) if row else None

    def held(self, server: str, owner: str, name: str) -> str:
        """Why `name` is held ("" when it is pinned and unchanged, or never listed)."""
        with self._lock:
            pin = self._get(server, owner, name)
        return pin.held if pin is not None else ""

    def pins(self, server: str | None = None) -> list[Pin]:
        query = f"SELECT {_COLUMNS} FROM pins"  # noqa: S608 (constant columns)
        params: tuple[str, ...] = ()
        if server is not None:
            query += " WHERE server=?"
            params = (server,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY server, owner, name", params).fetchall()
        return [Pin(*row) for row in rows]

    def approve(self, server: str, owner: str, name: str) -> Pin:
        """Accept what the server offers now; KeyError when no such tool is held."""
        with self._lock:
            pin = self._get(server, owner, name)
            if pin is None or not pin.held:
                raise KeyError(f"no held tool {name!r} of {server!r} for {owner!r}")
            self._db.execute(
                "UPDATE pins SET description_sha256=?, schema_sha256=?, held='', changed=?"
                " WHERE server=? AND owner=? AND name=?",
                (pin.pending_description_sha256, pin.pending_schema_sha256, self._clock(),
                 server, owner, name),
            )  # fmt: skip
            approved = self._get(server, owner, name)
        assert approved is not None
        return approved
