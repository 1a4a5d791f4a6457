"""Real services for the test suite (see interlock.testing.services), failing the run with
install instructions when one is missing; nothing is skipped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from interlock.testing.services import MissingService, OidcProvider, Postgres, Sshd, free_port
from interlock.testing.services import dns_server as _dns_server
from interlock.testing.services import envoy_server as _envoy_server
from interlock.testing.services import nginx_server as _nginx_server
from interlock.testing.services import oidc_provider as _oidc_provider
from interlock.testing.services import postgres_server as _postgres_server
from interlock.testing.services import sshd_server as _sshd_server

__all__ = [
    "OidcProvider",
    "Postgres",
    "Sshd",
    "dns_server",
    "envoy_server",
    "free_port",
    "nginx_server",
    "oidc_provider",
    "postgres_server",
    "sshd_server",
]


@contextlib.contextmanager
def dns_server(records: dict[str, list[str]]) -> Iterator[int]:
    try:
        with _dns_server(records) as port:
            yield port
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    try:
        with _postgres_server() as pg:
            yield pg
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def envoy_server(app_port: int, authz_port: int) -> Iterator[int]:
    try:
        with _envoy_server(app_port, authz_port) as port:
            yield port
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def nginx_server(app_port: int, authz_port: int) -> Iterator[int]:
    try:
        with _nginx_server(app_port, authz_port) as port:
            yield port
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def sshd_server(extra: str = "") -> Iterator[Sshd]:
    try:
        with _sshd_server(extra) as sshd:
            yield sshd
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)


@contextlib.contextmanager
def oidc_provider(accounts: tuple[str, ...] = ("alice",)) -> Iterator[OidcProvider]:
    try:
        with _oidc_provider(accounts) as op:
            yield op
    except MissingService as exc:
        pytest.fail(str(exc), pytrace=False)
