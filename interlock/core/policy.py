"""The live policy: one compiled bundle at a time, swapped atomically on change.

Readers take `manager.current` once per decision and use that snapshot to the end, so a
reload in the middle of a decision never mixes two bundles. A bundle that fails to load or
compile is refused and the old one keeps serving; the failure is logged and kept in
`last_error` for the admin API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from interlock.core.bundle import bundled_policy_dir, fingerprint, load_bundle
from interlock.core.engine import CompiledPolicy, Engine
from interlock.core.engines import make_engine
from interlock.errors import BundleError

log = logging.getLogger(__name__)

DECISION_ENTRYPOINT = "interlock/decision"


class PolicyManager:
    """Loads, compiles and hot-reloads one bundle directory."""

    def __init__(
        self,
        bundle_dir: Path | str | None = None,
        *,
        engine: Engine | None = None,
        entrypoints: Sequence[str] = (DECISION_ENTRYPOINT,),
    ) -> None:
        self.bundle_dir = Path(bundle_dir) if bundle_dir else bundled_policy_dir()
        self.engine = engine or make_engine()
        self.entrypoints = tuple(dict.fromkeys(entrypoints))
        self._current: CompiledPolicy | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self.last_error: str | None = None
        self._listeners: list[Callable[[CompiledPolicy], None]] = []

    @property
    def current(self) -> CompiledPolicy:
        """The compiled bundle now serving. Raises BundleError before the first load."""
        if self._current is None:
            raise BundleError("no policy bundle loaded")
        return self._current

    def on_reload(self, listener: Callable[[CompiledPolicy], None]) -> None:
        self._listeners.append(listener)

    def load(self) -> CompiledPolicy:
        """Load and compile the bundle now; on failure keep the old one and raise."""
        stamp = fingerprint(self.bundle_dir)
        try:
            source = load_bundle(self.bundle_dir)
            if self._current is not None and source.version == self._current.version:
                self._fingerprint = stamp
                return self._current
            compiled = self.engine.compile(source, self.entrypoints)
        except BundleError as exc:
            self.last_error = str(exc)
            self._fingerprint = stamp
            raise
        self._fingerprint = stamp
        self.last_error = None
        self._current = compiled
        log.info(
            "policy bundle %s loaded, version %s, engine %s %s",
            self.bundle_dir, compiled.version[:12], compiled.engine_name, compiled.engine_version,
        )  # fmt: skip
        for listener in self._listeners:
            listener(compiled)
        return compiled

    def load_from(self, bundle_dir: Path) -> CompiledPolicy:
        """Serve the bundle in `bundle_dir` from now on, if it compiles (else BundleError,
        and the current one keeps serving); the directory is watched from then on."""
        previous = self.bundle_dir
        self.bundle_dir = bundle_dir
        try:
            return self.load()
        except BundleError:
            self.bundle_dir = previous
            self._fingerprint = fingerprint(previous)
            raise

    def changed(self) -> bool:
        """True when the files on disk differ from those last loaded."""
        return fingerprint(self.bundle_dir) != self._fingerprint

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the bundle and reload on change, until cancelled. Compiles off the loop."""
        while True:
            await asyncio.sleep(interval)
            if not self.changed():
                continue
            try:
                await asyncio.to_thread(self.load)
            except BundleError as exc:
                log.error("policy reload refused, old bundle keeps serving: %s", exc)
