"""`interlock up` as a real process, for the admin tests: start, read the banner, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (our own http URL)
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


SITECUSTOMIZE = """
import json, os
from interlock.config import Config
real = Config.embedded.__func__
def embedded(cls):
    c = real(cls)
    over = {k: type(getattr(c, k)).model_validate({**getattr(c, k).model_dump(), **v})
            for k, v in json.loads(os.environ["INTERLOCK_TEST_EMBEDDED"]).items()}
    return c.model_copy(update=over)
Config.embedded = classmethod(embedded)
"""


def embedded_env(over: dict[str, dict[str, Any]], site: Path) -> dict[str, str]:
    """The environment for an `interlock up` (however started: `make up` too) whose
    embedded defaults have `over`'s keys replaced, through a sitecustomize module in
    `site`: the default ports may be taken on a test machine."""
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        "INTERLOCK_TEST_EMBEDDED": json.dumps(over),
    }


def embedded_ports(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Free ports for every listener of the embedded defaults, plus `extra` keys."""
    over: dict[str, dict[str, Any]] = {
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "extauthz": {
            "grpc_listen": f"127.0.0.1:{free_port()}",
            "http_listen": f"127.0.0.1:{free_port()}",
        },
    }
    for section, keys in extra.items():
        over[section].update(keys)
    return over


class Up:
    def __init__(
        self,
        args: list[str],
        cwd: Path,
        embedded: dict[str, dict[str, Any]] | None = None,
        command: list[str] | None = None,
    ) -> None:
        env = embedded_env(embedded, cwd / "site") if embedded is not None else None
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "interlock.cli", "up", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=command is not None,
        )
        self.command = command
        self.banner: list[str] = []

    def wait_ready(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.banner.append(line)
            if line.strip().startswith("audit key"):
                admin = [x for x in self.banner if x.strip().startswith("admin")]
                return admin[0].split()[-1]
        err = self.proc.stderr.read() if self.proc.stderr else ""
        pytest.fail(f"interlock up did not print its admin endpoint: {self.banner} {err}")

    def stop(self) -> int:
        """SIGTERM; to the whole process group when started by another command (make)."""
        if self.proc.poll() is None:
            if self.command is not None:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def up_factory() -> Iterator[Any]:
    started: list[Up] = []

    def start(
        args: list[str],
        cwd: Path,
        embedded: dict[str, dict[str, Any]] | None = None,
        command: list[str] | None = None,
    ) -> Up:
        u = Up(args, cwd, embedded, command)
        started.append(u)
        return u

    yield start
    for u in started:
        if u.command is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(u.proc.pid, signal.SIGKILL)  # make's child too
        elif u.proc.poll() is None:
            u.proc.kill()
        u.proc.wait()
