"""The shared state store: context and posture in Redis, for several interlock instances.

Everything `MemoryStore` keeps per agent lives under `interlock:a:<agent>:*`, so every
instance decides on the same context: recent actions, taints (a sorted set of expiries,
raised with `ZADD GT`), first-seen targets, the per-minute baseline, fingerprints of
labelled values, approval history per kind, and the posture. Posture changes are written
in a WATCH/MULTI transaction (two instances restricting at once both count) and published
on `interlock:posture`; every instance's listeners (the proxies, which end sessions on
isolation) hear them from that channel, their own changes included.

Fail closed: a Redis error becomes `StateError("state store unavailable: ...")`, which the
PDP turns into a denial; nothing falls back to local state. When the subscription drops,
it is re-established and the current posture of every agent this instance knows is
delivered again, so an isolation pushed while it was away still ends sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, replace
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from interlock.core.context import (
    BASELINE_MINUTES,
    MAX_ANSWER_KINDS,
    MAX_FINGERPRINTS,
    NORMAL,
    RATE_WINDOW_S,
    RECENT_ACTIONS,
    SEEN_TARGETS,
    ContextView,
    Flow,
    Listeners,
    Posture,
    RecentAction,
    _baseline,
    tighten,
)
from interlock.core.model import parse_restriction
from interlock.errors import StateError

log = logging.getLogger(__name__)
T = TypeVar("T")
_CONTEXT_PARTS = ("taints", "taint_src", "seen", "window", "answers", "minutes", "posture", "fp")
_RECORD_PARTS = ("recent", "window", "minutes", "seen", "taints", "taint_src")
CHANNEL = "interlock:posture"
TIMEOUT_S = 1.0
"""Per Redis operation: a slow store must not hold decisions for long."""

# Each decision reads its context once and records its action once. Each is one script
# (one command, run atomically) rather than a pipeline of 8 or 11 commands: the client's
# per-command packing and reply parsing was most of a decision's cost with Redis
# (docs/benchmarks.md, "The shared stores"). The keys are declared, as scripts must.
CONTEXT_LUA = """
local taints = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local sources = redis.call('HGETALL', KEYS[2])
local seen = redis.call('ZSCORE', KEYS[3], ARGV[2])
local rate = redis.call('ZCOUNT', KEYS[4], '(' .. ARGV[3], '+inf')
local answers = redis.call('HGET', KEYS[5], ARGV[2])
local minutes = redis.call('HGETALL', KEYS[6])
local posture = redis.call('GET', KEYS[7])
local prints = redis.call('EXISTS', KEYS[8])
return {taints, sources, seen and 1 or 0, rate, answers or '', minutes, posture or '', prints}
"""
"""KEYS: taints, taint_src, seen, window, answers, minutes, posture, fp. ARGV: now,
target key, start of the rate window. Missing values come back as 0 or '' (a Lua array
cannot hold nil)."""

RECORD_LUA = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if redis.call('HINCRBY', KEYS[3], ARGV[6], 1) == 1 then
  redis.call('PERSIST', KEYS[3])  -- a TTL earlier versions set
  local fields = redis.call('HKEYS', KEYS[3])
  if #fields > tonumber(ARGV[7]) then
    table.sort(fields, function(a, b) return tonumber(a) < tonumber(b) end)
    for i = 1, #fields - tonumber(ARGV[7]) do
      redis.call('HDEL', KEYS[3], fields[i])
    end
  end
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[8])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, ARGV[9])
for i = 12, #ARGV, 2 do
  redis.call('ZADD', KEYS[5], 'GT', ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[10])
end
redis.call('SADD', KEYS[7], ARGV[11])
return 1
"""
"""KEYS: recent, window, minutes, seen, taints, taint_src, the agent set. ARGV: the action
(JSON), last index kept of recent, window member, time, window cut-off, minute, how many
minutes to keep, target key, last rank dropped from seen, decision id, agent id, then
label and expiry pairs of the taints. The per-minute counts keep the newest
BASELINE_MINUTES + 1 minutes with actions, as the embedded store's deque does (a minute's
first action may push the oldest out), so a dormant agent's baseline is 0 on both, not
unknown on one. A script runs without any other command in between; it is not rolled
back if it fails partway (Redis scripts are not), which only a wrong key type could
cause."""


def _settled(future: asyncio.Future[Any]) -> None:
    """Mark a shared read's failure as seen (asyncio logs one nobody retrieved)."""
    if not future.cancelled():
        future.exception()


class _PostureRead:
    """One GET of an agent's posture, shared by the callers that arrive before it is
    sent (`RedisStore.posture`); `before` is the read it waits for."""

    __slots__ = ("before", "done", "sent")

    def __init__(self, before: asyncio.Future[str | None] | None) -> None:
        self.before = before
        self.sent = False
        self.done: asyncio.Future[str | None]


def _posture_doc(p: Posture) -> str:
    doc = asdict(p)
    doc["restrictions"] = sorted(p.restrictions)
    return json.dumps(doc)


def _posture(raw: str | None) -> Posture:
    if not raw:
        return NORMAL
    doc = json.loads(raw)
    return Posture(
        frozenset(doc.get("restrictions", ())),
        bool(doc.get("isolated")),
        doc.get("until"),
        str(doc.get("reason", "")),
    )


async def follow(
    client: Any,
    channel: str,
    handle: Callable[[dict[str, Any]], None],
    subscribed: asyncio.Event | None = None,
    resubscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Hand every JSON message on `channel` to `handle` until cancelled, resubscribing
    when the connection drops (`resubscribed` then runs: messages may have been missed).
    Malformed messages are logged and skipped."""
    first = True
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            if subscribed is not None:
                subscribed.set()
            if not first and resubscribed is not None:
                await resubscribed()
            first = False
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    handle(json.loads(message["data"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("malformed message on %s ignored", channel)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("subscription to %s lost (%s); retrying", channel, type(exc).__name__)
            await asyncio.sleep(0.5)
        finally:
            # `client` is typed Any here, so the unannotated PubSub.aclose needs no ignore.
            with contextlib.suppress(Exception):
                await pubsub.aclose()


class RedisStore(Listeners):
    def __init__(
        self, url: str, clock: Callable[[], float] = time.time, prefix: str = "interlock:"
    ) -> None:
        super().__init__()
        self.url = url
        self._redis = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
        )
        self._clock = clock
        self._prefix = prefix
        self._context = self._redis.register_script(CONTEXT_LUA)
        self._record = self._redis.register_script(RECORD_LUA)
        self._known: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._posture_reads: dict[str, _PostureRead] = {}
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check Redis answers (a clear error at start-up if not) and follow posture."""
        try:
            await asyncio.wait_for(self._redis.ping(), TIMEOUT_S * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateError(f"Redis at {self._safe_url()} unreachable: {exc}") from None
        self._task = asyncio.create_task(self._follow())
        await asyncio.wait_for(self._subscribed.wait(), 5)

    async def close(self) -> None:
        # Reads queued behind one in flight fail instead of reconnecting a closed client.
        self._closed = True
        reads = [read.done for read in self._posture_reads.values()]
        await asyncio.gather(*reads, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def ping(self) -> None:
        """Raise StateError unless Redis answers (readiness)."""
        await self._do(self._redis.ping())

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool (shared approvals use it too)."""
        return self._redis

    def _safe_url(self) -> str:
        """The URL without its password."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    # --- helpers ---------------------------------------------------------------------------

    def _k(self, agent_id: str, part: str) -> str:
        return f"{self._prefix}a:{agent_id}:{part}"

    async def _do(self, op: Awaitable[T]) -> T:
        try:
            return await op
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateError(f"state store unavailable: {type(exc).__name__}") from None

    # --- context ---------------------------------------------------------------------------

    async def view(
        self, agent_id: str, target_key: str, now: float, *, recent: bool = False
    ) -> ContextView:
        _, view, _ = await self.context(agent_id, target_key, now)
        if not recent:
            return view
        # Only the admin API asks for them, and reads them a moment after the rest.
        latest = await self._do(
            self._redis.lrange(self._k(agent_id, "recent"), 0, RECENT_ACTIONS - 1)
        )
        return replace(view, recent=tuple(RecentAction(**json.loads(r)) for r in reversed(latest)))

    async def context(
        self, agent_id: str, target_key: str, now: float
    ) -> tuple[Posture, ContextView, bool]:
        k = self._k
        keys = [k(agent_id, part) for part in _CONTEXT_PARTS]
        args = [repr(float(now)), target_key, repr(float(now - RATE_WINDOW_S))]
        found = await self._do(self._context(keys=keys, args=args))
        taints, sources, seen, rate, answers, minutes, posture, prints = found
        labels = dict(zip(taints[::2], taints[1::2], strict=True))
        ok, no = (int(x) for x in (answers or "0,0").split(","))
        counts = dict(zip(minutes[::2], minutes[1::2], strict=True))
        view = ContextView(
            taints=frozenset(labels),
            first_seen=not int(seen),
            actions_last_minute=int(rate),
            approved=ok,
            denied=no,
            taint_sources={
                s: v for s, v in zip(sources[::2], sources[1::2], strict=True) if s in labels
            },
            baseline_per_minute=_baseline(
                deque(sorted([int(m), int(c)] for m, c in counts.items())), now
            ),
        )
        return _posture(str(posture) if posture else None).active(now), view, bool(int(prints))

    async def record(
        self,
        agent_id: str,
        action: RecentAction,
        target_key: str,
        taints: Mapping[str, float],
    ) -> None:
        t = float(action.time)
        k = self._k
        keys = [k(agent_id, part) for part in _RECORD_PARTS] + [f"{self._prefix}agents"]
        args: list[str | int] = [
            json.dumps(asdict(action)),
            RECENT_ACTIONS - 1,
            f"{t}:{action.decision_id}",
            repr(t),
            repr(t - RATE_WINDOW_S),
            str(int(t // 60)),
            BASELINE_MINUTES + 1,
            target_key,
            -(SEEN_TARGETS + 1),
            action.decision_id,
            agent_id,
        ]
        for label, until in taints.items():
            args += [label, repr(float(until))]
        await self._do(self._record(keys=keys, args=args))
        self._known.add(agent_id)

    async def add_taint(
        self, agent_id: str, label: str, until: float, source: str | None = None
    ) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._k(agent_id, "taints"), {label: until}, gt=True)
        if source is not None:
            pipe.hset(self._k(agent_id, "taint_src"), label, source)
        await self._do(pipe.execute())

    async def add_fingerprints(
        self, agent_id: str, source: str, labels: frozenset[str], fps: Iterable[str], until: float
    ) -> None:
        value = json.dumps([source, sorted(labels), until])
        mapping = dict.fromkeys(fps, value)
        if not mapping:
            return
        key = self._k(agent_id, "fp")
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, mapping=cast(Any, mapping))
        pipe.expire(key, max(1, int(until - self._clock())) + 60)
        pipe.hlen(key)
        *_, size = await self._do(pipe.execute())
        if int(size) > MAX_FINGERPRINTS:
            await self._trim_fingerprints(key)

    async def _trim_fingerprints(self, key: str) -> None:
        """Over the cap: forget the ones that expire first (rare, so a full read is fine)."""
        entries = await self._do(self._redis.hgetall(key))
        by_expiry = sorted(entries, key=lambda fp: json.loads(entries[fp])[2])
        drop = by_expiry[: len(entries) - MAX_FINGERPRINTS]
        if drop:
            await self._do(self._redis.hdel(key, *drop))

    async def has_fingerprints(self, agent_id: str) -> bool:
        return bool(await self._do(self._redis.exists(self._k(agent_id, "fp"))))

    async def flows(self, agent_id: str, fps: frozenset[str], now: float) -> list[Flow]:
        if not fps:
            return []
        ordered = sorted(fps)
        values = await self._do(self._redis.hmget(self._k(agent_id, "fp"), ordered))
        found: dict[str, set[str]] = {}
        for raw in values:
            if raw is None:
                continue
            source, labels, until = json.loads(raw)
            if until > now:
                found.setdefault(source, set()).update(labels)
        return [Flow(s, frozenset(labels)) for s, labels in sorted(found.items())]

    async def record_approval(self, agent_id: str, kind: str, approved: bool) -> None:
        key = self._k(agent_id, "answers")

        async def update(pipe: Any) -> None:
            raw = await pipe.hget(key, kind)
            ok, no = (int(x) for x in (raw or "0,0").split(","))
            ok, no = (ok + 1, no) if approved else (ok, no + 1)
            size = await pipe.hlen(key)
            pipe.multi()
            pipe.hset(key, kind, f"{ok},{no}")
            if int(size) > MAX_ANSWER_KINDS:
                pipe.delete(key)  # bounded memory: start the history afresh

        await self._transaction(key, update)

    # --- posture ---------------------------------------------------------------------------

    async def posture(self, agent_id: str, now: float) -> Posture:
        """The agent's posture as Redis holds it at some instant after this call began.

        Callers asking at once share reads: a caller joins the read that has not been
        sent yet, or starts one, which is sent as soon as the agent's read in flight (if
        any) has returned. A shared read is always sent after its callers arrived, so
        each still sees every change committed before it asked, as with a read of its
        own; under load (a Postgres Execute re-checks posture each time) one GET serves
        every caller that arrived during the previous one."""
        read = self._posture_reads.get(agent_id)
        if read is None or read.sent:
            read = _PostureRead(read.done if read is not None else None)
            self._posture_reads[agent_id] = read
            read.done = asyncio.ensure_future(self._read_posture(agent_id, read))
            # Its callers may all have been cancelled: the outcome is then nobody's.
            read.done.add_done_callback(_settled)
        raw = await asyncio.shield(read.done)
        return _posture(raw).active(now)

    async def _read_posture(self, agent_id: str, read: _PostureRead) -> str | None:
        try:
            if read.before is not None:
                with contextlib.suppress(Exception):  # its callers had its outcome
                    await asyncio.shield(read.before)
            read.sent = True  # callers from now on wait for the next read
            read.before = None
            if self._closed:
                raise StateError("state store unavailable: closed")
            raw = await self._do(self._redis.get(self._k(agent_id, "posture")))
            return str(raw) if raw else None
        finally:
            if self._posture_reads.get(agent_id) is read:
                del self._posture_reads[agent_id]

    async def set_posture(self, agent_id: str, posture: Posture) -> None:
        for r in posture.restrictions:
            parse_restriction(r)
        doc = _posture_doc(posture)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._k(agent_id, "posture"), doc)
        pipe.sadd(f"{self._prefix}agents", agent_id)
        pipe.publish(CHANNEL, json.dumps({"agent": agent_id, "posture": doc}))
        await self._do(pipe.execute())
        self._known.add(agent_id)

    async def restore(self, agent_id: str, reason: str = "") -> None:
        await self.set_posture(agent_id, replace(NORMAL, reason=reason))

    async def restrict(
        self,
        agent_id: str,
        restrictions: Iterable[str],
        *,
        isolate: bool = False,
        reason: str = "",
        until: float | None = None,
    ) -> Posture:
        added = frozenset(parse_restriction(r) for r in restrictions)
        key = self._k(agent_id, "posture")
        result: list[Posture] = []

        async def update(pipe: Any) -> None:
            current = _posture(await pipe.get(key)).active(self._clock())
            updated = tighten(current, added, isolate, reason, until)
            result[:] = [updated]
            pipe.multi()
            if updated != current:
                doc = _posture_doc(updated)
                pipe.set(key, doc)
                pipe.sadd(f"{self._prefix}agents", agent_id)
                pipe.publish(CHANNEL, json.dumps({"agent": agent_id, "posture": doc}))

        await self._transaction(key, update)
        self._known.add(agent_id)
        return result[0]

    async def _transaction(self, key: str, update: Callable[[Any], Awaitable[None]]) -> None:
        """Read-modify-write `key` atomically across instances (retried on conflict)."""
        for _ in range(50):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await self._do(pipe.watch(key))
                    await update(pipe)
                    await self._do(pipe.execute())
                    return
                except WatchError:
                    continue
                except (RedisError, OSError, TimeoutError) as exc:
                    raise StateError(f"state store unavailable: {type(exc).__name__}") from None
        raise StateError("state store busy: posture kept changing under this update")

    def _notify(self, agent_id: str, posture: Posture) -> None:
        self._known.add(agent_id)
        super()._notify(agent_id, posture)

    async def _follow(self) -> None:
        """Deliver published posture changes; after a reconnect, deliver every known
        agent's current posture (changes may have been missed meanwhile)."""

        def handle(doc: dict[str, Any]) -> None:
            self._notify(str(doc["agent"]), _posture(doc["posture"]))

        await follow(self._redis, CHANNEL, handle, self._subscribed, self._replay)

    async def _replay(self) -> None:
        now = self._clock()
        for agent_id in sorted(self._known):
            with contextlib.suppress(StateError):
                self._notify(agent_id, await self.posture(agent_id, now))

    def agents(self) -> list[str]:
        """Agents this instance has seen (the admin API lists these; others are in Redis
        under `interlock:agents`)."""
        return sorted(self._known)
