"""compose/: no container engine runs here, so what can be checked is checked: the
compose file's structure and mounts, that interlock.toml loads as `interlock up` loads it,
that Envoy accepts envoy.yaml with the compose values (real `envoy --mode validate`), and
that the pieces agree with each other (ports, services, the --only split)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from interlock.cli import only
from interlock.config import load_config

COMPOSE = Path(__file__).resolve().parents[1] / "compose"
GENERATED = ("certs", "secrets")
"""Made by scripts/compose-certs on the deploying machine, never committed."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return doc


def test_the_services_a_team_deploys_are_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"interlock-a", "interlock-b", "envoy", "app", "redis", "postgres", "openbao"} <= set(
        services
    )
    for name in ("interlock-a", "interlock-b"):
        assert services[name]["build"]["dockerfile"] == "compose/Dockerfile"
        assert services[name]["command"][:2] == ["interlock", "up"]


def test_every_mounted_file_exists_or_is_generated(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("./"):
                continue  # a named volume
            path = source.removeprefix("./")
            if path.startswith(GENERATED):
                continue
            assert (COMPOSE / path).exists(), f"{name} mounts missing {source}"
    script = (COMPOSE.parent / "scripts" / "compose-certs").read_text()
    for made in ("certs/ca.pem", "certs/openbao.pem", "certs/openbao-key.pem", "postgres-password"):
        assert made.split("/")[-1] in script


def test_the_interlock_config_loads_and_is_the_scaled_out_shape() -> None:
    config = load_config(COMPOSE / "interlock.toml")
    assert config.state.store.startswith("redis://redis:")
    assert config.audit.store.startswith("postgresql://")
    assert config.credentials is not None
    assert config.credentials.address.startswith("https://")
    assert config.extauthz is not None
    split = only(config, "extauthz,admin")
    assert (split.postgres, split.http, split.ssh) == (None, None, None)


def test_envoy_accepts_its_config_with_the_compose_values(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    envoy = compose["services"]["envoy"]
    values = envoy["environment"]
    template = (COMPOSE / "envoy.yaml").read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)\}", template)) == set(values)
    config = load_config(COMPOSE / "interlock.toml")
    assert config.extauthz is not None
    assert values["AUTHZ_PORT"] == config.extauthz.grpc_listen.rpartition(":")[2]
    assert values["AUTHZ_HOST"] in compose["services"]
    assert "extauthz" in compose["services"][values["AUTHZ_HOST"]]["command"][-1]
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(re.sub(r"\$\{([A-Z_]+)\}", lambda m: str(values[m.group(1)]), template))
    binary = str(Path(sys.executable).parent / "envoy")
    done = subprocess.run(
        [binary, "--mode", "validate", "-c", str(rendered)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK" in done.stdout + done.stderr


def test_the_image_has_a_python_interlock_can_run_on() -> None:
    base = (COMPOSE / "Dockerfile").read_text().split("FROM ", 1)[1].split()[0]
    version = re.match(r"python:(\d+)\.(\d+)", base)
    assert version is not None, base
    assert (int(version[1]), int(version[2])) >= (3, 12)
