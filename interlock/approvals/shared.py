"""Approval requests shared through Redis, so any instance can show and answer them.

The held action waits on the instance that holds it (its client's connection is there);
the request is also written to Redis (`interlock:approval:<id>`, expiring with it, listed
in `interlock:approvals`). An answer given on any instance first claims the request
(`SET interlock:approval:<id>:answered NX`: one answer wins, the others get 409), then is
published on `interlock:answers`; the holding instance hears it and releases or refuses
the action. A request whose instance is gone expires with its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from interlock.approvals.holds import ApprovalError, ApprovalRequest
from interlock.core.redis_store import follow

if TYPE_CHECKING:
    from interlock.approvals.holds import Holds

log = logging.getLogger(__name__)
PENDING = "interlock:approvals"
ANSWERS = "interlock:answers"


def _key(decision_id: str) -> str:
    return f"interlock:approval:{decision_id}"


def _request(raw: str) -> ApprovalRequest:
    doc = json.loads(raw)
    return ApprovalRequest(
        doc["id"], doc["agent"], doc["owner"], doc["summary"], doc["action_sha256"],
        doc["risk"], doc["created"], doc["expires"], kind=doc.get("kind", ""),
        text=doc.get("text", ""),
    )  # fmt: skip


class SharedApprovals:
    def __init__(self, client: Any, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self, holds: Holds) -> None:
        self._task = asyncio.create_task(self._follow(holds))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def opened(self, request: ApprovalRequest) -> None:
        ttl = max(1, int(request.expires - self._clock()) + 5)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(_key(request.decision_id), json.dumps(request.to_json()), ex=ttl)
            pipe.sadd(PENDING, request.decision_id)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            # The hold still works here; other instances just cannot see it.
            log.warning("approval %s not shared: %s", request.decision_id, exc)

    async def closed(self, decision_id: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(_key(decision_id))
            pipe.srem(PENDING, decision_id)
            await pipe.execute()

    async def pending(self) -> list[ApprovalRequest]:
        ids = sorted(await self.redis.smembers(PENDING))
        if not ids:
            return []
        raws = await self.redis.mget([_key(i) for i in ids])
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:
            await self.redis.srem(PENDING, *gone)
        return [_request(raw) for raw in raws if raw is not None]

    async def get(self, decision_id: str) -> ApprovalRequest | None:
        raw = await self.redis.get(_key(decision_id))
        return _request(raw) if raw else None

    async def claim(self, request: ApprovalRequest) -> bool:
        """The first answer to this request, on any instance."""
        ttl = max(1, int(request.expires - self._clock()) + 5)
        return bool(
            await self.redis.set(_key(request.decision_id) + ":answered", 1, nx=True, ex=ttl)
        )

    async def send(self, decision_id: str, approved: bool, approver: str, channel: str,
                   reason: str) -> None:  # fmt: skip
        doc = {"id": decision_id, "approved": approved, "approver": approver,
               "channel": channel, "reason": reason}  # fmt: skip
        await self.redis.publish(ANSWERS, json.dumps(doc))

    async def _follow(self, holds: Holds) -> None:
        def handle(doc: dict[str, Any]) -> None:
            with contextlib.suppress(ApprovalError):  # not held here: another instance's
                holds.answer(
                    str(doc["id"]), bool(doc["approved"]), str(doc["approver"]),
                    str(doc["channel"]), str(doc.get("reason", "")), check_owner=False,
                )  # fmt: skip

        await follow(self.redis, ANSWERS, handle)
