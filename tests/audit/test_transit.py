"""Checkpoints signed through a real OpenBao's transit engine (Ed25519): the log verifies
under the key OpenBao publishes, no key file exists on the host, and a signature OpenBao
will not give (it is down, the key was rotated) is no checkpoint rather than a bad one."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from interlock.audit.checkpoint import Verifier
from interlock.audit.factory import log_for
from interlock.config import load_config
from interlock.errors import AuditError
from interlock.testing.openbao import OpenBao
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records
from tests.services import openbao_server

pytestmark = pytest.mark.integration

ORIGIN = "interlock.test/audit"


@pytest.fixture
def bao() -> Iterator[OpenBao]:
    with openbao_server() as server:
        c = hvac.Client(url=server.address, token=server.root_token)
        c.sys.enable_secrets_engine("transit", path="transit")
        c.secrets.transit.create_key(name="interlock-audit", key_type="ed25519")
        yield server


def config(tmp_path: Path, bao: OpenBao) -> Path:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[audit]\norigin = "{ORIGIN}"\n'
        "checkpoint_interval = 0\n"
        f'[audit.transit]\naddress = "{bao.address}"\ntoken = "{bao.root_token}"\n'
    )
    return cfg


async def write(cfg: Path, n: int) -> None:
    log = log_for(load_config(cfg))
    await log.start()
    for rec in await sample_records(n):
        await log.append(rec)
    await log.close()


def test_checkpoints_signed_in_openbao_verify_under_its_published_key(
    tmp_path: Path, bao: OpenBao
) -> None:
    cfg = config(tmp_path, bao)
    asyncio.run(write(cfg, 7))
    assert not (tmp_path / "data" / "audit.key").exists(), "no key on the host"
    key = audit_cli("key", "-c", str(cfg)).stdout.strip()
    c = hvac.Client(url=bao.address, token=bao.root_token)
    published = c.secrets.transit.read_key(name="interlock-audit")["data"]["keys"]["1"]
    assert Verifier.parse(key).public == base64.b64decode(published["public_key"])
    out = audit_cli("verify", "-c", str(cfg), "--key", key)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signed: records 0..6 (checkpoint at size 7)" in out.stdout


def test_a_rotated_key_signs_no_checkpoint_under_the_pinned_verifier(
    tmp_path: Path, bao: OpenBao
) -> None:
    signer = log_for(load_config(config(tmp_path, bao))).signer
    hvac.Client(url=bao.address, token=bao.root_token).secrets.transit.rotate_key(
        name="interlock-audit"
    )
    with pytest.raises(AuditError, match="not the pinned v1"):
        asyncio.run(signer.sign_note(f"{ORIGIN}\n0\nAAAA\n"))


def test_openbao_down_means_no_checkpoint_not_an_unsigned_one(tmp_path: Path, bao: OpenBao) -> None:
    cfg = config(tmp_path, bao)
    asyncio.run(write(cfg, 3))
    bao.stop()
    done = audit_cli("checkpoint", "-c", str(cfg))
    assert done.returncode != 0
    assert "OpenBao unreachable" in done.stderr
    assert "Traceback" not in done.stderr
