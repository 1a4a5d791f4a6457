"""The narrow interface between the PDP and a policy engine.

Two engines implement it: regorus (`interlock.core.regorus_engine`, the default) and
rego-cpp (`interlock.core.rego`); `interlock.core.engines` picks one. A compiled policy
has `version`, `data`, `evaluate` and names its engine, so the audit log can say which
engine, at which version, decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from interlock.core.bundle import BundleSource
from interlock.errors import PolicyTimeout

EngineName = Literal["regorus", "rego-cpp"]
DEFAULT_ENGINE: EngineName = "regorus"

MAX_INPUT_DEPTH = 32
"""Deeper inputs are rejected by both engines: the PDP builds shallow documents, so depth
means a bug or a hostile document."""


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

    def evaluate(self, entrypoint: str, input: Mapping[str, Any], *, bounded: bool = False) -> Any:
        """Return the entrypoint's value for `input`, or raise a PolicyError subclass.
        `bounded`: the caller built `input` within MAX_INPUT_DEPTH already (the PDP's
        input builder does), so the engine need not walk it again to check."""
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
