"""Differential property test against the real server: respellings of forbidden
statements and of reads of labelled columns are either refused by the proxy, or what the
client receives holds no labelled value and the server shows no forbidden effect.

Bounded in the suite; `pytest --differential-examples N` runs it longer.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import asyncpg
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.proxies.postgres.conftest import Proxied
from tests.services import Postgres

pytestmark = pytest.mark.integration
# Statements are generated text on purpose (respellings of SQL).
# ruff: noqa: S608

SECRETS = ("ann", "bob")
HOSTNAME = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""


def _examples(config: pytest.Config) -> int:
    return int(config.getoption("--differential-examples"))


# --- spellings ------------------------------------------------------------------------


def _u_escape(name: str, escape: str) -> str:
    """`U&"..."` with every other character written as a Unicode escape."""
    body = "".join(f"{escape}{ord(c):04x}" if i % 2 == 0 else c for i, c in enumerate(name))
    tail = f" UESCAPE '{escape}'" if escape != "\\" else ""
    return f'U&"{body}"{tail}'


def ident(name: str) -> st.SearchStrategy[str]:
    """Ways to write an identifier that PostgreSQL resolves to `name` (lower case)."""
    return st.one_of(
        st.just(name),
        st.just(name.upper()),
        st.just(f'"{name}"'),
        st.just("".join(c.upper() if i % 2 else c for i, c in enumerate(name))),
        st.sampled_from(["\\", "!", "#", "*"]).map(lambda e: _u_escape(name, e)),
    )


gap = st.sampled_from([" ", "  ", "\n", " /* x */ ", " /* a /* nested */ b */ ", " -- c\n"])


@st.composite
def labelled_read(draw: st.DrawFn) -> str:
    column = draw(ident("name"))
    table = draw(ident("payroll"))
    g = draw(gap)
    wrap = draw(
        st.sampled_from(
            [
                "{c}",
                "upper({c})",
                "{c} || ''",
                "{c}::text",
                "coalesce({c}, 'z')",
                "(select {c})",
                "row({c})::text",
                "array[{c}]::text",
                "json_build_object('k', {c})::text",
                "format('%s', {c})",
                "lower(left({c}, 10))",
                "string_agg({c}, ',')",
            ]
        )
    )
    expr = wrap.format(c=column)
    shape = draw(st.integers(0, 7))
    if shape == 0:
        return f"select{g}{expr}{g}from{g}{table}"
    if shape == 1:
        return f"select {expr.replace(column, 'p.' + column)} from {table} p"
    if shape == 2:
        return f"select {wrap.format(c='x')} from {table} as t(i, x)"
    if shape == 3:
        return f"select {expr} from (select * from {table}) s"
    if shape == 4:
        return f"with w as (select {column} from {table}) select {expr} from w"
    if shape == 5:
        op = draw(st.sampled_from(["union", "union all", "intersect", "except"]))
        return f"select {expr} from {table} {op} select 'q'"
    if shape == 6:
        return f"select s.v from {table} p, lateral (select {expr} as v) s"
    return f"select * from {table} where {column} is not null"


@st.composite
def forbidden(draw: st.DrawFn, marker_dir: str) -> tuple[str, Path | None]:
    """A statement that reads a server file or writes one; and the file it would make."""
    fn = draw(
        st.one_of(
            ident("pg_read_file"),
            ident("pg_read_file").map(lambda f: f"pg_catalog.{f}"),
            ident("pg_read_binary_file"),
            ident("pg_stat_file"),
        )
    )
    marker = Path(marker_dir) / f"m{draw(st.integers(0, 10**9))}"
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return f"select {fn}('/etc/hostname')", None
    if kind == 1:
        return f"select * from (select {fn}('/etc/hostname')::text as x) s", None
    if kind == 2:
        inner = f"select to_tsvector({fn}('/etc/hostname')::text)"
        return f"select * from ts_stat('{inner}')", None
    if kind == 3:
        copy = draw(ident("copy"))
        return f"{copy} (select 1) to '{marker}'", marker
    return f"COPY payroll (name) TO '{marker}' (FORMAT csv)", marker


# --- the properties ----------------------------------------------------------------------


@pytest.fixture
def marker_dir() -> str:
    path = tempfile.mkdtemp(prefix="interlock-canary-")
    os.chmod(path, 0o777)  # noqa: S103 (the server runs as another user)
    return path


def _settings(config: pytest.Config) -> settings:
    return settings(
        max_examples=_examples(config),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


async def test_labelled_reads_never_return_labelled_values(
    proxied: Proxied, request: pytest.FixtureRequest
) -> None:
    """psycopg in a thread (text and binary results), the proxy on this loop."""

    def run() -> None:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:

            @_settings(request.config)
            @given(labelled_read(), st.booleans())
            def check(sql: str, binary: bool) -> None:
                try:
                    rows = conn.cursor(binary=binary).execute(sql).fetchall()
                except psycopg.errors.InsufficientPrivilege:
                    return
                except psycopg.Error as exc:
                    # The server refused a spelling itself: fine, unless it quotes data.
                    refusal = str(exc)
                    rows = []
                else:
                    refusal = ""
                shown = repr(rows) + refusal
                assert not any(s in shown for s in SECRETS), (sql, shown)

            check()

    await asyncio.to_thread(run)


async def test_forbidden_statements_are_refused_and_leave_no_trace(
    proxied: Proxied, request: pytest.FixtureRequest, marker_dir: str, postgres: Postgres
) -> None:
    """Also from the server's own statement log: nothing undecided arrived there."""
    owner = await asyncpg.connect(proxied.proxy.config.upstream)
    await owner.execute(f"ALTER DATABASE \"{proxied.database}\" SET log_statement = 'all'")
    await owner.close()

    def run() -> None:
        with psycopg.connect(proxied.dsn(), autocommit=True) as conn:

            @_settings(request.config)
            @given(forbidden(marker_dir))
            def check(case: tuple[str, Path | None]) -> None:
                sql, marker = case
                refusal: Exception | None = None
                got: list[object] = []
                try:
                    got = list(conn.execute(sql).fetchall())
                except psycopg.Error as exc:
                    refusal = exc
                if marker is not None:
                    assert not marker.exists(), f"{sql} wrote {marker}"
                assert f"statement: {sql}" not in postgres.log_text(), f"{sql} reached the server"
                assert not HOSTNAME or HOSTNAME not in repr(got), (sql, got)
                # Every spelling resolves to the real function or statement: the proxy,
                # not the server, must be the one that says no.
                assert isinstance(refusal, psycopg.errors.InsufficientPrivilege), (sql, refusal)
                assert "interlock" in str(refusal), (sql, refusal)

            check()

    await asyncio.to_thread(run)
    # The log is live: the replacements the proxy sent in place of each denial are in it.
    assert "interlock_denied_" in postgres.log_text()
