"""`interlock host`: run the enforcer beside a PDP of its own until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Protocol

from interlock.audit.log import AuditLog
from interlock.config import Config
from interlock.core.pdp import PDP
from interlock.core.policy import PolicyManager
from interlock.errors import ConfigError
from interlock.host.enforcer import HostEnforcer
from interlock.host.rules import TABLE


class Built(Protocol):
    """What `runtime.build` makes that the enforcer uses (passed in: `runtime` sits on a
    floor above this package, tests/test_layers.py)."""

    pdp: PDP
    audit: AuditLog
    policy: PolicyManager


async def serve(config: Config, build: Callable[[Config], Built]) -> None:
    """The PDP here decides and audits dropped connections; posture comes from the shared
    state store, which is why an in-memory one (another process's memory) is refused."""
    if config.host is None:
        raise ConfigError("interlock host needs a [host] section (docs/host.md)")
    if config.state.store == "memory":
        raise ConfigError(
            "interlock host follows the proxies' posture through the shared state store: "
            'set [state] store = "redis://..." (the same as `interlock up`\'s)'
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runtime = build(config)
    enforcer = HostEnforcer(config, runtime.pdp)  # a listener it cannot name: refused now
    store, audit = runtime.pdp.store, runtime.audit
    if hasattr(store, "start"):
        await store.start()
    await audit.start()
    watch = asyncio.create_task(runtime.policy.watch(config.policy.watch_interval))
    try:
        await enforcer.start()
        agents = ", ".join(f"{a} (uid {u}) {m}" for a, u in enforcer.uids.items()
                           for m in [enforcer.modes[a]])  # fmt: skip
        print(f"interlock host: table inet {TABLE}, agents: {agents or 'none'}", flush=True)
        await stop.wait()
    finally:
        await enforcer.stop()
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await audit.close()
        if hasattr(store, "close"):
            await store.close()
