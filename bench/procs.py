"""Servers the benchmarks start in their own processes, and the policy they run."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

from interlock.testing.services import serving


def process(
    cmd: list[str], port: int, what: str, cwd: Path | None = None
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """Run `cmd` until the block ends, once it listens on `port`."""
    return serving(cmd, port, what, cwd=cwd, limit=60)


def bench_bundle(target: Path) -> Path:
    """The bundled policy with a rate budget a benchmark cannot exhaust: otherwise the
    rate signal (correctly) starts holding the flood of requests for approval."""
    from interlock.core.bundle import bundled_policy_dir

    shutil.copytree(
        bundled_policy_dir(), target, ignore=shutil.ignore_patterns("__init__.py", "__pycache__")
    )
    data = json.loads((target / "data.json").read_text())
    data["interlock"]["risk"]["rate_per_minute"] = 10_000_000
    (target / "data.json").write_text(json.dumps(data))
    return target
