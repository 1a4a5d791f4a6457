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
from typing import Any, Protocol

from redis.exceptions import RedisError

from interlock.approvals.request import ApprovalError, ApprovalRequest
from interlock.core.redis_store import follow

log = logging.getLogger(__name__)


PENDING = "interlock:approvals"
ANSWERS = "interlock:answers"


GRANT = "interlock:grant:"
REFUSAL = "interlock:refusal:"
OPEN = "interlock:retry:"
_TAKE_GRANT = """
local uses = tonumber(redis.call('HGET', KEYS[1], 'uses') or '0')
if uses <= 0 then return nil end
local left = redis.call('HINCRBY', KEYS[1], 'uses', -1)
local grant = redis.call('HMGET', KEYS[1], 'id', 'approver')
if left <= 0 then redis.call('DEL', KEYS[1]) end
return grant
"""
"""Check and spend one use atomically, so two instances cannot both spend the last."""


def _key(decision_id: str) -> str:
    return f"interlock:approval:{decision_id}"


class Holds(Protocol):
    """The side of `holds.Holds` an answer heard from another instance is given to
    (a protocol, so holds.py can import this module and not the other way round)."""

    def answer(
        self,
        decision_id: str,
        approved: bool,
        approver: str,
        channel: str,
        reason: str = "",
        *,
        check_owner: bool = True,
    ) -> ApprovalRequest: ...


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

    async def answered(self, decision_id: str) -> bool:
        """Claimed by an answer (the claim outlives the request by a few seconds)."""
        return bool(await self.redis.exists(_key(decision_id) + ":answered"))

    async def send(self, decision_id: str, approved: bool, approver: str, channel: str,
                   reason: str) -> None:  # fmt: skip
        doc = {"id": decision_id, "approved": approved, "approver": approver,
               "channel": channel, "reason": reason}  # fmt: skip
        await self.redis.publish(ANSWERS, json.dumps(doc))

    # --- ext_authz retries ----------------------------------------------------------------
    # Envoy's retry of an approved request may reach any instance: the grant, a denial,
    # and which instance's request is open for the request's hash live here too.

    async def take_grant(self, digest: str) -> tuple[str, str | None] | None:
        """One use of an approved retry's grant: (approval id, approver), or None."""
        got = await self.redis.eval(_TAKE_GRANT, 1, f"{GRANT}{digest}")
        if not got:
            return None
        decision_id, approver = got
        return str(decision_id), (str(approver) if approver else None)

    async def put_grant(
        self, digest: str, decision_id: str, approver: str | None, uses: int, ttl: float
    ) -> None:
        key = f"{GRANT}{digest}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={"id": decision_id, "approver": approver or "", "uses": uses})
        pipe.expire(key, max(1, int(ttl)))
        await pipe.execute()

    async def refusal(self, digest: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{REFUSAL}{digest}")
        return json.loads(raw) if raw else None

    async def put_refusal(self, digest: str, verdict: dict[str, Any], ttl: float) -> None:
        await self.redis.set(f"{REFUSAL}{digest}", json.dumps(verdict), ex=max(1, int(ttl)))

    async def open_retry(self, digest: str, decision_id: str, ttl: float) -> str | None:
        """Claim the open request for this hash; the id of another instance's if it has
        one (None: this instance opens it)."""
        key = f"{OPEN}{digest}"
        if await self.redis.set(key, decision_id, nx=True, ex=max(1, int(ttl) + 5)):
            return None
        other = await self.redis.get(key)
        return str(other) if other else None

    async def close_retry(self, digest: str) -> None:
        await self.redis.delete(f"{OPEN}{digest}")

    async def _follow(self, holds: Holds) -> None:
        def handle(doc: dict[str, Any]) -> None:
            with contextlib.suppress(ApprovalError):  # not held here: another instance's
                holds.answer(
                    str(doc["id"]), bool(doc["approved"]), str(doc["approver"]),
                    str(doc["channel"]), str(doc.get("reason", "")), check_owner=False,
                )  # fmt: skip

        await follow(self.redis, ANSWERS, handle)
