"""Real services for the test suite (see interlock.testing.services), failing the run with
install instructions when one is missing; nothing is skipped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from interlock.testing.openbao import OpenBao
from interlock.testing.openbao import openbao_server as _openbao_server
from interlock.testing.services import (
    MissingService,
    OidcProvider,
    Postgres,
    Redis,
    Sshd,
    free_port,
    listening,
)
from interlock.testing.services import dns_server as _dns_server
from interlock.testing.services import envoy_server as _envoy_server
from interlock.testing.services import nginx_server as _nginx_server
from interlock.testing.services import oidc_provider as _oidc_provider
from interlock.testing.services import postgres_server as _postgres_server
from interlock.testing.services import redis_server as _redis_server
from interlock.testing.services import sshd_server as _sshd_server

__all__ = [
    "OidcProvider",
    "OpenBao",
    "Postgres",
    "Redis",
    "Sshd",
    "dns_server",
    "envoy_server",
    "free_port",
    "listening",
    "nginx_server",
    "oidc_provider",
    "openbao_server",
    "postgres_server",
    "redis_server",
    "sshd_server",
]


@contextlib.contextmanager
def _required[T](service: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Run `service`; a missing one fails the test run with how to install it."""
    try:
        with service as value:
            yield value
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


def dns_server(records: dict[str, list[str]]) -> contextlib.AbstractContextManager[int]:
    return _required(_dns_server(records))


def postgres_server() -> contextlib.AbstractContextManager[Postgres]:
    return _required(_postgres_server())


def envoy_server(
    app_port: int, authz_port: int, failure_mode_allow: bool = False
) -> contextlib.AbstractContextManager[int]:
    return _required(_envoy_server(app_port, authz_port, failure_mode_allow=failure_mode_allow))


def nginx_server(app_port: int, authz_port: int) -> contextlib.AbstractContextManager[int]:
    return _required(_nginx_server(app_port, authz_port))


def sshd_server(extra: str = "") -> contextlib.AbstractContextManager[Sshd]:
    return _required(_sshd_server(extra))


def oidc_provider(
    accounts: tuple[str, ...] = ("alice",),
) -> contextlib.AbstractContextManager[OidcProvider]:
    return _required(_oidc_provider(accounts))


def openbao_server() -> contextlib.AbstractContextManager[OpenBao]:
    return _required(_openbao_server())


def redis_server(port: int | None = None) -> contextlib.AbstractContextManager[Redis]:
    return _required(_redis_server(port))
