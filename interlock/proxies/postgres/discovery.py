"""What the proxy reads from the database it fronts: labels, their columns' OIDs, functions.

Labels come from the configuration and, with `discover_labels`, from
`COMMENT ON COLUMN ... IS 'classification: x, y'`.

Views inherit labels: every column of a view that reads a labelled column (found through
the view's rewrite rule in pg_depend) carries the union of those labels. That is coarser
than per-column lineage, and errs towards masking too much rather than too little.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from interlock.classify.sql import Routine
from interlock.classify.sqlfunctions import (
    CURSOR_FUNCTIONS,
    SQL_TEXT_ARGUMENT,
    TABLE_ARGUMENT,
    VALUE_RELATIONS,
    WHOLE_DATABASE_FUNCTIONS,
)

PREFIX = re.compile(r"^\s*classification\s*:\s*(.+)$", re.I | re.S)

COLUMNS = """
SELECT n.nspname AS schema, c.relname AS rel, a.attname AS col, d.description AS text
FROM pg_description d
JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
WHERE d.objsubid > 0 AND d.description ~* '^\\s*classification\\s*:'
"""
VIEWS = """
SELECT DISTINCT vn.nspname AS vschema, v.relname AS view, va.attname AS vcol,
       tn.nspname AS tschema, t.relname AS tab, ta.attname AS tcol
FROM pg_depend dep
JOIN pg_rewrite r ON dep.classid = 'pg_rewrite'::regclass AND dep.objid = r.oid
JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum > 0 AND NOT va.attisdropped
JOIN pg_class t ON dep.refclassid = 'pg_class'::regclass AND t.oid = dep.refobjid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum > 0 AND NOT ta.attisdropped
  AND (ta.attnum = dep.refobjsubid OR r.ev_action::text ~ '{VAR :varno [0-9]+ :varattno 0 ')
WHERE t.oid <> v.oid
"""
"""A view column reads the columns its rule depends on. A whole-row reference
(`row_to_json(p)`, `p::text`, `SELECT p FROM payroll p`) records no column dependency
(only the relation's, and not even that when another column is named), so a rule holding
a whole-row Var reads every column of every relation it depends on."""


_OPAQUE_FUNCTIONS = (
    frozenset(SQL_TEXT_ARGUMENT) | TABLE_ARGUMENT | WHOLE_DATABASE_FUNCTIONS | CURSOR_FUNCTIONS
)
"""PostgreSQL's functions whose result may hold any table's values."""


def parse_comment(text: str) -> frozenset[str]:
    """Labels in a `classification: a, b` comment (empty if it is not one)."""
    m = PREFIX.match(text or "")
    if not m:
        return frozenset()
    return frozenset(x.strip().lower() for x in re.split(r"[,\s]+", m.group(1)) if x.strip())


ORIGINS = """
SELECT lower(n.nspname) AS schema, lower(c.relname) AS rel, lower(a.attname) AS col,
       c.oid::int8 AS oid, a.attnum AS attnum
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND lower(n.nspname) || '.' || lower(c.relname) || '.' || lower(a.attname) = ANY($1::text[])
"""
ROUTINES = """
SELECT n.nspname AS schema, p.proname AS name, p.provolatile AS volatility,
       p.prosecdef AS secdef, l.lanname AS language, p.prokind AS kind
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
"""


VIEW_CALLS = """
SELECT DISTINCT vn.nspname AS vschema, v.relname AS view, va.attname AS vcol
FROM pg_depend dep
JOIN pg_rewrite r ON dep.classid = 'pg_rewrite'::regclass AND dep.objid = r.oid
JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum > 0 AND NOT va.attisdropped
LEFT JOIN pg_proc p ON dep.refclassid = 'pg_proc'::regclass AND p.oid = dep.refobjid
LEFT JOIN pg_namespace pn ON pn.oid = p.pronamespace
LEFT JOIN pg_class s ON dep.refclassid = 'pg_class'::regclass AND s.oid = dep.refobjid
LEFT JOIN pg_namespace sn ON sn.oid = s.relnamespace
WHERE (p.oid IS NOT NULL AND pn.nspname NOT IN ('pg_catalog', 'information_schema'))
   OR (s.oid IS NOT NULL AND sn.nspname = 'pg_catalog' AND s.relname = ANY($2::text[]))
UNION
SELECT vn.nspname, v.relname, va.attname
FROM pg_rewrite r
JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm')
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum > 0 AND NOT va.attisdropped
WHERE EXISTS (
    SELECT 1 FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY($1::text[])
      AND r.ev_action::text ~ (':funcid ' || p.oid::text || ' ')
)
"""
"""Views that may read anything: they call a function of the database's own, or one of
PostgreSQL's that runs SQL text or reads tables by name (`table_to_xml('payroll', ...)`,
`query_to_xml(...)`), or read the statistics that hold sample values of every column.
PostgreSQL's own functions are pinned (pg_depend has no row for them), so those calls
are found in the rule's tree."""
RELATIONS = """
SELECT c.oid::int8 AS oid FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
"""
"""Relations whose unlabelled columns are clean. Not the system's: pg_stats and its kind
hold values of every column of every table."""
INHERITS = """
SELECT pn.nspname AS pschema, p.relname AS parent, cn.nspname AS cschema, c.relname AS child,
       a.attname AS col
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attinhcount > 0
"""
"""Partitions and inheritance children hold their parent's rows, under the same column
names: reading `payroll_2024` reads `payroll`."""
GENERATED = """
SELECT DISTINCT n.nspname AS schema, c.relname AS rel, a.attname AS col, sa.attname AS src
FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum AND a.attgenerated <> ''
JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
  AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = d.adrelid
  AND dep.refobjsubid > 0
JOIN pg_attribute sa ON sa.attrelid = d.adrelid AND sa.attnum = dep.refobjsubid
JOIN pg_class c ON c.oid = d.adrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
"""
"""A generated column (`GENERATED ALWAYS AS (upper(name)) STORED`) holds what it is
computed from."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the proxy knows of one database: labels, where they live, its functions."""

    labels: dict[str, frozenset[str]]
    origins: dict[tuple[int, int], frozenset[str]]
    """(table OID, column number) -> labels: how RowDescription names a result column's
    source. Names are compared case-insensitively, so a quoted "SSN" and ssn both carry
    the label of either (masking more, never less)."""
    relations: frozenset[int]
    """OIDs of every table and view read here: a column of one of them that is not in
    `origins` carries no label."""
    routines: dict[str, tuple[Routine, ...]]


async def snapshot(
    login: Mapping[str, object],
    tls: ssl.SSLContext | None,
    configured: Mapping[str, frozenset[str]],
    discover_labels: bool,
) -> Snapshot:
    """Read one database's catalog with `login` (asyncpg.connect keywords: host, port,
    user, password, database), as that login sees it."""
    labels = dict(configured)
    conn = await asyncpg.connect(**login, ssl=tls if tls is not None else False)
    try:
        if discover_labels:
            for row in await conn.fetch(COLUMNS):
                key = f"{row['schema']}.{row['rel']}.{row['col']}".lower()
                labels[key] = labels.get(key, frozenset()) | parse_comment(row["text"])
        await _inherit(conn, labels)
        origins: dict[tuple[int, int], frozenset[str]] = {}
        for row in await conn.fetch(ORIGINS, sorted(labels)):
            key = f"{row['schema']}.{row['rel']}.{row['col']}"
            origins[(row["oid"], row["attnum"])] = labels[key]
        relations = frozenset(row["oid"] for row in await conn.fetch(RELATIONS))
        routines: dict[str, list[Routine]] = {}
        for row in await conn.fetch(ROUTINES):
            routines.setdefault(row["name"], []).append(
                Routine(
                    row["schema"],
                    row["name"],
                    row["volatility"],
                    row["secdef"],
                    row["language"],
                    row["kind"],
                )
            )
    finally:
        await conn.close()
    return Snapshot(labels, origins, relations, {k: tuple(v) for k, v in routines.items()})


async def _inherit(conn: asyncpg.Connection, labels: dict[str, frozenset[str]]) -> None:
    """Views (and materialized views) inherit: every column of a view carries the labels
    of every labelled column it reads, through views of views until nothing changes. A
    view that calls a function of the database's own (which may read anything), or one
    of PostgreSQL's that reads tables by name or SQL text, carries every label there is.
    Partitions and inheritance children carry their parents' labels, generated columns
    those of the columns they are computed from."""
    edges: dict[str, set[str]] = {}
    columns: dict[str, set[str]] = {}
    sources_of: dict[str, set[str]] = {}
    """Table column -> the columns it holds values of (a parent's, a generated one's)."""
    for row in await conn.fetch(VIEWS):
        view = f"{row['vschema']}.{row['view']}".lower()
        columns.setdefault(view, set()).add(f"{view}.{row['vcol']}".lower())
        edges.setdefault(view, set()).add(f"{row['tschema']}.{row['tab']}.{row['tcol']}".lower())
    everything = frozenset().union(*labels.values()) if labels else frozenset()
    opaque: set[str] = set()
    for row in await conn.fetch(VIEW_CALLS, sorted(_OPAQUE_FUNCTIONS), sorted(VALUE_RELATIONS)):
        view = f"{row['vschema']}.{row['view']}".lower()
        opaque.add(view)
        columns.setdefault(view, set()).add(f"{view}.{row['vcol']}".lower())
        edges.setdefault(view, set())
    for row in await conn.fetch(INHERITS):
        sources_of.setdefault(f"{row['cschema']}.{row['child']}.{row['col']}".lower(), set()).add(
            f"{row['pschema']}.{row['parent']}.{row['col']}".lower()
        )
    for row in await conn.fetch(GENERATED):
        table = f"{row['schema']}.{row['rel']}".lower()
        sources_of.setdefault(f"{table}.{row['col']}".lower(), set()).add(
            f"{table}.{row['src']}".lower()
        )
    changed = True
    while changed:
        changed = False
        for col, srcs in sources_of.items():
            found = frozenset().union(*(labels.get(src, frozenset()) for src in srcs))
            if found - labels.get(col, frozenset()):
                labels[col] = labels.get(col, frozenset()) | found
                changed = True
        for view, sources in edges.items():
            found = frozenset().union(*(labels.get(src, frozenset()) for src in sources))
            if view in opaque:
                found |= everything
            for col in columns[view]:
                merged = labels.get(col, frozenset()) | found
                if merged != labels.get(col, frozenset()):
                    labels[col] = merged
                    changed = True
