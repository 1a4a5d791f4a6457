"""Readiness: every configured listener bound, and the state of each dependency.

`/healthz` says the process lives; `/readyz` says it can do its work. It answers 503
while interlock is starting (before every listener is bound) and while a *required*
dependency is down: the state store, the audit store, Vault. The others (the policy
bundle server, the upstream database, SSH targets) are reported but do not fail it:
the serving policy stays while the bundle server is away, and an upstream that is down
is down for every instance alike, whose clients get the reason from the proxy.

Probes are application-level (a Redis PING, an SSLRequest answered by the postmaster, an
SSH banner): a frozen process still completes TCP handshakes from its listen backlog, so
a bare connect would call it up. Each probe has `PROBE_TIMEOUT_S`. Requests that arrive
while a round of probes runs share its answer (scrapes and probes do not multiply the
load on a struggling dependency), and no older answer is ever served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

PROBE_TIMEOUT_S = 0.8
"""Far more than a healthy dependency takes on loopback or a LAN, and under a Kubernetes
probe's default 1 s timeout (the probes run concurrently), so the probe sees our answer."""

Check = Callable[[], Awaitable[None]]
"""Returns when the dependency answers; raises (anything) when it does not."""


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    check: Check
    required: bool = True


@dataclass
class Readiness:
    """The listeners' state (set by the runtime) and the dependency probes."""

    probes: list[Probe] = field(default_factory=list)
    listening: bool = False
    """True once every configured listener is bound."""
    _round: asyncio.Future[dict[str, dict[str, Any]]] | None = None

    def add(self, name: str, check: Check, *, required: bool = True) -> None:
        self.probes.append(Probe(name, check, required))

    async def dependencies(self) -> dict[str, dict[str, Any]]:
        """name -> {"up", "required", and "error" when down}, from one round of probes
        (the one running, if any)."""
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._round)

    async def _probe(self) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(*(_run(p) for p in self.probes))
        return {p.name: r for p, r in zip(self.probes, results, strict=True)}

    async def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for /readyz."""
        deps = await self.dependencies()
        down = sorted(n for n, d in deps.items() if not d["up"] and d["required"])
        if not self.listening:
            status, code = "starting", 503
        elif down:
            status, code = "unavailable", 503
        elif any(not d["up"] for d in deps.values()):
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        body: dict[str, Any] = {"status": status, "listening": self.listening}
        if down:
            body["down"] = down
        body["dependencies"] = deps
        return code, body


async def _run(probe: Probe) -> dict[str, Any]:
    try:
        await asyncio.wait_for(probe.check(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return {"up": False, "required": probe.required, "error": "no answer (timeout)"}
    except Exception as exc:
        why = str(exc) or type(exc).__name__
        return {"up": False, "required": probe.required, "error": why[:300]}
    return {"up": True, "required": probe.required}


async def postgres_answers(host: str, port: int) -> None:
    """The postmaster answers an SSLRequest with one byte ('S' or 'N'), before any login."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        await writer.drain()
        answer = await reader.read(1)
        if answer not in (b"S", b"N"):
            raise ConnectionError("not a PostgreSQL server answer")
    finally:
        writer.close()


async def ssh_answers(host: str, port: int) -> None:
    """An SSH server speaks first: its identification line starts with `SSH-`."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        banner = await reader.read(4)
        if banner != b"SSH-":
            raise ConnectionError("no SSH identification line")
    finally:
        writer.close()


VAULT_SERVING = frozenset({200, 429, 472, 473})
"""sys/health: active, standby, DR secondary, performance standby (sealed is 503)."""


async def vault_answers(address: str, ca_cert: str | None = None) -> None:
    """Vault's unauthenticated health endpoint says it is unsealed and serving."""
    import ssl

    import aiohttp

    ctx = ssl.create_default_context(cafile=ca_cert) if address.startswith("https") else None
    url = f"{address.rstrip('/')}/v1/sys/health"
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(url, ssl=ctx if ctx is not None else True) as resp,
    ):
        if resp.status not in VAULT_SERVING:
            raise ConnectionError(f"Vault health answered HTTP {resp.status}")
