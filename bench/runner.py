"""`interlock bench`: run suites, print a table, write JSON, exit non-zero on a failed budget."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import audit, extauthz, http, pdp, postgres, ssh

SUITES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "pdp": pdp.run,
    "audit": audit.run,
    "postgres": postgres.run,
    "http": http.run,
    "extauthz": extauthz.run,
    "ssh": ssh.run,
}


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        f"suite {result['suite']}",
        f"{'measurement':<20} {'p50':>9} {'p99':>9} {'ops/s':>10} "
        f"{'baseline':<18} {'x p50':>6} {'x p99':>6}",
    ]
    for m in result["measurements"]:
        if m["unit"] in ("rec/s", "MB/s"):
            rows.append(
                f"{m['name']:<20} {'':>9} {'':>9} {m['throughput'] or 0:>10.0f} "
                f"{m['baseline'] or '-':<18} {m['notes'].get('ratio_to_raw', '-'):>6}"
            )
            continue
        rows.append(
            f"{m['name']:<20} {m['p50']:>7.1f}{m['unit']} {m['p99']:>7.1f}{m['unit']} "
            f"{m['throughput'] or 0:>10.0f} {m['baseline'] or '-':<18} "
            f"{m['ratio_p50'] or '-':>6} {m['ratio_p99'] or '-':>6}"
        )
    for b in result["budgets"]:
        rows.append(f"{'PASS' if b['pass'] else 'FAIL'}  {b['name']}: {b['value']}")
    return "\n".join(rows)


def main(suite: str, *, json_path: str | None = None, quick: bool = False) -> int:
    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite {unknown[0]!r}; have: {', '.join(SUITES)}, all", file=sys.stderr)
        return 2
    results = []
    for name in names:
        print(f"running suite {name}{' (quick)' if quick else ''} ...", file=sys.stderr)
        result = SUITES[name](quick)
        results.append(result)
        print(_table(result))
    report = {"machine": _machine(), "suites": results}
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
        print(f"wrote {json_path}", file=sys.stderr)
    failed = any(not b["pass"] for r in results for b in r["budgets"])
    return 1 if failed else 0
