"""The README's quickstart, run line for line, twice in the same directory: its own
PostgreSQL database, sshd, web server and free ports go into the variables the quickstart
asks the reader to set; everything else is the README's text."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from interlock.testing import serve_app
from interlock.testing.services import Postgres
from tests.audit.conftest import fresh_database
from tests.services import free_port, sshd_server

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    text = README.read_text()
    block = text.split("<!-- quickstart -->", 1)[1].split("<!-- /quickstart -->", 1)[0]
    match = re.search(r"```sh\n(.*?)```", block, re.S)
    assert match is not None, "the README has no quickstart block"
    return match.group(1)


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script in its own process group, which is ended afterwards whatever happened
    (a failed step would otherwise leave `interlock up` running in the background)."""
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


async def test_the_readme_quickstart_runs_as_written(postgres: Postgres, tmp_path: Path) -> None:
    database = await fresh_database(postgres)
    conn = await asyncpg.connect(database)
    await conn.execute("grant all on schema public to public")
    await conn.close()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", page)
    with sshd_server() as sshd:
        async with serve_app(app) as site:
            env = {
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                "HOME": str(tmp_path),
                "PGURL": database,
                "SSH_HOST": "127.0.0.1",
                "SSH_PORT": str(sshd.port),
                "SSH_USER": sshd.user,
                "SSH_KEY": str(sshd.client_key),
                "SSH_KNOWN_HOSTS": str(sshd.known_hosts),
                "SITE": site + "/",
                "ALLOW_NETWORKS": '["127.0.0.0/8"]',
                **{
                    name: str(free_port())
                    for name in ("ADMIN_PORT", "HTTP_PORT", "PG_PORT", "SSH_PROXY_PORT")
                },
            }
            first = await asyncio.to_thread(_run, quickstart(), tmp_path, env)
            _check(first, tmp_path)
            again = await asyncio.to_thread(_run, quickstart(), tmp_path, env)
            _check(again, tmp_path)


def _check(done: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    out = done.stdout
    log = (tmp_path / "up.log").read_text() if (tmp_path / "up.log").exists() else ""
    assert done.returncode == 0, f"{out}\n{done.stderr}\n{log}"
    assert "allowed: 200" in out
    assert "forbidden destination" in out
    assert "169.254.169.254" in out
    assert re.search(r"allowed\s*\n-+\s*\n\s*1\s*\n", out), "the read ran"
    assert "interlock: forbidden construct: copy_program" in done.stderr, "Postgres denial"
    assert re.search(r"^exit status 1$", out, re.M), "psql failed on the denial"
    assert "CREATE TABLE" in out, "the held DDL ran once approved"
    assert "approved " in out
    assert " as you@example.com" in out
    assert "Linux" in out
    assert "exit status 126" in out
    assert "interlock: denied" in done.stderr
    assert re.search(r"ok: \d+ records, \d+ signed checkpoint\(s\) verify", out)
