"""The narrow interface between the PDP and a policy engine, and the choice of engine.

Two engines implement it: regorus (`interlock.core.regorus_engine`, the default) and
rego-cpp (`interlock.core.rego`). A compiled policy has `version`, `data`, `evaluate` and
names its engine, so the audit log can say which engine, at which version, decided.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from interlock.core.bundle import BundleSource
from interlock.errors import PolicyTimeout

log = logging.getLogger(__name__)

EngineName = Literal["regorus", "rego-cpp"]
DEFAULT_ENGINE: EngineName = "regorus"


class CompiledPolicy(Protocol):
    """An immutable, compiled bundle. Safe to call from several threads."""

    engine_name: str
    engine_version: str

    @property
    def version(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def source(self) -> BundleSource: ...

    @property
    def entrypoints(self) -> frozenset[str]: ...

    def evaluate(self, entrypoint: str, input: Mapping[str, Any]) -> Any:
        """Return the entrypoint's value for `input`, or raise a PolicyError subclass."""
        ...


class Engine(Protocol):
    """Compiles bundles; raises BundleError when one does not compile."""

    name: str
    version: str

    def compile(self, source: BundleSource, entrypoints: Sequence[str]) -> CompiledPolicy: ...

    def queries(
        self, source: BundleSource, queries: Sequence[str], *, with_tests: bool = False
    ) -> list[Any]: ...


class CompiledBundle:
    """What both engines' compiled policies share: the source, the entrypoints, and the
    evaluation time budget."""

    def __init__(self, source: BundleSource, entrypoints: Sequence[str], timeout_s: float):
        self._source = source
        self._entrypoints = frozenset(entrypoints)
        self._timeout_s = timeout_s

    @property
    def version(self) -> str:
        return self._source.version

    @property
    def data(self) -> Mapping[str, Any]:
        return self._source.data

    @property
    def source(self) -> BundleSource:
        return self._source

    @property
    def entrypoints(self) -> frozenset[str]:
        return self._entrypoints

    def within_budget(self, elapsed: float) -> None:
        """Raise PolicyTimeout when an evaluation used more than its budget: `elapsed`
        is the evaluating thread's CPU time, so waiting never counts."""
        if elapsed > self._timeout_s:
            raise PolicyTimeout(
                f"evaluation took {elapsed * 1000:.1f} ms, over the "
                f"{self._timeout_s * 1000:.1f} ms budget"
            )


def make_engine(name: EngineName = DEFAULT_ENGINE, *, timeout_ms: float = 50.0) -> Engine:
    """The engine named, or the other one when its wheel is not installed (logged as a
    warning, and visible in `fallback_note` for `interlock up` to print)."""
    order: list[EngineName] = [name, "rego-cpp" if name == "regorus" else "regorus"]
    missing: list[str] = []
    for candidate in order:
        try:
            engine = _load(candidate, timeout_ms)
        except ImportError as exc:
            missing.append(f"{candidate} ({exc})")
            continue
        if missing:
            log.warning("policy engine %s is not installed; using %s", missing[0], candidate)
        return engine
    raise ImportError("no policy engine is installed: " + "; ".join(missing))


def fallback_note(wanted: str, engine: Engine) -> str | None:
    """What `interlock up` says when the engine serving is not the one configured."""
    if engine.name == wanted:
        return None
    return f"policy engine {wanted} is not installed here; using {engine.name} {engine.version}"


def _load(name: EngineName, timeout_ms: float) -> Engine:
    if name == "regorus":
        from interlock.core.regorus_engine import RegorusEngine

        return RegorusEngine(timeout_ms=timeout_ms)
    from interlock.core.rego import RegoEngine

    return RegoEngine(timeout_ms=timeout_ms)
