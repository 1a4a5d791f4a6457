"""Rego evaluation in-process through regorus (Rust; the `celine-regorus` wheel).

Measured against rego-cpp on the bundled policy (docs/benchmarks.md): evaluation is
several times faster and the input crosses as one JSON string instead of one foreign call
per node. Two regorus gaps shape this module and the bundled policy
(docs/policy-input.md, "Rego features each engine lacks"):

* a comprehension in a function's `else` value is not scheduled; the bundled policy moves
  those into helper functions, which is valid Rego on both engines;
* a function called through an import alias (`import data.interlock`, then
  `interlock.decide(...)`) is not found; calls through `data.` aliases are spelled out in
  full before regorus parses a module, which changes no meaning.

Results come back as JSON text: the binding's object conversion turns every number into a
float, which would change `403` into `403.0` for an OPA-Envoy policy.
"""

from __future__ import annotations

import os

# anyhow captures a Rust backtrace on every error when RUST_BACKTRACE is set; that is
# milliseconds on a path that only needs the message. Must precede the first error.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

import regorus

from interlock.core.bundle import BundleSource
from interlock.core.canonical import dumps_fast
from interlock.core.canonical import loads_fast as loads
from interlock.core.engine import MAX_INPUT_DEPTH, CompiledBundle, CompiledPolicy
from interlock.core.rego_text import lacking, refuse_with, spell_out_imports
from interlock.errors import (
    BundleError,
    PolicyEvaluationError,
    PolicyUndefined,
)

log = logging.getLogger(__name__)

try:
    VERSION = _dist_version("celine-regorus")
except PackageNotFoundError:  # pragma: no cover - a vendored build
    VERSION = "unknown"

_UNDEFINED = '"<undefined>"'
"""What `eval_rule_as_json` prints for an undefined rule (and for that very string)."""


def _depth(value: Any, depth: int = 0) -> None:
    """Refuse inputs nested deeper than MAX_INPUT_DEPTH. Exact-type tests first: the PDP's
    documents are plain dicts, lists and scalars, and the abstract-class checks this
    falls back to cost several times more on every node."""
    if depth > MAX_INPUT_DEPTH:
        raise PolicyEvaluationError(f"bad policy input: input nested deeper than {MAX_INPUT_DEPTH}")
    t = type(value)
    if t is dict:
        children: Any = value.values()
    elif t is list or t is tuple:
        children = value
    elif isinstance(value, Mapping):
        children = value.values()
    elif isinstance(value, (list, tuple)):
        children = value
    else:
        return
    for v in children:
        tv = type(v)
        if tv is str or tv is int or tv is bool or tv is float or v is None:
            continue
        _depth(v, depth + 1)


def _message(exc: Exception) -> str:
    """regorus errors carry a source excerpt; keep the `error:` line and the location."""
    text = str(exc).split("\nStack backtrace:", 1)[0].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    where = next((ln[4:] for ln in lines if ln.startswith("--> ")), "")
    said = next((ln[len("error:") :].strip() for ln in lines if ln.startswith("error:")), "")
    if said:
        return f"{said} (at {where})" if where else said
    return lines[-1] if lines else type(exc).__name__


ENGINES_PER_THREAD = 4
"""Compiled bundles a thread keeps engines for: the serving one and a few just replaced."""

_per_thread = threading.local()
_tokens = itertools.count()
_held: dict[int, Any] = {}
"""Every engine some thread keeps, by id: a second reference, which only the owning
thread gives up (on eviction, or as it exits). A child forked with Python running in it
(uvloop spawns subprocesses that way) clears every other thread's state from the forking
thread, thread-local engines included; without this reference they would be dropped
there, and pyo3 prints an "unsendable ... dropped on another thread" error from each
child on its way to exec."""
_forking = False
"""True in a parent between its fork hooks, and in the child it forked until its own
hook runs: thread states cleared then are a fork's, not a thread's exit."""


def _before_fork() -> None:
    global _forking
    _forking = True


def _after_fork() -> None:
    global _forking
    _forking = False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


class _Keeper:
    """Sits in a thread's local storage beside its engines. When the thread exits and its
    storage is freed (on that thread) it gives up `_held`'s references there, so the
    engines are dropped by the thread that made them. When a forked child clears the
    thread's storage instead, it keeps them (the child is about to exec, or carries on
    without that thread)."""

    def __init__(self, engines: OrderedDict[int, Any]) -> None:
        self.engines = engines

    def __del__(self) -> None:
        if _forking:
            return
        for engine in self.engines.values():
            _held.pop(id(engine), None)


def _engines() -> OrderedDict[int, Any]:
    """This thread's engines by policy token. A regorus engine may only be used, and
    dropped, by the thread that made it (pyo3 `unsendable`); a thread's engines are freed
    by that thread, on eviction here or when it exits, never by a garbage collection
    elsewhere or by a forked child (`_held`). The module-level `threading.local` is never
    freed itself."""
    found: OrderedDict[int, Any] | None = getattr(_per_thread, "engines", None)
    if found is None:
        found = _per_thread.engines = OrderedDict()
        _per_thread.keeper = _Keeper(found)
    return found


class RegorusPolicy(CompiledBundle):
    """One compiled bundle. Each thread that evaluates gets its own engine (built from
    the same source on first use), so evaluations need no lock."""

    engine_name = "regorus"
    engine_version = VERSION

    def __init__(
        self, source: BundleSource, engine: Any, entrypoints: Sequence[str], *, timeout_s: float
    ) -> None:
        super().__init__(source, entrypoints, timeout_s)
        self._token = next(_tokens)
        self._keep(engine)
        self._rules = {e: "data." + e.replace("/", ".") for e in entrypoints}

    def _keep(self, engine: Any) -> Any:
        engines = _engines()  # a token's engine is kept once: a new policy or a miss
        engines[self._token] = engine
        _held[id(engine)] = engine
        while len(engines) > ENGINES_PER_THREAD:
            _, old = engines.popitem(last=False)
            _held.pop(id(old), None)
            del old  # the last reference, dropped on this thread
        return engine

    def _engine(self) -> Any:
        engines = _engines()
        engine = engines.get(self._token)
        if engine is None:
            return self._keep(RegorusEngine.build(self._source, self._source.modules))
        return engine

    def evaluate(self, entrypoint: str, input: Mapping[str, Any], *, bounded: bool = False) -> Any:
        """Evaluate a compiled entrypoint (`pkg/path/rule`) against `input`."""
        rule = self._rules.get(entrypoint)
        if rule is None:
            raise PolicyEvaluationError(f"entrypoint {entrypoint!r} is not compiled")
        try:
            if not bounded:
                _depth(input)
            text = dumps_fast(input)
        except (TypeError, ValueError) as exc:
            raise PolicyEvaluationError(f"bad policy input: {exc}") from exc
        engine = self._engine()
        # Thread CPU time: time this thread spent waiting (for the GIL, the event loop, or
        # a loaded machine's scheduler) is not evaluation and must not deny.
        start = time.thread_time()
        try:
            engine.set_input_json(text)
            out = engine.eval_rule_as_json(rule)
            if out == _UNDEFINED and engine.eval_rule(rule) is None:
                out = None
        except RuntimeError as exc:
            raise PolicyEvaluationError(_message(exc)) from exc
        self.within_budget(time.thread_time() - start)
        if out is None:
            raise PolicyUndefined(f"{entrypoint} is undefined for this input")
        return loads(out)


def _unservable(engine: Any, entrypoints: Sequence[str]) -> str | None:
    """Why the engine cannot serve `entrypoints`, or None. Evaluating each once without
    input resolves every rule it needs, so a bundle that cannot serve is refused at load,
    not at the first decision (errors of the input's absence are not the bundle's)."""
    for entrypoint in entrypoints:
        try:
            engine.eval_rule("data." + entrypoint.replace("/", "."))
        except RuntimeError as exc:
            msg = _message(exc)
            if "not a valid rule path" in msg:
                return f"entrypoint {entrypoint!r}: no such rule"
            if "not scheduled" in msg:
                return msg
    return None


class RegorusEngine:
    """Compiles bundles with regorus."""

    name = "regorus"
    version = VERSION

    def __init__(self, *, timeout_ms: float = 50.0) -> None:
        self.timeout_s = timeout_ms / 1000

    def compile(self, source: BundleSource, entrypoints: Sequence[str]) -> CompiledPolicy:
        """Compile the modules and data of `source`; raise BundleError with regorus's text."""
        if not entrypoints:
            raise BundleError("no entrypoints to compile")
        refuse_with(source)
        missing = lacking(source.modules)
        if missing is not None:
            return self._on_rego_cpp(source, entrypoints, missing)
        engine = self.build(source, source.modules)
        problem = _unservable(engine, entrypoints)
        if problem is not None:
            del engine  # dropped here, on the thread that made it (see `_engines`)
            raise BundleError(problem)
        return RegorusPolicy(source, engine, entrypoints, timeout_s=self.timeout_s)

    def _on_rego_cpp(
        self, source: BundleSource, entrypoints: Sequence[str], missing: str
    ) -> CompiledPolicy:
        """A bundle calling a built-in regorus lacks is compiled by rego-cpp, and says so:
        a policy written for OPA (io.jwt.decode_verify in an Envoy policy) keeps working."""
        try:
            from interlock.core.rego import RegoEngine
        except ImportError:
            raise BundleError(
                f"{missing} is not a regorus built-in, and rego-cpp is not installed"
            ) from None
        log.warning("%s is not a regorus built-in: rego-cpp evaluates this bundle", missing)
        return RegoEngine(timeout_ms=self.timeout_s * 1000).compile(source, entrypoints)

    @staticmethod
    def build(source: BundleSource, modules: Mapping[str, str]) -> Any:
        """A regorus engine holding `modules` and the bundle's data."""
        engine = regorus.Engine()
        try:
            engine.add_data_json(dumps_fast(dict(source.data)))
            for name, text in modules.items():
                engine.add_policy(name, spell_out_imports(text))
        except RuntimeError as exc:
            message = _message(exc)
        else:
            return engine
        del engine
        raise BundleError(message)

    def queries(
        self, source: BundleSource, queries: Sequence[str], *, with_tests: bool = False
    ) -> list[Any]:
        """Run ad-hoc queries on one engine (for `policy test` and `policy eval`), with
        results shaped as rego-cpp prints them (`[{"expressions": ..., "bindings": ...}]`)."""
        modules = {**source.modules, **(source.tests if with_tests else {})}
        engine = self.build(source, modules)
        results: list[Any] = []
        for query in queries:
            try:
                out = engine.eval_query_as_json(query)
            except RuntimeError as exc:
                results.append(PolicyEvaluationError(_message(exc)))
                continue
            found = loads(out).get("result") or []
            results.append(found or None)
        return results
