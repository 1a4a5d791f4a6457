"""A Postgres proxy worker other than the first (`[postgres] workers`).

The first worker (`interlock up`) starts this module as `python -P -m interlock.worker`
and writes one JSON order on its stdin: the config to serve (the Postgres proxy alone, on
the port the first bound), this worker's `Slot`, the config file to re-read on SIGHUP and
the per-agent mode overrides in force. It answers "ready" on stdout once it serves, then
follows per-agent overrides from stdin and stops when stdin closes. How the workers share
one agent context, one audit tree and cancel keys is `interlock.proxies.postgres.workers`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from interlock.config import Config, load_config
from interlock.core import heap
from interlock.core.modes import Mode
from interlock.eventloop import loop_factory
from interlock.logs import setup as setup_logs
from interlock.proxies.postgres.workers import READY, Slot, own_dir, worker_config
from interlock.runtime import Runtime, build, reload_on_sighup, start

log = logging.getLogger(__name__)


def worker_runtime(runtime: Runtime) -> None:
    """What a worker other than the first does not do: checkpoints and witnesses are the
    first worker's (one signer of the one tree)."""
    runtime.audit.checkpoint_interval = 0
    runtime.audit.witnesses = None
    runtime.audit.final_checkpoint = False


async def _serve(order: dict[str, object]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = Config.model_validate_json(str(order["config"]))
    assert config.postgres is not None
    slot = Slot(int(str(order["index"])), int(str(order["count"])), str(order["directory"]))
    source = Path(str(order["source"])) if order["source"] else None
    public_url = str(order["public_url"]) if order["public_url"] else None
    try:
        runtime = build(config, own_dir=own_dir(config, slot.index))
        runtime.slot = slot
        worker_runtime(runtime)
        overrides = order.get("overrides") or {}
        assert isinstance(overrides, dict)
        runtime.pdp.mode_overrides.update({a: Mode(v) for a, v in overrides.items()})
        if source is not None:
            listen = config.postgres.listen
            runtime.reread = lambda: worker_config(load_config(source), listen, public_url)
        await start(runtime)
    except Exception as exc:
        sys.stdout.buffer.write(f"error: {exc}\n".encode())
        sys.stdout.flush()
        return 1
    reload_on_sighup(runtime)
    # The first worker sends per-agent overrides, one JSON line each, and closes our
    # stdin to stop us (or by dying).
    pipe = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(pipe), sys.stdin)
    watcher = loop.create_task(_follow(pipe, runtime))
    watcher.add_done_callback(lambda _: stop.set())
    heap.settle()
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await runtime.stop()
    return 0


async def _follow(pipe: asyncio.StreamReader, runtime: Runtime) -> None:
    """Apply the first worker's per-agent mode overrides and answer its report requests
    (for `/metrics`) until it closes the pipe."""
    while line := await pipe.readline():
        try:
            order = json.loads(line)
            if "report" in order:
                reply = {"report": order["report"], **report(runtime)}
                sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
                sys.stdout.flush()
                continue
            agent_id, mode = order["mode"]
            if mode is None:
                runtime.pdp.mode_overrides.pop(agent_id, None)
            else:
                runtime.pdp.mode_overrides[agent_id] = Mode(mode)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("postgres worker: unreadable order from the first worker: %s", exc)
        except BrokenPipeError:
            return  # the first worker is gone; its closed stdin ends us too


def report(runtime: Runtime) -> dict[str, Any]:
    """This worker's numbers for the first worker's `/metrics` (`admin.metrics.merge`)."""
    return {
        "stats": runtime.pdp.stats.counts(),
        "audit": runtime.audit.status(),
        "sessions": {name: count() for name, count in runtime.sessions.items()},
    }


def main() -> int:
    # Until its handler is installed, a SIGHUP (sent to every worker on reload) must not
    # end a worker that is still starting: it reads the reloaded config in its order.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    order = json.loads(sys.stdin.buffer.readline())
    setup_logs(bool(order.get("verbose")), str(order.get("log_format", "text")))
    config = Config.model_validate_json(order["config"])
    return asyncio.run(_serve(order), loop_factory=loop_factory(config.event_loop))


if __name__ == "__main__":
    sys.exit(main())
