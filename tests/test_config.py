"""The configuration file: DESIGN.md's keys, and errors that name the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from interlock.config import Config, load_config
from interlock.errors import ConfigError

DESIGN_EXAMPLE = """
[policy]
bundle = "policies/"
[audit]
store = "sqlite:///var/lib/interlock/audit.db"
[state]
store = "memory"
[agents.reporter]
token = "a-long-enough-token-value"
roles = ["analyst"]
owner = "alice@example.com"
ssh_keys = ["ssh-ed25519 AAAA..."]
[http]
listen = "127.0.0.1:8080"
[postgres]
listen = "127.0.0.1:6432"
upstream = "postgresql://app:secret@127.0.0.1:5432/app"
[ssh]
listen = "127.0.0.1:2222"
[extauthz]
grpc_listen = "127.0.0.1:9191"
http_listen = "127.0.0.1:9192"
[admin]
listen = "127.0.0.1:9180"
[classification.postgres]
"public.payroll.salary" = ["financial", "restricted"]
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "interlock.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_the_keys_design_md_promises_are_accepted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    assert cfg.policy.bundle == Path("policies/")
    assert cfg.agents["reporter"].roles == ["analyst"]
    assert (
        cfg.agents["reporter"].token_digest == hashlib.sha256(b"a-long-enough-token-value").digest()
    )
    assert cfg.postgres is not None
    assert cfg.postgres.listen == "127.0.0.1:6432"
    assert cfg.classification.postgres["public.payroll.salary"] == ["financial", "restricted"]


def test_absent_sections_leave_components_off(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[admin]\n"))
    assert cfg.http is None
    assert cfg.postgres is None
    assert cfg.ssh is None
    assert cfg.extauthz is None
    assert cfg.admin is not None


def test_embedded_defaults_run_the_admin_endpoint() -> None:
    cfg = Config.embedded()
    assert cfg.admin is not None
    assert cfg.admin.listen == "127.0.0.1:9180"
    assert cfg.policy.bundle is None
    assert cfg.state.store == "memory"


def test_the_shipped_example_is_valid() -> None:
    example = Path(__file__).parent.parent / "interlock" / "config_example.toml"
    assert load_config(example).admin is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[agents.r]\nroles = 'analyst'\n",
            r"interlock.toml: agents.r.roles: Input should be a valid list",
        ),
        ("[polcy]\n", r"interlock.toml: polcy: unknown key"),
        ("[policy]\ncache_size = 'big'\n", r"policy.cache_size: Input should be a valid integer"),
        ("[policy]\ncache_sise = 1\n", r"policy.cache_sise: unknown key"),
        ("[admin]\nlisten = 'localhost'\n", r"admin.listen: .*expected host:port"),
        ("[admin]\nlisten = 'example.com:80'\n", r"admin.listen: .*IP address"),
        ("[http]\nlisten = '127.0.0.1:99999'\n", r"http.listen"),
        ("[agents.r]\ntoken = 'short'\n", r"agents.r.token: String should have at least 16"),
        ("[agents.r]\ntoken_sha256 = 'zz'\n", r"agents.r.token_sha256"),
        (
            "[agents.r]\ntoken = '0123456789abcdef'\ntoken_sha256 = '" + "0" * 64 + "'\n",
            r"agents.r: .*not both",
        ),
        ("[agents.'has space']\n", r"agents.has space"),
        ("[state]\nstore = 'etcd://x'\n", r"state.store: .*redis"),
        ("[classification.postgres]\n'payroll.salary' = ['x']\n", r"schema.table.column"),
        ("[audit]\nfail_open_max_tier = 'medium-ish'\n", r"audit.fail_open_max_tier"),
        ("[identity.jwt]\nissuer = 'i'\naudience = 'a'\n", r"identity.jwt: .*exactly one"),
        ("[approvals.web.users]\nalice = 'plaintext'\n", r"approvals.web.users: .*hash-password"),
        ("[approvals.webhook]\nurl = 'http://x'\nsecret = 'short'\n", r"webhook.secret"),
        ("[approvals.webhook]\nurl = 'ftp://x'\nsecret = '" + "s" * 16 + "'\n", r"webhook.url"),
        ("[approvals.ciba]\nissuer = 'https://i'\n", r"approvals.ciba.client_id: Field required"),
        ("[approvals]\ngrant_uses = 0\n", r"approvals.grant_uses"),
        (
            "[approvals.ciba]\nissuer = 'http://idp.example.com'\nclient_id = 'c'\n"
            "client_secret = 's'\n",
            r"approvals.ciba.issuer: .*use https",
        ),
        ("[credentials]\naddress = 'http://127.0.0.1:8200'\n", r"credentials: .*exactly one"),
        (
            "[credentials]\naddress = 'http://vault.example.com'\ntoken = 't'\n",
            r"credentials.address: .*use https",
        ),
        (
            "[credentials]\naddress = 'https://v:8200'\ntoken = 't'\n[[credentials.inject]]\n"
            "host = 'api.example.com'\nsecret = 'secret/saas'\n",
            r"credentials.inject.0.secret",
        ),
        (
            "[credentials]\naddress = 'https://v:8200'\ntoken = 't'\n[[credentials.inject]]\n"
            "host = 'a'\nsecret = 'secret/saas#k'\ntemplate = 'Bearer'\n",
            r"credentials.inject.0.template",
        ),
        (
            "[credentials]\naddress = 'https://v:8200'\napprole_role_id = 'r'\n",
            r"approle_secret_id_file",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_malformed_toml_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 2"):
        load_config(write(tmp_path, "[admin]\nlisten = \n"))


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(write(tmp_path, b"[admin]\nlisten = '\xff'\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_an_ssh_target_needs_a_key_or_vault_signed_certificates(tmp_path: Path) -> None:
    from interlock.config import SshConfig, SshTarget
    from interlock.runtime import build

    target = SshTarget(host="10.0.0.5", user="deploy", known_hosts=tmp_path / "known_hosts")
    config = Config(data_dir=tmp_path / "data", ssh=SshConfig(targets={"web1": target}))
    with pytest.raises(ConfigError, match=r"ssh.targets.web1: set key, or \[credentials.ssh\]"):
        build(config)
