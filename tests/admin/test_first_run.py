"""First run: `interlock up` with no config serves the proxy, ext_authz and agent demo, and
the banner's lines work as printed."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.config import parse_config
from interlock.testing.services import self_signed_cert
from tests.admin.conftest import embedded_ports, get

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def https_site(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTPS server on loopback: its URL, its certificate, and the request lines it
    received (its own log)."""
    cert, key = self_signed_cert(tmp_path / "tls")
    received: list[str] = []

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.requestline)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", cert, received
    finally:
        server.shutdown()
        server.server_close()


def read_banner(up: Any) -> list[str]:
    """The whole banner: it ends with the audit command of the lines to try."""
    assert up.proc.stdout is not None
    lines: list[str] = []
    for line in up.proc.stdout:
        if lines or line.startswith("interlock up:"):  # not make's echo of the command
            lines.append(line.rstrip("\n"))
        if " audit tail -n 2" in line:
            return lines
    pytest.fail(f"no banner: {lines} {up.proc.stderr.read() if up.proc.stderr else ''}")


def enable_lines(banner: list[str], name: str) -> str:
    start = next(i for i, x in enumerate(banner) if x.split()[:2] == [name, "not"])
    block = []
    for line in banner[start + 1 :]:
        if not line.startswith(" " * 15):
            break
        block.append(line.strip())
    return "\n".join(block) + "\n"


def fresh_checkout(where: Path) -> None:
    """What `make up` needs of a fresh clone, with this machine's venv standing in for the
    one it would build (there is no package index here; `make -o .venv/.installed` skips
    the install step and nothing else). The code under test comes from PYTHONPATH."""
    for name in ("Makefile", "pyproject.toml", "scripts/find-python"):
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, where / name)
    bin_dir = where / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "interlock"):
        (bin_dir / name).symlink_to(Path(sys.executable).parent / name)
    (where / ".venv" / ".installed").touch()


def test_make_up_in_a_fresh_checkout_serves_the_proxy_and_its_lines_work_as_printed(
    tmp_path: Path, up_factory: Any, https_site: tuple[str, Path, list[str]]
) -> None:
    """`make up` as the README's set-up line runs it, then the banner's lines pasted into
    a shell in the same directory (without the venv on PATH, as after `make up`)."""
    url, cert, received = https_site
    fresh_checkout(tmp_path)
    # The one change for a machine without internet: the allowed request goes to a local
    # HTTPS server, whose network the proxy is told to allow and whose certificate to trust.
    ports = embedded_ports(http={"allow_networks": ["127.0.0.0/8"], "upstream_ca": str(cert)})
    up = up_factory([], tmp_path, ports, ["make", "-o", ".venv/.installed", "up"])
    banner = read_banner(up)
    text = "\n".join(banner)
    assert "1 agent(s) registered" in banner[0]
    assert f"http       http://{ports['http']['listen']}" in text
    assert f"ext_authz gRPC {ports['extauthz']['grpc_listen']}" in text
    assert f"ext_authz HTTP http://{ports['extauthz']['http_listen']}" in text
    assert "audit      sqlite:///audit.db (.interlock/audit.db)" in text
    status, body = get(f"http://{ports['admin']['listen']}/healthz")
    assert status == 200, body
    data = tmp_path / ".interlock"
    assert oct((data / "demo.token").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "admin.token").stat().st_mode & 0o777) == "0o600"
    # The printed config lines switch the proxy on (as a file would hold them).
    for name in ("postgres", "ssh"):
        enabled = parse_config(tomllib.loads(enable_lines(banner, name)))
        assert getattr(enabled, name) is not None, name

    tried = banner[next(i for i, x in enumerate(banner) if x.startswith("try it")) + 1 :]
    script = "\n".join(line.replace("https://example.com/", url) for line in tried)
    assert "  .venv/bin/interlock ca export > interlock-ca.pem" in tried
    bins = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bins)
    env = {**os.environ, "PATH": path}
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    out = done.stdout.splitlines()
    assert out[0] == "allowed: 200"
    refused = json.loads(out[1])
    assert refused["error"] == "forbidden destination"
    assert "169.254.169.254" in refused["reason"]
    records = [json.loads(x) for x in out[2:]]
    assert [(r["agent"]["id"], r["action"]["target"], r["effect"]) for r in records] == [
        ("demo", "127.0.0.1", "allow"),
        ("demo", "169.254.169.254", "deny"),
    ]
    assert records[1]["decision_id"] == refused["decision_id"]
    assert received == ["GET / HTTP/1.1"], "the site got the allowed request, once"
    up.stop()
    assert (up.proc.stderr.read() if up.proc.stderr else "").count("shutting down") == 1

    # A second start reuses the demo agent's token.
    token = (data / "demo.token").read_text()
    again = up_factory([], tmp_path, embedded_ports())
    assert "1 agent(s) registered" in read_banner(again)[0]
    assert (data / "demo.token").read_text() == token
    assert again.stop() == 0


def test_up_reads_interlock_toml_in_the_working_directory_and_says_so(
    tmp_path: Path, up_factory: Any
) -> None:
    """What the file says, nothing more: no proxy, no agent demo, no lines to try."""
    from tests.services import free_port

    port = free_port()
    (tmp_path / "interlock.toml").write_text(f'[admin]\nlisten = "127.0.0.1:{port}"\n')
    up = up_factory([], tmp_path)
    assert up.wait_ready() == f"http://127.0.0.1:{port}"
    assert "0 agent(s) registered, config interlock.toml" in up.banner[0]
    assert up.stop() == 0
    assert up.proc.stdout is not None
    rest = up.proc.stdout.read()
    assert "not configured" in rest
    assert "try it" not in rest
    assert not any(x.split()[0] in ("http", "ext_authz") for x in up.banner[1:])
    assert not (tmp_path / ".interlock" / "demo.token").exists()


def test_the_printed_command_is_the_interlock_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make up` runs .venv/bin/interlock with the venv off PATH: the lines name that file;
    an interlock on PATH that is the same file is just `interlock`."""
    from interlock.runtime import cli_command

    script = tmp_path / "venv" / "bin" / "interlock"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "up"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert cli_command() == str(script)
    monkeypatch.setenv("PATH", str(script.parent))
    assert cli_command() == "interlock"
    monkeypatch.setattr(sys, "argv", ["-c", "up"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert cli_command() == f"{sys.executable} -m interlock.cli"
