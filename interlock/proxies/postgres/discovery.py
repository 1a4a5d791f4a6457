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
JOIN pg_class t ON t.oid = dep.refobjid AND dep.refobjsubid > 0
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = dep.refobjsubid
WHERE t.oid <> v.oid
"""


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
JOIN pg_proc p ON dep.refclassid = 'pg_proc'::regclass AND p.oid = dep.refobjid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema')
"""
RELATIONS = """
SELECT c.oid::int8 AS oid FROM pg_class c WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
"""


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
    view that calls a function of the database's own (which may read anything) carries
    every label there is."""
    edges: dict[str, set[str]] = {}
    columns: dict[str, set[str]] = {}
    for row in await conn.fetch(VIEWS):
        view = f"{row['vschema']}.{row['view']}".lower()
        columns.setdefault(view, set()).add(f"{view}.{row['vcol']}".lower())
        edges.setdefault(view, set()).add(f"{row['tschema']}.{row['tab']}.{row['tcol']}".lower())
    everything = frozenset().union(*labels.values()) if labels else frozenset()
    opaque: set[str] = set()
    for row in await conn.fetch(VIEW_CALLS):
        view = f"{row['vschema']}.{row['view']}".lower()
        opaque.add(view)
        columns.setdefault(view, set()).add(f"{view}.{row['vcol']}".lower())
        edges.setdefault(view, set())
    changed = True
    while changed:
        changed = False
        for view, sources in edges.items():
            found = frozenset().union(*(labels.get(src, frozenset()) for src in sources))
            if view in opaque:
                found |= everything
            for col in columns[view]:
                merged = labels.get(col, frozenset()) | found
                if merged != labels.get(col, frozenset()):
                    labels[col] = merged
                    changed = True
