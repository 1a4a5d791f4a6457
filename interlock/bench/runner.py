"""`interlock bench`: run suites, show progress and tables, judge the SLO budgets, write
JSON and a report; exit 1 when a budget fails, 2 on a usage error."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from interlock.bench import audit, e2e, extauthz, http, mcp, pdp, postgres, progress, slo, ssh
from interlock.bench.stats import THROUGHPUT_UNITS

MODULES: dict[str, ModuleType] = {
    "pdp": pdp,
    "audit": audit,
    "postgres": postgres,
    "http": http,
    "extauthz": extauthz,
    "ssh": ssh,
    "mcp": mcp,
    "e2e": e2e,
}
SUITES: dict[str, Callable[[bool], dict[str, Any]]] = {
    name: module.run for name, module in MODULES.items()
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return round(pages / 2**30, 1)
    except (ValueError, OSError):
        return math.nan


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _about(module: ModuleType) -> str:
    """The suite module's first docstring paragraph, on one line."""
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def table(result: dict[str, Any]) -> str:
    rows = [
        f"suite {result['suite']} ({result['seconds']:.0f} s)",
        f"{'measurement':<24} {'p50':>11} {'p99':>11} {'ops/s':>9} "
        f"{'baseline':<24} {'x p50':>6} {'x p99':>6}",
    ]
    for m in result["measurements"]:
        if m["unit"] in THROUGHPUT_UNITS:
            rows.append(
                f"{m['name']:<24} {'':>11} {'':>11} {m['throughput'] or 0:>9.0f} "
                f"{m['baseline'] or '-':<24} ({m['unit']})"
            )
            continue
        rows.append(
            f"{m['name']:<24} {m['p50']:>9.3g}{m['unit']} {m['p99']:>9.3g}{m['unit']} "
            f"{m['throughput'] or 0:>9.0f} {m['baseline'] or '-':<24} "
            f"{m['ratio_p50'] or '-':>6} {m['ratio_p99'] or '-':>6}"
        )
    return "\n".join(rows)


def slo_table(results: list[dict[str, Any]]) -> str:
    rows = [
        "SLO budgets",
        f"{'':4} {'suite':<9} {'budget':<50} {'measured':>12} {'limit':>12}",
    ]
    for r in results:
        for b in r["budgets"]:
            unit = "" if b["unit"] == "x" else b["unit"]
            measured = f"{b['value']:.3g}{unit}"
            if b["errors"]:
                measured += f" ({b['errors']} err)"
            limit = f"{b['op']} {b['limit']:g}{unit}"
            verdict = "PASS" if b["pass"] else "FAIL"
            rows.append(
                f"{verdict:<4} {r['suite']:<9} {b['label'][:50]:<50} {measured:>12} {limit:>12}"
            )
    for r in results:
        if "error" in r:
            rows.append(f"ERR  {r['suite']:<9} the suite did not finish: {r['error'][:200]}")
    all_budgets = [b for r in results for b in r["budgets"]]
    passed = sum(1 for b in all_budgets if b["pass"])
    rows.append(f"{passed} of {len(all_budgets)} budgets pass")
    return "\n".join(rows)


def suite_names(spec: str) -> list[str]:
    names = list(SUITES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise ValueError(f"unknown suite {unknown[0] if unknown else spec!r}")
    return names


def main(
    suite: str,
    *,
    json_path: str | None = None,
    quick: bool = False,
    report_dir: str | None = None,
    limits: Mapping[str, float] | None = None,
    show_progress: bool = True,
    command: str = "interlock bench",
) -> int:
    try:
        names = suite_names(suite)
    except ValueError as exc:
        print(f"{exc}; have: {', '.join(SUITES)}, all (comma-separated)", file=sys.stderr)
        return 2
    limits = dict(limits or {})
    bad = slo.unknown(limits)
    if bad:
        print(
            f"[bench.budgets] names unknown budget(s) {', '.join(bad)}; "
            f"known: {', '.join(slo.BUDGETS)}",
            file=sys.stderr,
        )
        return 2
    info = machine()
    results = []
    bar = progress.Progress(enabled=show_progress)
    progress.current = bar
    started = time.monotonic()
    for name in names:
        bar.begin(name)
        try:
            result = SUITES[name](quick)
        except Exception as exc:  # one broken suite must not lose the others' results
            result = {"suite": name, "error": f"{type(exc).__name__}: {exc}"[:2000],
                      "measurements": [], "checks": []}  # fmt: skip
        result["seconds"] = round(bar.end(), 1)
        result["about"] = _about(MODULES[name])
        result["budgets"] = slo.judge(result.pop("checks"), limits)
        results.append(result)
        print(table(result), flush=True)
        if "error" in result:
            print(f"suite {name} FAILED: {result['error']}", flush=True)
        print(flush=True)
    print(slo_table(results), flush=True)
    report = {
        "command": command,
        "quick": quick,
        "machine": info,
        "seconds": round(time.monotonic() - started, 1),
        "suites": results,
        "passed": all(b["pass"] for r in results for b in r["budgets"])
        and not any("error" in r for r in results),
    }
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
        print(f"wrote {json_path}", file=sys.stderr)
    if report_dir:
        from interlock.bench.report import write

        for path in write(report, Path(report_dir)):
            print(f"wrote {path}", file=sys.stderr)
    return 0 if report["passed"] else 1
