"""Hot reload: atomic swaps, refused bad bundles, version changes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from interlock.core.policy import PolicyManager
from interlock.errors import BundleError

V1 = 'package interlock\nimport rego.v1\ndecision := {"effect": "allow", "reasons": ["v1"]}\n'
V2 = 'package interlock\nimport rego.v1\ndecision := {"effect": "deny", "reasons": ["v2"]}\n'


def manager(tmp_path: Path, text: str = V1) -> PolicyManager:
    (tmp_path / "p.rego").write_text(text)
    m = PolicyManager(tmp_path)
    m.load()
    return m


def test_bundle_version_changes_with_content(tmp_path: Path) -> None:
    m = manager(tmp_path)
    v1 = m.current.version
    (tmp_path / "p.rego").write_text(V2)
    assert m.changed()
    m.load()
    assert m.current.version != v1
    assert m.current.evaluate("interlock/decision", {})["reasons"] == ["v2"]


def test_unchanged_content_keeps_the_same_compiled_bundle(tmp_path: Path) -> None:
    m = manager(tmp_path)
    first = m.current
    (tmp_path / "p.rego").write_text(V1)
    assert m.load() is first


def test_broken_bundle_is_refused_and_old_keeps_serving(tmp_path: Path) -> None:
    m = manager(tmp_path)
    v1 = m.current.version
    (tmp_path / "p.rego").write_text("package interlock\ndecision := {\n")
    with pytest.raises(BundleError):
        m.load()
    assert m.current.version == v1
    assert m.last_error
    assert m.current.evaluate("interlock/decision", {})["reasons"] == ["v1"]
    assert not m.changed()


def test_no_bundle_loaded_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no policy bundle loaded"):
        _ = PolicyManager(tmp_path).current


def test_reload_swaps_atomically_under_concurrent_decisions(tmp_path: Path) -> None:
    """Readers in other threads only ever see a whole v1 or a whole v2, never a mix,
    and each answer matches the version of the snapshot it came from."""
    m = manager(tmp_path)
    versions = {}
    (tmp_path / "p.rego").write_text(V2)
    versions[m.current.version] = "v1"
    stop = threading.Event()
    mismatches: list[str] = []
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            snap = m.current
            reason = snap.evaluate("interlock/decision", {})["reasons"][0]
            seen.add(reason)
            if versions.get(snap.version, "v2") != reason:
                mismatches.append(f"{snap.version[:8]} answered {reason}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(6):
        (tmp_path / "p.rego").write_text(V2 if i % 2 == 0 else V1)
        m.load()
    stop.set()
    for t in threads:
        t.join()
    assert not mismatches
    assert seen == {"v1", "v2"}


async def test_watch_reloads_on_change_and_survives_bad_edits(tmp_path: Path) -> None:
    m = manager(tmp_path)
    task = asyncio.create_task(m.watch(0.02))
    try:
        (tmp_path / "p.rego").write_text("package interlock\ndecision := {\n")
        await _until(lambda: m.last_error is not None)
        assert m.current.evaluate("interlock/decision", {})["reasons"] == ["v1"]
        (tmp_path / "p.rego").write_text(V2)
        await _until(lambda: m.last_error is None)
        assert m.current.evaluate("interlock/decision", {})["reasons"] == ["v2"]
    finally:
        task.cancel()


async def _until(cond: object, limit: float = 10.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
