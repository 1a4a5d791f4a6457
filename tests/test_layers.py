"""interlock's import graph: no cycles among its modules, and no arrow from a floor to one above.

Every import counts, including those under `if TYPE_CHECKING:` and inside functions: a
cycle hidden in a lazy import is still two modules that cannot be read or moved apart.

The floors, bottom first (a unit is a subpackage of `interlock`, each proxy its own unit):

0. `errors`, `logs`, `policies` (the bundled Rego, data only): imported by everything.
1. `core`: the model, the PDP, the policy engines, the context store, canonical JSON;
   `eventloop` (asyncio or uvloop).
2. `classify` (SQL, shell, content, MCP classifiers), `intel` (feeds), `config`
   (settings: it names core types).
3. `audit` (the verifiable log), `identity` (agents, JWTs): read the config.
4. `approvals` (holds, channels), `credentials` (Vault, leases).
5. The enforcement points and the admin side, which never import each other:
   `proxies.http`, `proxies.postgres`, `proxies.ssh`, `proxies.mcp`, `extauthz`, `admin`,
   `host` (the nftables enforcer), and `testing` (real services for tests and benchmarks).
6. `bench` (benchmarks, over the proxies and `testing`) and `runtime` (`interlock up`).
7. `cli`, and `worker` (a Postgres worker process other than the first: it builds a
   runtime, which starts it by name).

A module may import its own unit and any unit on a lower floor; two units on one floor
do not import each other. Add a new unit to `FLOORS` where its imports put it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "interlock"

FLOORS: list[set[str]] = [
    {"interlock", "errors", "logs", "policies"},
    {"core", "eventloop"},
    {"classify", "intel", "config"},
    {"audit", "identity"},
    {"approvals", "credentials"},
    {
        "proxies",
        "proxies.http",
        "proxies.postgres",
        "proxies.ssh",
        "proxies.mcp",
        "extauthz",
        "admin",
        "host",
        "testing",
    },
    {"bench", "runtime"},
    {"cli", "worker"},
]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["interlock", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The interlock modules `path` imports: `from a import b` is module a.b if that is
    a module, else a."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module in known and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in known else node.module


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(path, known)) - {name} for name, path in known.items()}


def unit(module: str) -> str:
    parts = module.split(".")[1:] or ["interlock"]
    return ".".join(parts[:2]) if parts[0] == "proxies" and len(parts) > 1 else parts[0]


def floor(name: str) -> int:
    for level, names in enumerate(FLOORS):
        if name in names:
            return level
    raise AssertionError(f"unit {name} is on no floor: add it to FLOORS in {__file__}")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = unit(source), unit(target)
            if a != b and floor(a) <= floor(b):
                bad.append(f"{source} (floor {floor(a)}) imports {target} (floor {floor(b)})")
    return bad


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_no_import_from_a_floor_to_one_above_or_beside_it() -> None:
    assert upward(graph()) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"interlock.core.a": {"interlock.core.b"}, "interlock.core.b": set()}, []),
        (
            {
                "interlock.core.a": {"interlock.core.b"},
                "interlock.core.b": {"interlock.core.c"},
                "interlock.core.c": {"interlock.core.a"},
            },
            [["interlock.core.a", "interlock.core.b", "interlock.core.c"]],
        ),
    ],
)
def test_the_cycle_finder_finds_cycles(
    edges: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert cycles(edges) == expected


def test_the_floor_check_sees_upward_and_sideways_arrows() -> None:
    edges = {
        "interlock.core.pdp": {"interlock.classify.dataflow"},
        "interlock.proxies.ssh.server": {"interlock.proxies.http.server"},
        "interlock.cli": {"interlock.core.pdp", "interlock.cli"},
    }
    assert upward(edges) == [
        "interlock.core.pdp (floor 1) imports interlock.classify.dataflow (floor 2)",
        "interlock.proxies.ssh.server (floor 5) imports interlock.proxies.http.server (floor 5)",
    ]
