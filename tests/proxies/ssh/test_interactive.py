"""Interactive shells: refused by the bundled policy; where a policy allows them, the
session is relayed and its transcript hash audited under the shell's decision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from interlock.core.model import Effect
from interlock.testing import CaptureSink, make_pdp
from interlock.testing.services import Sshd
from tests.proxies.ssh.conftest import Rig, make_rig

pytestmark = pytest.mark.integration
POLICIES = Path(__file__).resolve().parents[3] / "interlock" / "policies"


async def test_a_shell_is_refused_by_default(rig: Rig) -> None:
    r = await rig.ssh("", "-tt", stdin=b"echo hi\nexit\n")
    assert r.returncode == 126
    assert b"interactive_shell" in r.stdout + r.stderr


async def test_an_allowed_shell_is_relayed_and_its_transcript_audited(
    tmp_path: Path, sshd: Sshd
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    data = json.loads((bundle / "data.json").read_text())
    flags = data["interlock"]["policy"]["forbidden_flags"]["ssh"]
    flags.remove("interactive_shell")
    (bundle / "data.json").write_text(json.dumps(data))
    rig = await make_rig(tmp_path, sshd)
    rig.sink = CaptureSink()
    rig.proxy.pdp = make_pdp(bundle, sink=rig.sink)
    try:
        r = await rig.ssh("", "-tt", stdin=b"echo marker-$((6*7))\nexit 5\n")
        assert r.returncode == 5
        assert b"marker-42" in r.stdout
        shell, transcript = rig.sink.records
        assert shell.action.details["interactive"] is True
        assert shell.decision.effect is Effect.ALLOW
        assert transcript.action.parents == (shell.decision.decision_id,)
        digest = transcript.action.details["transcript_sha256"]
        assert len(digest) == 64
        assert transcript.decision.reasons == ("interactive session transcript",)
    finally:
        await rig.proxy.stop()


async def test_an_empty_command_is_a_shell_and_refused(rig: Rig) -> None:
    r = await rig.ssh("")
    assert r.returncode == 126
    assert rig.sink.last.action.details["interactive"] is True


async def test_a_command_on_a_terminal_is_interactive(rig: Rig) -> None:
    """`less` on a pty would accept `!bash` on stdin, unseen by any decision."""
    r = await rig.ssh("less /etc/hostname", "-tt", stdin=b"!id\nq\n")
    assert r.returncode == 126
    assert "interactive_shell" in rig.sink.last.action.details["flags"]
