"""Servers the benchmarks start in their own processes, and the policy they run."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path

from interlock.testing.services import serving

SSHD_NO_RC = "SetEnv SHLVL=1\n"
"""sshd option for the benchmarks' target: bash run by sshd sources ~/.bashrc only as a
top-level shell (SHLVL < 2), so this skips it. Otherwise the target user's rc file is
measured, not SSH: root's ~/.bashrc on the project's machine runs `pyenv init`, about
150 ms and a hundred processes per command, for the direct path and interlock alike."""


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
