"""Property: a cached classification is the one a fresh classifier gives the same text."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.classify.sql import Catalog, SqlClassification, SqlClassifier, SqlStatement
from interlock.classify.sqlsplit import _NUMBER, CODE, SplitError, regions, shape
from interlock.core.model import freeze
from interlock.proxies.postgres.copyformat import copy_format

TABLES = {"payroll": "hr.payroll", "x·1": "x·2", "\u0661": "\u0662", "t1": "t2", '"T1"': '"T2"'}
"""Pairs of names that differ only in a digit: PostgreSQL reads `x·1` and U+0661 (an
Arabic-Indic digit) as names."""
CATALOGS = [
    Catalog.from_config({"public.payroll.name": ["pii"], "public.x·1.ssn": ["pii"]}),
    Catalog.from_config(
        {
            "hr.payroll.salary": ["financial"],
            "public.\u0661.ssn": ["restricted"],
            "public.t1.secret": ["pii"],
        }
    ),
    Catalog.from_config({"public.t2.name": ["pii"], "public.x·2.ssn": ["restricted"]}),
]
TEMPLATES = [
    "select {c} from {t} where id = {n}",
    "select *, {n} from {t} limit {n}",
    "SELECT {c}, {n}e{n} FROM {t} AS a{n} WHERE {c} > -{n}.{n};",
    "select '{n}', {c} /* {n} */ from {t} -- {n}\n where id in ({n}, $1)",
    "insert into {t} ({c}) select {c} from {t} where id = {n}",
    "update {t} set {c} = {n} where id = {n}",
    "set search_path to hr, public; select {c} from {t} where id = {n}",
    "set search_path = '$user', x{n}",
    "copy (select {c} from {t} where id = {n}) to stdout (format csv, header {n})",
    "copy {t} ({c}) to stdout with csv header",
    "declare c{n} cursor for select {c} from {t} where id = {n}",
    "fetch forward {n} from c1",
    "fetch -{n} in c1",
    "select 0x{n}, 1_{n}, {n}_0, x.{n} from {t}",
    "prepare p{n} as select {c} from {t} offset {n}",
    "select set_config('search_path', 'hr', false), {c} from {t} where id = {n}",
    "select $a$ {n} $a${n} from {t}",
    "select {c} from {t} where id = {n}; delete from {t} where id = {n}",
]
NUMBERS = ["0", "1", "42", "007", "1.5", "3e2", "1.e5", ".5", "99999999999999999999", "\u0661"]


@st.composite
def statements(draw: st.DrawFn) -> list[tuple[str, int]]:
    """A statement and its sibling: the same template, other numbers, and a table whose
    name differs only in a digit (or the same one), against one catalog."""
    template = draw(st.sampled_from(TEMPLATES))
    table, sibling = draw(st.sampled_from(list(TABLES.items())))
    column = draw(st.sampled_from(["name", "salary", "ssn", "secret", "id"]))
    catalog = draw(st.integers(0, len(CATALOGS) - 1))
    out = []
    for t in (table, draw(st.sampled_from([table, sibling]))):
        sql = template
        while "{n}" in sql:  # each number drawn on its own
            sql = sql.replace("{n}", draw(st.sampled_from(NUMBERS)), 1)
        out.append((sql.format(t=t, c=column), catalog))
    return out


def _without_text(c: SqlClassification) -> list[SqlStatement]:
    return [replace(s, text="") for s in c.statements]


@settings(max_examples=150, deadline=None)
@given(st.lists(statements(), min_size=1, max_size=6), st.booleans())
def test_a_cached_classification_equals_a_fresh_one(
    pairs: list[list[tuple[str, int]]], assign: bool
) -> None:
    """Across catalog changes (a refresh through `use_catalog`, or the attribute set
    directly) and SET search_path among the statements: everything but the text is a
    fresh classification's, the text is of the same shape, and what is read from it
    (COPY's row format) reads the same."""
    cached = SqlClassifier(CATALOGS[0], cache_size=8)
    for sql, which in [s for pair in pairs for s in pair]:
        catalog = CATALOGS[which]
        if assign:
            cached.catalog = catalog
        else:
            cached.use_catalog(catalog)
        got = cached.classify(sql)
        fresh = SqlClassifier(catalog, cache_size=0).classify(sql)
        assert _without_text(got) == _without_text(fresh), sql
        assert [shape(s.text) for s in got.statements] == [shape(s.text) for s in fresh.statements]
        for a, b in zip(got.statements, fresh.statements, strict=True):
            assert copy_format(a.text) == copy_format(b.text)
        assert got.operation == fresh.operation
        assert got.labels == fresh.labels
        assert got.frozen_details() == freeze(fresh.details())


def test_names_that_differ_in_a_non_ascii_digit_do_not_share_an_entry() -> None:
    c = SqlClassifier(CATALOGS[1])
    assert not c.classify("select * from \u0662").labels
    assert c.classify("select * from \u0661").labels == {"restricted"}
    c.use_catalog(CATALOGS[0])
    assert not c.classify("select ssn from x·2").labels
    assert c.classify("select ssn from x·1").labels == {"pii"}


def _shape_by_regions(sql: str) -> str:
    try:
        parts = [
            _NUMBER.sub("0", sql[a:b]) if kind == CODE else sql[a:b] for kind, a, b in regions(sql)
        ]
    except SplitError:
        return sql
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("sel 1.5e+9x$;'\"-/*\n\u0661·_()")), max_size=40))
def test_shape_of_plain_text_is_the_shape_by_regions(sql: str) -> None:
    """Text with no quote, dollar or comment is one code region: the short way is exact."""
    assert shape(sql) == _shape_by_regions(sql)


@pytest.mark.parametrize("assign", [False, True])
def test_a_new_catalog_empties_the_cache(assign: bool) -> None:
    """The same statement after a catalog change (a refresh, or the attribute set) is
    classified against the new catalog, not answered from the old one's entry."""
    sql = "select name from payroll where id = 1"
    classifier = SqlClassifier(CATALOGS[0])
    assert classifier.classify(sql).labels == {"pii"}
    if assign:
        classifier.catalog = CATALOGS[1]
    else:
        classifier.use_catalog(CATALOGS[1])
    assert classifier.classify(sql).labels == SqlClassifier(CATALOGS[1]).classify(sql).labels
    assert classifier.classify(sql).labels == frozenset()
