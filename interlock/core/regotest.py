"""Running a bundle's Rego unit tests, the way `opa test` does, on both engines.

Every rule whose name starts with `test_` in any module is a test. It passes when it is
defined and true on every installed engine (regorus and rego-cpp: a policy must mean the
same on both); undefined or false is a failure, an evaluation error is an error, and the
report names the engine that disagreed.

Tests run in a child process: rego-cpp 1.5 can crash outright on some constructs (`with
input as ...` over rules that call built-ins), and a crash must be reported as a failed
test, not take the command down with a segfault. When the child dies, each test is re-run
alone so the report names the one that crashed.
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context

from interlock.core.bundle import BundleSource
from interlock.core.engine import EngineName
from interlock.core.engines import make_engine
from interlock.errors import PolicyError

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)\s*$", re.M)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.M)


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One test's result: `status` is pass, fail or error."""

    module: str
    name: str
    status: str
    detail: str = ""


def discover(source: BundleSource) -> list[tuple[str, str, str]]:
    """(module path, package, rule) for every test rule, in file order."""
    found: list[tuple[str, str, str]] = []
    for path, text in {**source.modules, **source.tests}.items():
        pkg = _PACKAGE.search(text)
        if pkg is None:
            continue
        for rule in dict.fromkeys(_TEST_RULE.findall(text)):
            found.append((path, pkg.group(1), rule))
    return found


ENGINES: tuple[EngineName, ...] = ("regorus", "rego-cpp")
_RANK = {"pass": 0, "fail": 1, "error": 2}


def run_tests(source: BundleSource) -> list[TestOutcome]:
    """Run every test on each installed engine; one outcome per test, the worst one, with
    the engines it came from. Raises BundleError if the modules do not compile."""
    runs: dict[str, list[TestOutcome]] = {}
    for name in ENGINES:
        try:
            if make_engine(name).name != name:
                continue
        except ImportError:
            continue
        runs[name] = run_tests_on(source, name)
    first = next(iter(runs.values()))
    merged = []
    for i, outcome in enumerate(first):
        worst = max((r[i] for r in runs.values()), key=lambda o: _RANK[o.status])
        if worst.status == "pass":
            merged.append(outcome)
            continue
        which = ", ".join(n for n, r in runs.items() if r[i].status == worst.status)
        merged.append(replace(worst, detail=f"{worst.detail} ({which})"))
    return merged


def run_tests_on(source: BundleSource, engine: EngineName) -> list[TestOutcome]:
    """Run every test on one engine, in a child process."""
    tests = discover(source)
    try:
        return _in_child(source, tests, engine)
    except BrokenProcessPool:
        pass
    # Narrow down: each module alone with the policy, then each test of a crashing module.
    outcomes = []
    for module in dict.fromkeys(path for path, _, _ in tests):
        own = {module: source.tests[module]} if module in source.tests else {}
        alone = replace(source, tests=own)
        group = [t for t in tests if t[0] == module]
        try:
            outcomes.extend(_in_child(alone, group, engine))
            continue
        except BrokenProcessPool:
            pass
        for test in group:
            try:
                outcomes.extend(_in_child(alone, [test], engine))
            except BrokenProcessPool:
                outcomes.append(TestOutcome(module, test[2], "error", "the policy engine crashed"))
    return outcomes


def _in_child(
    source: BundleSource, tests: list[tuple[str, str, str]], engine: EngineName
) -> list[TestOutcome]:
    """Run `tests` in a fresh interpreter process (spawned: no inherited engine state)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_tests_here, source, tests, engine).result()


def run_tests_here(
    source: BundleSource,
    tests: list[tuple[str, str, str]] | None = None,
    engine_name: EngineName = "rego-cpp",
) -> list[TestOutcome]:
    """Run tests in this process (a crash in the engine ends the process)."""
    engine = make_engine(engine_name)
    tests = discover(source) if tests is None else tests
    results = engine.queries(
        source, [f"x := data.{pkg}.{rule}" for _, pkg, rule in tests], with_tests=True
    )
    outcomes = []
    for (path, _, rule), result in zip(tests, results, strict=True):
        if isinstance(result, PolicyError):
            outcomes.append(TestOutcome(path, rule, "error", str(result)))
        elif _value(result) is True:
            outcomes.append(TestOutcome(path, rule, "pass"))
        else:
            outcomes.append(TestOutcome(path, rule, "fail", "undefined or false"))
    return outcomes


def _value(result: object) -> object:
    if isinstance(result, list):
        result = result[0] if len(result) == 1 else None
    if isinstance(result, dict):
        return result.get("bindings", {}).get("x")
    return None
