"""Rego evaluation in-process through rego-cpp (the `regopy` binding).

Two measured facts shape this module (see `interlock bench --suite pdp`):

* rego-cpp spends most of a decision *building the input term*, about 3 us per JSON node,
  and regopy's own converter adds Python overhead on top. The input is therefore built with
  direct calls into the shared library regopy loads, and kept small by the PDP.
* Evaluation of the bundled policy costs hundreds of microseconds, several times what
  regorus needs (docs/benchmarks.md); rego-cpp stays selectable (`[policy] engine`) and
  the conformance suite keeps the two equal. Repeated decisions are answered by the PDP's
  cache (`interlock.core.decision_cache`), before any engine is asked.

rego-cpp cannot be interrupted mid-evaluation, so the time budget is checked when it
returns: a late answer is discarded and the action denied. The budget counts this
thread's CPU time, not the wall clock, so time spent waiting for the lock, the event loop
or a loaded machine's scheduler never denies. Rego without recursion always terminates;
the budget catches pathological data, not infinite loops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import version as _dist_version
from typing import Any

import regopy
import regopy.rego_shared as _rs

from interlock.core.bundle import BundleSource
from interlock.core.engine import MAX_INPUT_DEPTH, CompiledBundle
from interlock.core.rego_text import refuse_with
from interlock.errors import (
    BundleError,
    PolicyEvaluationError,
    PolicyUndefined,
)

VERSION = _dist_version("regopy")

_lib = _rs.rego
_new_input = _lib.regoNewInput
_free_input = _lib.regoFreeInput
_in_str = _lib.regoInputString
_in_int = _lib.regoInputInt
_in_float = _lib.regoInputFloat
_in_bool = _lib.regoInputBoolean
_in_null = _lib.regoInputNull
_in_item = _lib.regoInputObjectItem
_in_object = _lib.regoInputObject
_in_array = _lib.regoInputArray
_in_set = _lib.regoInputSet

INT64 = (-(2**63), 2**63 - 1)

_compile_lock = threading.Lock()


class _InputTooDeep(ValueError):
    pass


def _add(p: int, value: Any, depth: int) -> None:
    if depth > MAX_INPUT_DEPTH:
        raise _InputTooDeep(f"input nested deeper than {MAX_INPUT_DEPTH}")
    if value is True or value is False:
        _in_bool(p, value)
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            _in_float(p, float(value))
        else:
            _in_int(p, value)
    elif isinstance(value, float):
        _in_float(p, value)
    elif isinstance(value, str):
        _in_str(p, value.encode("utf-8"))
    elif value is None:
        _in_null(p)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _in_str(p, str(k).encode("utf-8"))
            _add(p, v, depth + 1)
            _in_item(p)
        _in_object(p, len(value))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _add(p, v, depth + 1)
        _in_array(p, len(value))
    elif isinstance(value, (set, frozenset)):
        for v in sorted(value):
            _add(p, v, depth + 1)
        _in_set(p, len(value))
    else:
        raise TypeError(f"cannot pass {type(value).__name__} to the policy")


def _error_messages(node: int) -> list[str]:
    """Collect the ErrorMessage leaves of a rego-cpp error tree."""
    found: list[str] = []
    stack = [node]
    while stack and len(found) < 8:
        n = stack.pop()
        if not n:
            continue
        if _rs.rego_node_type(n) == _rs.NodeKind.ErrorMessage:
            found.append(str(_rs.rego_node_value(n)))
            continue
        stack.extend(_rs.rego_node_get(n, i) for i in reversed(range(_rs.rego_node_size(n))))
    return found


@contextlib.contextmanager
def _captured_stdout() -> Iterator[list[str]]:
    """rego-cpp prints compile diagnostics on fd 1; capture them as the error text.

    Compiles are rare (start-up and reloads) and serialised by `_compile_lock`, so briefly
    pointing fd 1 at a file costs nothing on the decision path.
    """
    out: list[str] = []
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile() as tmp:
        libc.fflush(None)
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            yield out
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def _readable(exc: Exception, printed: str) -> str:
    text = printed.strip()
    if text.startswith("Errors:"):
        text = text[len("Errors:") :].strip()
    return text or str(exc)


class RegoPolicy(CompiledBundle):
    """One compiled bundle. Evaluations are serialised: a rego-cpp interpreter is not
    thread-safe, and on two cores a second interpreter buys little."""

    engine_name = "rego-cpp"
    engine_version = VERSION

    def __init__(
        self,
        source: BundleSource,
        interpreter: Any,
        bundle: Any,
        entrypoints: Sequence[str],
        *,
        timeout_s: float,
    ) -> None:
        super().__init__(source, entrypoints, timeout_s)
        self._interp = interpreter
        self._impl = interpreter._impl
        self._bundle = bundle
        self._bundle_impl = bundle._impl
        self._lock = threading.Lock()

    def evaluate(self, entrypoint: str, input: Mapping[str, Any], *, bounded: bool = False) -> Any:
        """Evaluate a compiled entrypoint (`pkg/path/rule`) against `input` (converting it
        checks its depth anyway, so `bounded` changes nothing here)."""
        if entrypoint not in self._entrypoints:
            raise PolicyEvaluationError(f"entrypoint {entrypoint!r} is not compiled")
        with self._lock:
            start = time.thread_time()
            p = _new_input()
            try:
                _add(p, input, 0)
                _rs.rego_set_input(self._impl, p)
            except (TypeError, ValueError, _rs.RegoError) as exc:
                raise PolicyEvaluationError(f"bad policy input: {exc}") from exc
            finally:
                _free_input(p)
            out = _rs.rego_bundle_query_entrypoint(self._impl, self._bundle_impl, entrypoint)
            try:
                elapsed = time.thread_time() - start
                if not _rs.rego_output_ok(out):
                    msgs = _error_messages(_rs.rego_output_node(out))
                    raise PolicyEvaluationError("; ".join(msgs) or "evaluation failed")
                text = _rs.rego_output_string(out)
            finally:
                _rs.rego_free_output(out)
        self.within_budget(elapsed)
        if text == "undefined":
            raise PolicyUndefined(f"{entrypoint} is undefined for this input")
        try:
            result = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyEvaluationError(f"unreadable engine output: {exc}") from exc
        if isinstance(result, list):
            if len(result) != 1:
                raise PolicyEvaluationError(f"{entrypoint} produced {len(result)} results")
            result = result[0]
        exprs = result.get("expressions") if isinstance(result, dict) else None
        if not exprs:
            raise PolicyUndefined(f"{entrypoint} is undefined for this input")
        return exprs[0]


class RegoEngine:
    """Compiles bundles with rego-cpp."""

    name = "rego-cpp"
    version = VERSION

    def __init__(self, *, timeout_ms: float = 50.0) -> None:
        self.timeout_s = timeout_ms / 1000

    def compile(self, source: BundleSource, entrypoints: Sequence[str]) -> RegoPolicy:
        """Compile the modules and data of `source`; raise BundleError with rego-cpp's text."""
        if not entrypoints:
            raise BundleError("no entrypoints to compile")
        refuse_with(source)
        with _compile_lock, _captured_stdout() as printed:
            try:
                interp = self._interpreter(source, source.modules)
                bundle = interp.build(None, list(entrypoints))
            except _rs.RegoError as exc:
                err: Exception | None = exc
            else:
                err = None
        if err is not None:
            raise BundleError(_readable(err, printed[0])) from err
        if not bundle.ok():
            raise BundleError(_readable(BundleError("compile failed"), printed[0]))
        return RegoPolicy(
            source,
            interp,
            bundle,
            entrypoints,
            timeout_s=self.timeout_s,
        )

    @staticmethod
    def _interpreter(source: BundleSource, modules: Mapping[str, str]) -> Any:
        interp = regopy.Interpreter()
        interp.strict_built_in_errors = True
        interp.add_data_json(json.dumps(source.data))
        for name, text in modules.items():
            interp.add_module(name, text)
        return interp

    def queries(
        self, source: BundleSource, queries: Sequence[str], *, with_tests: bool = False
    ) -> list[Any]:
        """Run ad-hoc queries on one interpreter (for `policy test` and `policy eval`).

        Returns one item per query: the parsed output (None when undefined) or the
        PolicyError that query raised. A bundle that does not compile raises BundleError.
        """
        modules = {**source.modules, **(source.tests if with_tests else {})}
        results: list[Any] = []
        with _compile_lock, _captured_stdout() as printed:
            try:
                interp = self._interpreter(source, modules)
                for query in queries:
                    out = interp.query(query)
                    text = str(out)
                    if text == "undefined":
                        results.append(None)
                    elif len(out) > 0:
                        results.append(json.loads(text))
                    else:
                        msgs = _error_messages(_rs.rego_output_node(out._impl))
                        results.append(PolicyEvaluationError("; ".join(msgs) or "failed"))
            except _rs.RegoError as exc:
                err: Exception | None = exc
            else:
                err = None
        if err is not None:
            raise BundleError(_readable(err, printed[0])) from err
        return results
