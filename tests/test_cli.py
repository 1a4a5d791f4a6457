"""The `interlock` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interlock.config import load_config


def cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_policy_check_prints_the_version() -> None:
    out = cli("policy", "check")
    assert out.returncode == 0, out.stderr
    assert "compiles, version " in out.stdout


def test_policy_check_fails_on_a_broken_bundle(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package interlock\ndecision := {\n")
    out = cli("policy", "check", "--bundle", str(tmp_path))
    assert out.returncode == 1
    assert "policy error:" in out.stderr
    assert "p.rego" in out.stderr


def test_policy_test_passes_the_bundled_tests() -> None:
    out = cli("policy", "test")
    assert out.returncode == 0, out.stdout + out.stderr
    passed = int(out.stdout.strip().splitlines()[-1].split()[0])
    assert passed >= 20
    assert out.stdout.strip().endswith("passed, 0 failed")


def add_test_module(bundle: Path, package: str, rule: str, body: str) -> None:
    (bundle / f"{package}.rego").write_text(
        f"package {package}\nimport rego.v1\nimport data.interlock\n{rule} if {{\n\t{body}\n}}\n"
    )


@pytest.mark.parametrize(
    ("rule", "body", "expected"),
    [
        (
            "test_wrong_expectation",
            'interlock.decide(data.interlock_test.base, data.interlock.policy).effect == "deny"',
            "FAIL  extra_test.rego: test_wrong_expectation",
        ),
        (
            "test_with_over_builtins",
            'interlock.decision.effect == "allow" with input as {"risk": {"tier": "low"}}',
            "ERROR extra_test.rego: test_with_over_builtins: the policy engine crashed",
        ),
    ],
    ids=["wrong expectation", "engine crash"],
)
def test_policy_test_fails_on_a_broken_or_crashing_test(
    bundle_copy: Path, rule: str, body: str, expected: str
) -> None:
    add_test_module(bundle_copy, "extra_test", rule, body)
    out = cli("policy", "test", "--bundle", str(bundle_copy))
    assert out.returncode == 1
    assert expected in out.stdout
    assert out.stdout.strip().endswith("passed, 1 failed")


def test_policy_test_with_no_tests_fails(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\nimport rego.v1\nallow := true\n")
    out = cli("policy", "test", "--bundle", str(tmp_path))
    assert out.returncode == 1
    assert "no test_ rules found" in out.stderr


def test_policy_eval_runs_an_action_through_the_pdp(tmp_path: Path) -> None:
    action = {
        "agent": {"id": "reporter", "authn": "token"},
        "protocol": "postgres",
        "operation": "ddl",
        "target": "public.orders",
    }
    out = cli("policy", "eval", "--action", "-", stdin=json.dumps(action))
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["effect"] == "approve"
    assert decision["risk"]["tier"] == "medium"


def test_policy_eval_evaluates_a_raw_input_document() -> None:
    doc = {
        "agent": {"authn": "token"},
        "action": {
            "operation": "read",
            "protocol": "postgres",
            "target": "t",
            "threat_matches": [],
        },
        "context": {
            "taints": [],
            "first_seen": False,
            "posture": {"restrictions": [], "isolated": False},
        },
        "risk": {"score": 3, "tier": "low"},
    }
    out = cli("policy", "eval", "--input", "-", stdin=json.dumps(doc))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["effect"] == "allow"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--input", "-"], "{not json", "-:1:2: invalid JSON"),
        (["--input", "-"], "[1, 2]", "must be a JSON object"),
        (["--action", "-"], '{"agent": {"id": "a"}, "protocol": "x"}', "operation must be"),
        (
            ["--action", "-"],
            '{"agent": {"id": "a"}, "protocol": "x", "operation": "fly", "target": "t"}',
            "operation must be one of",
        ),
        (["--input", "/nonexistent.json"], None, "cannot read"),
    ],
)
def test_policy_eval_bad_input_is_a_clear_error(
    args: list[str], stdin: str | None, message: str
) -> None:
    out = cli("policy", "eval", *args, stdin=stdin)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_init_writes_the_embedded_defaults_commented_and_will_not_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file `init` writes runs exactly what `up` runs with no file, agent demo and its
    token (the one in .interlock/demo.token) included; the audit log is where the
    banner says (`sqlite:///audit.db` inside data_dir)."""
    from interlock.config import Config
    from interlock.runtime import with_demo_agent

    target = tmp_path / "interlock.toml"
    assert cli("init", cwd=tmp_path).returncode == 0
    assert "# " in target.read_text()
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    monkeypatch.chdir(tmp_path)
    written = load_config(target)
    assert written == with_demo_agent(Config.embedded())
    assert written.audit.store == "sqlite:///audit.db"
    token = (tmp_path / ".interlock" / "demo.token").read_text().strip()
    assert written.agents["demo"].token == token
    again = cli("init", cwd=tmp_path)
    assert again.returncode == 2
    assert "exists" in again.stderr
    other = tmp_path / "second.toml"
    assert cli("init", str(other), cwd=tmp_path).returncode == 0
    assert load_config(other).agents["demo"].token == token, "the token file is reused"


def test_subcommand_help_says_what_the_arguments_are() -> None:
    assert "./interlock.toml" in cli("up", "--help").stdout
    assert "demo.token" in cli("init", "--help").stdout
    assert "decision id" in cli("audit", "show", "--help").stdout


def test_bad_config_is_one_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text("[agents.r]\nroles = 'x'\n")
    out = cli("up", "-c", str(cfg))
    assert out.returncode == 2
    assert (
        out.stderr.strip() == f"config error: {cfg}: agents.r.roles: Input should be a valid list"
    )


def test_console_script_is_installed() -> None:
    exe = shutil.which("interlock", path=os.path.dirname(sys.executable))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "policy" in out.stdout
