"""Asking witnesses to cosign each new checkpoint (the log's side of c2sp.org/tlog-witness).

For each configured witness the log sends the checkpoint with a consistency proof from
the size that witness last cosigned (learned from its `409 Conflict` answer the first
time), checks the cosignature it returns under the witness's configured key, and keeps
only that. A witness that is down or refuses is logged; the checkpoint is stored with the
cosignatures it did get (a verifier requiring a quorum then says it is missing).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from interlock.audit import merkle
from interlock.audit.checkpoint import CheckpointError
from interlock.audit.cosignature import WitnessKey, cosigned_at
from interlock.audit.store import AuditStore
from interlock.audit.witness import SIZE_TYPE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Witness:
    url: str
    """The submission prefix: `<url>/add-checkpoint` is asked."""
    key: WitnessKey


class Witnesses:
    """The witnesses a log asks, and the size each last cosigned (in memory: a restarted
    log learns it again from the first 409)."""

    def __init__(self, witnesses: Sequence[Witness], timeout: float = 5.0) -> None:
        self.witnesses = list(witnesses)
        self.timeout = timeout
        self.sizes: dict[str, int] = {}

    async def cosign(self, store: AuditStore, note: str, size: int) -> str:
        """`note` with every cosignature the witnesses gave for it appended."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            lines = await asyncio.gather(
                *(self._ask(session, w, store, note, size) for w in self.witnesses)
            )
        return note + "".join(lines)

    async def _ask(
        self,
        session: aiohttp.ClientSession,
        witness: Witness,
        store: AuditStore,
        note: str,
        size: int,
    ) -> str:
        name = witness.key.name
        try:
            for _ in range(2):  # a 409 tells the size it last cosigned: ask again from it
                old = self.sizes.get(name, 0)
                if old > size:
                    log.error(
                        "witness %s cosigned size %d, past this log's %d: "
                        "the log was rolled back or replaced",
                        name,
                        old,
                        size,
                    )
                    return ""
                proof = await _proof(store, old, size)
                body = f"old {old}\n" + "".join(f"{p}\n" for p in proof) + "\n" + note
                url = witness.url.rstrip("/") + "/add-checkpoint"
                async with session.post(url, data=body.encode()) as resp:
                    text = await resp.text()
                    if resp.status == 409 and resp.content_type == SIZE_TYPE:
                        self.sizes[name] = int(text.strip())
                        continue
                    if resp.status != 200:
                        log.error(
                            "witness %s refused size %d: %d %s",
                            name,
                            size,
                            resp.status,
                            text.strip()[:200],
                        )
                        return ""
                mine = "".join(
                    f"{line}\n" for line in text.split("\n") if line.startswith(f"\u2014 {name} ")
                )
                if not mine or cosigned_at(note + mine, witness.key) is None:
                    log.error("witness %s answered no cosignature under its key", name)
                    return ""
                self.sizes[name] = size
                return mine
            log.error("witness %s keeps answering 409 for size %d", name, size)
        except (aiohttp.ClientError, TimeoutError, ValueError, CheckpointError) as exc:
            log.error("witness %s could not cosign size %d: %s", name, size, exc)
        return ""


async def _proof(store: AuditStore, old: int, size: int) -> list[str]:
    ranges = merkle.consistency_ranges(old, size)
    nodes = await store.nodes(merkle.plan(ranges))
    return [base64.b64encode(merkle.range_hash(s, e, nodes)).decode() for s, e in ranges]
