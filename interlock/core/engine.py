"""The narrow interface between the PDP and a policy language.

Only Rego (rego-cpp) implements it today; a second engine needs a `compile` that turns a
`BundleSource` into something with `version`, `data` and `evaluate`, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from interlock.core.bundle import BundleSource


class CompiledPolicy(Protocol):
    """An immutable, compiled bundle. Safe to call from several threads."""

    @property
    def version(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    def evaluate(self, entrypoint: str, input: Mapping[str, Any]) -> Any:
        """Return the entrypoint's value for `input`, or raise a PolicyError subclass."""
        ...


class Engine(Protocol):
    """Compiles bundles; raises BundleError when one does not compile."""

    def compile(self, source: BundleSource, entrypoints: Sequence[str]) -> CompiledPolicy: ...
