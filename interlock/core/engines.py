"""The choice of policy engine: the one configured, or the other when it is not installed."""

from __future__ import annotations

import logging

from interlock.core.engine import DEFAULT_ENGINE, Engine, EngineName

log = logging.getLogger(__name__)


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
