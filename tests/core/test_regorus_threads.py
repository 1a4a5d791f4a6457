"""regorus engines are dropped only by the thread that made them (pyo3 `unsendable`):
on eviction, when the thread exits, and never by a child forked from another thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from interlock.core import regorus_engine
from interlock.core.policy import PolicyManager
from interlock.core.regorus_engine import ENGINES_PER_THREAD, RegorusEngine

UNSENDABLE = "dropped on another thread"

FORK_FROM_A_THREAD = textwrap.dedent(
    """
    import asyncio, threading
    import uvloop
    from interlock.core.policy import PolicyManager
    from interlock.core.regorus_engine import RegorusEngine

    manager = PolicyManager(engine=RegorusEngine())
    manager.load()  # this (main) thread holds an engine now

    async def spawn():
        proc = await asyncio.create_subprocess_exec("true", start_new_session=True)
        assert await proc.wait() == 0

    def run():
        uvloop.new_event_loop().run_until_complete(spawn())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print("spawned")
    """
)


def test_a_child_forked_from_another_thread_drops_no_engine() -> None:
    """uvloop forks with Python running in the child, which clears every other thread's
    state from the forking thread; the main thread's engine must survive that without
    pyo3's error (printed by the child on the parent's stderr, as seen in `interlock
    bench` before the fix)."""
    done = subprocess.run(
        [sys.executable, "-c", FORK_FROM_A_THREAD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spawned"
    assert UNSENDABLE not in done.stderr, done.stderr


def test_a_thread_that_exits_drops_its_engines_itself() -> None:
    held_before = set(regorus_engine._held)
    made: list[int] = []

    def work() -> None:
        manager = PolicyManager(engine=RegorusEngine())
        manager.load()
        made.extend(id(e) for e in regorus_engine._engines().values())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert len(made) == 1
    assert set(regorus_engine._held) == held_before  # given up as the thread exited


def test_evicted_engines_are_given_up() -> None:
    def work() -> None:
        for _ in range(ENGINES_PER_THREAD + 3):
            PolicyManager(engine=RegorusEngine()).load()
        mine = {id(e) for e in regorus_engine._engines().values()}
        assert len(mine) == ENGINES_PER_THREAD
        assert mine <= set(regorus_engine._held)

    before = set(regorus_engine._held)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert set(regorus_engine._held) == before
