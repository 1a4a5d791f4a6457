"""Real services for the test suite, started the way DESIGN.md's table says.

A missing binary fails the run with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require(path: str | None, what: str, install: str) -> str:
    if not path or not os.path.exists(path):
        pytest.fail(
            f"{what} is required and was not found; install it with: {install}", pytrace=False
        )
    return path


def pg_bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = require(
        found[-1] if found else None,
        "PostgreSQL server (initdb)",
        "apt-get install postgresql (or run `make test`, which does it)",
    )
    return os.path.dirname(initdb)


@dataclass(frozen=True)
class Postgres:
    """A running throwaway PostgreSQL cluster with SCRAM-SHA-256 authentication."""

    host: str
    port: int
    user: str
    password: str
    datadir: Path
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Shut the server down now (fast shutdown), e.g. to test an outage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def dsn(
        self, database: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        return (
            f"postgresql://{user or self.user}:{password or self.password}"
            f"@{self.host}:{self.port}/{database}"
        )


def _as_postgres_user() -> list[str]:
    """initdb refuses to run as root; DESIGN.md says to run it as `postgres` then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root needs a 'postgres' system user "
            "(apt-get install postgresql creates it)",
            pytrace=False,
        )
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = pg_bindir()
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="interlock-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    password = "interlock-test-" + os.urandom(6).hex()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(sockdir, "postgres")
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        [
            *prefix,
            f"{bindir}/initdb",
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            *prefix,
            f"{bindir}/postgres",
            "-D",
            str(datadir),
            "-p",
            str(port),
            "-k",
            str(sockdir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"postgres exited at start-up: {err}", pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                ready = subprocess.run(
                    [f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                    capture_output=True,
                )
                if ready.returncode == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("postgres did not become ready in 30 s", pytrace=False)
            time.sleep(0.1)
        yield Postgres("127.0.0.1", port, "postgres", password, datadir, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
